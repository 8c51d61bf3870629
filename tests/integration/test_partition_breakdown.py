"""The console's breakdown of a queue by partition (``metrics.partitions``), on each ledger
(PostgreSQL and SQLite): what each partition has waiting, running and finished in the last
hour, its oldest wait, the top-N order and the number of partitions in all."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from db.engine import engine_for, transaction
from db.ledger import attempts
from db.models import Job
from db.settings import get_settings
from db.types import db_now
from metrics.partitions import PartitionBreakdown, partition_breakdown, partitioned_queues
from tasks import api, registry

jobs = Job.__table__


@pytest.fixture
def url(use_ledger: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ledger, the test job types loaded, the queues ``reports`` and ``notifications``."""
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    monkeypatch.setenv("QUEUE_QUEUES", "reports,notifications")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    return use_ledger


def submit(school: str, n: int, job_type: str = "test.school", **extra: Any) -> list[uuid.UUID]:
    return api.submit_jobs(
        [{"type": job_type, "data": {"school": school, "tag": str(i)}, **extra} for i in range(n)]
    )


def start(url: str, job_id: uuid.UUID) -> int:
    """A worker starts the job (running); its lease."""
    with transaction(engine_for(url)) as conn:
        claimed = attempts.claim(conn, job_id, None)
    assert claimed is not None
    return claimed.lease


def complete(url: str, job_id: uuid.UUID) -> None:
    lease = start(url, job_id)
    with transaction(engine_for(url)) as conn:
        assert attempts.complete(conn, job_id, lease, None)


def fail(url: str, job_id: uuid.UUID) -> None:
    lease = start(url, job_id)
    entry = {"attempt": 1, "error": "ValueError: boom", "kind": "error"}
    with transaction(engine_for(url)) as conn:
        assert attempts.fail_attempt(conn, job_id, lease, entry, 0) == "failed"


def set_columns(url: str, ids: list[uuid.UUID], **values: Any) -> None:
    with transaction(engine_for(url)) as conn:
        conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(**values))


def by_partition(found: PartitionBreakdown) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["type"], r["partition"]): r for r in found.rows}


def test_each_partition_counts_its_own_jobs(url: str) -> None:
    a = submit("A", 6)
    submit("B", 2)
    c = submit("C", 3, max_attempts=1)
    one = submit("A", 2, job_type="test.school_one")  # same key, another type: its own row
    plain = api.submit_jobs([{"type": "test.record", "data": {}} for _ in range(5)])
    start(url, a[0])  # A: 5 waiting, 1 running
    set_columns(url, [a[1]], status="dispatched")  # dispatched counts as running
    complete(url, c[0])
    fail(url, c[1])
    fail(url, c[2])  # C: nothing waiting, 1 completed and 2 failed in the last hour
    start(url, one[0])
    start(url, plain[0])  # plain jobs (no partition) are never counted
    api.schedule_job("test.school", {"school": "D"}, 3600)  # not due: not waiting
    found = partition_breakdown(engine_for(url), queue="default")
    rows = by_partition(found)
    assert set(rows) == {
        ("test.school", "A"),
        ("test.school", "B"),
        ("test.school", "C"),
        ("test.school_one", "A"),
    }
    assert found.total_partitions == 4
    counts = {
        key: (r["waiting"], r["running"], r["completed_1h"], r["failed_1h"])
        for key, r in rows.items()
    }
    assert counts == {
        ("test.school", "A"): (4, 2, 0, 0),
        ("test.school", "B"): (2, 0, 0, 0),
        ("test.school", "C"): (0, 0, 1, 2),
        ("test.school_one", "A"): (1, 1, 0, 0),
    }
    assert rows[("test.school", "C")]["oldest_wait_seconds"] is None  # nothing queued


def test_most_waiting_first_then_most_running_then_key_and_only_the_top_n(url: str) -> None:
    for school, n in (("north", 2), ("south", 7), ("east", 2), ("west", 4), ("zeta", 2)):
        submit(school, n)
    start(url, submit("east", 1)[0])  # east: 2 waiting, 1 running, before north and zeta
    found = partition_breakdown(engine_for(url), queue="default")
    assert [r["partition"] for r in found.rows] == ["south", "west", "east", "north", "zeta"]
    assert [r["waiting"] for r in found.rows] == [7, 4, 2, 2, 2]
    top = partition_breakdown(engine_for(url), queue="default", limit=3)
    assert [r["partition"] for r in top.rows] == ["south", "west", "east"]
    assert top.total_partitions == 5  # the partitions left out are still counted


def test_the_last_hour_only(url: str) -> None:
    done = submit("A", 3)
    for job_id in done:
        complete(url, job_id)
    with transaction(engine_for(url)) as conn:  # one finished two hours ago
        conn.execute(update(jobs).where(jobs.c.id == done[0]).values(finished_at=db_now(-7200)))
    (row,) = partition_breakdown(engine_for(url), queue="default").rows
    assert (row["partition"], row["completed_1h"], row["waiting"]) == ("A", 2, 0)
    with transaction(engine_for(url)) as conn:
        conn.execute(update(jobs).where(jobs.c.id.in_(done)).values(finished_at=db_now(-7200)))
    found = partition_breakdown(engine_for(url), queue="default")
    assert (found.rows, found.total_partitions) == ([], 0)


def test_oldest_wait_is_the_age_of_the_oldest_queued_job(url: str) -> None:
    a = submit("A", 3)
    b = submit("B", 1)
    with transaction(engine_for(url)) as conn:
        conn.execute(update(jobs).where(jobs.c.id == a[1]).values(scheduled_at=db_now(-600)))
        conn.execute(update(jobs).where(jobs.c.id == a[2]).values(scheduled_at=db_now(-60)))
    start(url, a[1])  # the oldest of A runs: the next oldest is a minute old
    rows = {r["partition"]: r for r in partition_breakdown(engine_for(url), queue="default").rows}
    assert 60 <= rows["A"]["oldest_wait_seconds"] < 120
    assert 0 <= rows["B"]["oldest_wait_seconds"] < 60
    start(url, b[0])
    rows = {r["partition"]: r for r in partition_breakdown(engine_for(url), queue="default").rows}
    assert rows["B"]["oldest_wait_seconds"] is None and rows["B"]["running"] == 1


def test_one_queue_at_a_time_and_which_queues_have_partitions(url: str) -> None:
    submit("A", 2)
    submit("R", 3, queue="reports")
    api.submit_jobs([{"type": "test.record", "data": {}, "queue": "notifications"}])
    reports = partition_breakdown(engine_for(url), queue="reports")
    assert [(r["partition"], r["waiting"]) for r in reports.rows] == [("R", 3)]
    default = partition_breakdown(engine_for(url), queue="default")
    assert [(r["partition"], r["waiting"]) for r in default.rows] == [("A", 2)]
    assert partition_breakdown(engine_for(url), queue="notifications").rows == []
    names = ["default", "notifications", "reports", "empty"]
    assert partitioned_queues(engine_for(url), names) == ["default", "reports"]


def test_a_queue_with_only_running_partitioned_jobs_is_found(url: str) -> None:
    (only,) = submit("A", 1, queue="reports")
    start(url, only)
    assert partitioned_queues(engine_for(url), ["default", "reports"]) == ["reports"]
