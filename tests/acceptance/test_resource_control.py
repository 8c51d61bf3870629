"""Pause/resume, per-type concurrency and rate limits, cooperative cancel, progress, unique
jobs: PostgreSQL + Redis with real worker and maintainer processes."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select

from db.engine import engine_for, read
from db.models import Job
from db.settings import get_settings
from tasks import api
from tasks.errors import InvalidArgument, UnknownQueue
from tasks.transport.broker import make_huey, storage_of
from tests.acceptance.conftest import Processes, wait_for


def status_of(job_id: uuid.UUID) -> str:
    return api.get_job(job_id)["status"]


def count(**where: str) -> int:
    stmt = select(func.count()).select_from(Job)
    for column, value in where.items():
        stmt = stmt.where(getattr(Job, column) == value)
    with read(engine_for(get_settings().ledger_url)) as conn:
        return conn.execute(stmt).scalar_one()


@pytest.fixture
def frozen_queue(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A queue no job type names, declared by QUEUE_QUEUES (for this process and the worker
    and maintainer processes: ask for it before ``processes``)."""
    monkeypatch.setenv("QUEUE_QUEUES", "frozen")
    settings_env["QUEUE_QUEUES"] = "frozen"
    get_settings.cache_clear()
    return "frozen"


def test_paused_queue_dispatches_nothing_until_resumed(
    frozen_queue: str, processes: Processes
) -> None:
    api.pause_queue("frozen", by="test", reason="incident")
    processes.maintainer()
    processes.worker("--concurrency", "4", "--queues", "frozen,default")
    held = [api.submit_job("test.record", {"tag": f"held{i}"}, queue="frozen") for i in range(5)]
    flowing = [api.submit_job("test.record", {"tag": f"ok{i}"}) for i in range(5)]
    wait_for(lambda: all(status_of(j) == "completed" for j in flowing), 20, "the other queue")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # sampled for 5 s: nothing of the paused queue moves
        assert {status_of(j) for j in held} == {"queued"}
        time.sleep(0.2)
    controls = {c["queue_name"]: c for c in api.get_queue_controls()}
    assert controls["frozen"]["paused"] and controls["frozen"]["reason"] == "incident"
    api.resume_queue("frozen")
    wait_for(lambda: all(status_of(j) == "completed" for j in held), 20, "the resumed queue")


def test_pause_takes_back_dispatched_jobs(processes: Processes) -> None:
    processes.maintainer()
    ids = api.submit_jobs([{"type": "test.record", "data": {}} for _ in range(10)])
    wait_for(lambda: all(status_of(j) == "dispatched" for j in ids), 20, "dispatch")
    assert api.pause_queue("default") == 10
    processes.worker("--concurrency", "4")  # pops the stale messages: they claim nothing
    wait_for(lambda: count(queue="default", status="dispatched") == 0, 10, "nothing dispatched")
    # the worker popped every stale message (the queue in Redis is empty) and started none
    storage = storage_of(make_huey(get_settings()))
    wait_for(lambda: storage.size_of("default") == 0, 10, "the stale messages to be popped")
    assert count(queue="default", status="queued") == 10
    api.resume_queue("default")
    wait_for(lambda: count(queue="default", status="completed") == 10, 20, "jobs run on resume")


def test_concurrency_limit_holds_across_slots(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "8")
    limited = api.submit_jobs(
        [{"type": "test.limited", "data": {"seconds": 0.3}} for _ in range(10)]
    )
    others = api.submit_jobs([{"type": "test.record", "data": {"seconds": 0.3}} for _ in range(6)])
    peak = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = count(type="test.limited", status="running")
        peak = max(peak, running)
        assert running <= 2
        if count(type="test.limited", status="completed") == len(limited):
            break
        time.sleep(0.02)
    assert peak == 2
    assert all(status_of(j) == "completed" for j in limited + others)


def test_rate_limit_caps_starts_per_minute(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "8")
    api.submit_jobs([{"type": "test.rated", "data": {}} for _ in range(80)])
    wait_for(lambda: count(type="test.rated", status="completed") >= 60, 20, "60 starts")
    time.sleep(3)  # the next start may come only a minute after the first ones
    assert count(type="test.rated", status="completed") == 60
    assert count(type="test.rated", status="queued") == 20


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_cooperative_cancel_and_progress(processes: Processes, kind: str) -> None:
    """Progress and cancel reach the ledger from a handler thread and from a job process
    (over its pipe to the worker)."""
    processes.maintainer()
    processes.worker("--concurrency", "2", "--kind", kind)
    job_id = api.submit_job("test.cooperative", {})
    wait_for(lambda: (api.get_job(job_id)["progress"] or 0) > 0, 20, "progress")
    assert api.get_job(job_id)["progress_message"].startswith("step ")
    assert api.cancel_job(job_id) == "cancel_requested"
    asked = time.monotonic()
    wait_for(lambda: status_of(job_id) == "cancelled", 5, "the job to stop")
    assert time.monotonic() - asked < 2.0
    job = api.get_job(job_id)
    assert job["errors"] == [] and job["cancel_requested_at"] is not None


def test_handler_that_ignores_cancel_completes(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    job_id = api.submit_job("test.stubborn", {})
    wait_for(lambda: status_of(job_id) == "running", 20, "the job to start")
    assert api.cancel_job(job_id) == "cancel_requested"
    wait_for(lambda: status_of(job_id) == "completed", 10, "the job to finish")
    job = api.get_job(job_id)
    assert job["result"] == "finished anyway" and job["cancel_requested_at"] is not None


def test_progress_updates_arrive_in_order(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    job_id = api.submit_job("test.progress", {})
    seen: list[float] = []
    deadline = time.monotonic() + 20
    while status_of(job_id) != "completed" and time.monotonic() < deadline:
        value = api.get_job(job_id)["progress"]
        if value is not None and (not seen or value != seen[-1]):
            seen.append(value)
        time.sleep(0.05)
    assert status_of(job_id) == "completed"
    assert seen == sorted(seen) and len(seen) >= 2  # throttled, but in order
    final = api.get_job(job_id)
    assert (final["progress"], final["progress_message"]) == (1.0, "step 10")


def test_unique_jobs_within_their_window(use_ledger: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    first = api.submit_job("test.unique", {"course": "c1"})
    assert api.submit_job("test.unique", {"course": "c1"}) == first
    assert api.submit_job("test.unique", {"course": "c2"}) != first
    bulk = api.submit_jobs([{"type": "test.unique", "data": {"course": "c3"}}] * 3)
    assert len(set(bulk)) == 1
    assert count(type="test.unique") == 3
    try:
        api.pause_queue("bad name")
    except InvalidArgument:
        pass
    else:
        raise AssertionError("a bad queue name must be refused")
    with pytest.raises(UnknownQueue):
        api.pause_queue("never_declared")


def test_job_cancelled_raised_without_a_request_is_a_failure(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "1")
    job_id = api.submit_job("test.raises_cancelled", {})
    wait_for(lambda: status_of(job_id) == "failed", 20, "the job to fail")
    assert "JobCancelled" in api.get_job(job_id)["last_error"]
