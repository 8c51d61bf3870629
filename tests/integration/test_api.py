"""The job API on SQLite and PostgreSQL: bad input raises a specific error and writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from db.engine import engine_for, read
from db.models import Job
from tasks import api
from tasks.errors import (
    InvalidArgument,
    InvalidJobData,
    InvalidPriority,
    InvalidSchedule,
    InvalidTransition,
    JobNotFound,
    PayloadTooLarge,
    UnknownJobType,
)
from tasks.payload import MAX_PAYLOAD_BYTES


def job_count(url: str) -> int:
    with read(engine_for(url)) as conn:
        return conn.execute(select(func.count()).select_from(Job)).scalar_one()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: api.submit_job("no.such.type", {}), UnknownJobType),
        (lambda: api.submit_job("demo.echo", [1, 2]), InvalidJobData),
        (lambda: api.submit_job("demo.echo", "text"), InvalidJobData),
        (lambda: api.submit_job("demo.sleep", {"seconds": "long"}), InvalidJobData),
        (lambda: api.submit_job("demo.sleep", {"seconds": 1, "extra": 1}), InvalidJobData),
        (lambda: api.submit_job("demo.echo", {"s": "x" * MAX_PAYLOAD_BYTES}), PayloadTooLarge),
        (lambda: api.submit_job("demo.echo", {}, 10), InvalidPriority),
        (lambda: api.submit_job("demo.echo", {}, -1), InvalidPriority),
        (lambda: api.submit_job("demo.echo", {}, "5"), InvalidPriority),  # type: ignore[arg-type]
        (lambda: api.submit_job("demo.echo", {}, queue="bad queue"), InvalidArgument),
        (lambda: api.submit_job("demo.echo", {}, max_attempts=0), InvalidArgument),
        (lambda: api.schedule_job("demo.echo", {}, datetime(2030, 1, 1)), InvalidSchedule),
        (lambda: api.schedule_job("demo.echo", {}, -5), InvalidSchedule),
        (
            lambda: api.submit_jobs([{"type": "demo.echo", "data": {}}, {"type": "x", "data": {}}]),
            UnknownJobType,
        ),
        (lambda: api.submit_jobs([{"type": "demo.echo"}]), InvalidArgument),
        (lambda: api.submit_jobs([{"type": "demo.echo", "data": {}, "x": 1}]), InvalidArgument),
    ],
)
def test_bad_input_raises_and_writes_nothing(use_ledger: str, call, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        call()
    assert str(info.value)  # a message a person can read
    assert job_count(use_ledger) == 0


def test_submit_and_read_back(use_ledger: str) -> None:
    job_id = api.submit_job("demo.sleep", {"seconds": 0.5}, 7, queue="reports")
    job = api.get_job(job_id)
    assert (job["type"], job["priority"], job["queue"], job["status"]) == (
        "demo.sleep",
        7,
        "reports",
        "queued",
    )
    assert job["data"] == {"seconds": 0.5}
    assert job["max_attempts"] == 3 and job["attempt"] == 0
    assert api.get_job(str(job_id))["id"] == job_id


def test_bulk_submit_is_one_batch(use_ledger: str) -> None:
    items = [{"type": "demo.echo", "data": {"i": i}, "priority": i % 10} for i in range(50)]
    ids = api.submit_jobs(items)
    assert len(set(ids)) == 50
    assert job_count(use_ledger) == 50
    assert api.get_job(ids[7])["data"] == {"i": 7}
    assert api.get_job(ids[7])["priority"] == 7


def test_bulk_submit_writes_the_same_rows_as_single_submits(use_ledger: str) -> None:
    """Bulk submits of keyless jobs take another path (COPY on PostgreSQL) than single ones."""
    later = datetime.now(UTC) + timedelta(hours=1)
    single = api.submit_job("demo.echo", {"text": "é \\ \t \n", "n": [1, None]}, 3)
    bulk_ids = api.submit_jobs(
        [
            {"type": "demo.echo", "data": {"text": "é \\ \t \n", "n": [1, None]}, "priority": 3},
            {"type": "demo.echo", "data": {}, "schedule": later},
            {"type": "demo.echo", "data": {}, "schedule": timedelta(0)},
        ]
    )
    now_job, later_job, due_job = (api.get_job(i) for i in bulk_ids)
    reference = api.get_job(single)
    columns = ("type", "queue", "priority", "data", "status", "attempt", "lease", "errors")
    assert {c: now_job[c] for c in columns} == {c: reference[c] for c in columns}
    assert now_job["max_attempts"] == reference["max_attempts"]
    assert now_job["scheduled_at"] == now_job["created_at"] == now_job["updated_at"]
    assert later_job["status"] == "scheduled" and later_job["scheduled_at"] == later
    assert due_job["status"] == "queued"


def test_schedule_forms_and_cancel(use_ledger: str) -> None:
    at = api.schedule_job("demo.echo", {}, datetime.now(UTC) + timedelta(hours=1))
    delta = api.schedule_job("demo.echo", {}, timedelta(minutes=5))
    secs = api.schedule_job("demo.echo", {}, 30)
    for job_id in (at, delta, secs):
        assert api.get_job(job_id)["status"] == "scheduled"
    assert api.cancel_job(at) == "cancelled"
    with pytest.raises(InvalidTransition, match="cancelled"):
        api.cancel_job(at)
    with pytest.raises(InvalidTransition, match="scheduled"):
        api.retry_job(delta)
    api.retry_job(at)
    assert api.get_job(at)["status"] == "queued"


def test_unknown_ids(use_ledger: str) -> None:
    for call in (api.get_job, api.cancel_job, api.retry_job):
        with pytest.raises(JobNotFound):
            call(uuid.uuid4())
        with pytest.raises(JobNotFound):
            call("not-a-uuid")


def test_idempotency_key(use_ledger: str) -> None:
    first = api.submit_job("demo.echo", {"a": 1}, idempotency_key="enroll-42")
    assert api.submit_job("demo.echo", {"a": 1}, idempotency_key="enroll-42") == first
    assert job_count(use_ledger) == 1


def test_filters_and_search(use_ledger: str) -> None:
    a = api.submit_job("demo.echo", {"student": "ada@example.org"})
    b = api.submit_job("demo.sleep", {"seconds": 1}, queue="reports")
    api.cancel_job(b)
    assert [j["id"] for j in api.get_jobs(status="cancelled")] == [b]
    assert [j["id"] for j in api.get_jobs(type="demo.echo")] == [a]
    assert [j["id"] for j in api.get_jobs(queue="reports")] == [b]
    assert [j["id"] for j in api.get_jobs(search="ada@example")] == [a]
    assert [j["id"] for j in api.get_jobs(search=str(b))] == [b]
    assert api.get_jobs(search="100%_nothing") == []
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert len(api.get_jobs(since=since, limit=1)) == 1
    assert len(api.get_jobs(since=since, limit=1, offset=1)) == 1
    with pytest.raises(InvalidArgument):
        api.get_jobs(status="nope")
    with pytest.raises(InvalidSchedule):
        api.get_jobs(since=datetime(2026, 1, 1))


def test_queue_stats(use_ledger: str) -> None:
    api.submit_job("demo.echo", {})
    api.schedule_job("demo.echo", {}, 60)
    stats = api.get_queue_stats()
    assert stats["default"]["counts"]["queued"] == 1
    assert stats["default"]["counts"]["scheduled"] == 1
    assert stats["default"]["oldest_waiting_seconds"] is not None
    assert stats["default"]["live_workers"] == 0
