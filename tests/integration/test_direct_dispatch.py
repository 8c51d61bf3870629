"""Direct dispatch against real PostgreSQL and Redis: a due job submitted to an idle queue is
inserted ``dispatched`` and its producer pushes the message; every other case keeps the
usual path (``queued``, then the dispatcher); a push that fails loses nothing."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from db.engine import write
from db.ledger import producer
from db.notify import Listener
from db.queries import get_job
from db.settings import get_settings
from tasks import api, registry
from tasks.maintenance.reconciler import Reconciler, ReconcilerConfig
from tasks.transport import direct_dispatch
from tasks.transport.broker import QueueStorage, decode_job_message, make_huey, storage_of
from tests.processes import Processes, wait_for


@pytest.fixture
def storage(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> QueueStorage:
    """The Redis windows of the queues ``default`` and ``reports``."""
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    return storage_of(make_huey(get_settings(), ["default", "reports"]))


def _job(job_id: uuid.UUID) -> dict[str, Any]:
    with write(api.engine()) as conn:
        row = get_job(conn, job_id)
    assert row is not None
    return row


def test_a_job_for_an_idle_queue_is_sent_by_its_producer(storage: QueueStorage) -> None:
    listener = Listener(get_settings().ledger_url)
    try:
        assert listener.wait(0.01) is None  # listening
        job_id = api.submit_job("demo.echo", {"n": 1}, 7)  # no maintainer runs
        row = _job(job_id)
        assert (row["status"], row["attempt"], row["lease"]) == ("dispatched", 1, 1)
        assert row["dispatched_at"] is not None
        [message] = storage.window("default")
        assert decode_job_message(message) == (job_id, 1, None)
        assert listener.wait(0.2) is None  # nothing for the dispatcher to do: no wake-up
    finally:
        listener.close()


def test_a_job_behind_a_backlog_waits_its_turn(storage: QueueStorage) -> None:
    older = producer.NewJob(type="demo.echo", queue="default", priority=9, data={}, max_attempts=3)
    with write(api.engine()) as conn:  # a job already waits in the ledger (window was full)
        producer.insert_jobs(conn, [older])
    newer = api.submit_job("demo.echo", {}, 1)
    assert _job(newer)["status"] == _job(older.id)["status"] == "queued"
    assert storage.window("default") == []  # the dispatcher sends both, best first


def test_paused_queues_limited_types_and_keyed_jobs_keep_the_usual_path(
    storage: QueueStorage,
) -> None:
    api.pause_queue("reports", reason="test")
    paused = api.submit_job("demo.echo", {}, queue="reports")
    limited = api.submit_job("test.limited", {"tag": "x"})
    keyed = api.submit_job("demo.echo", {}, idempotency_key="k-1")
    later = api.schedule_job("demo.echo", {}, timedelta(hours=1))
    statuses = [_job(j)["status"] for j in (paused, limited, keyed, later)]
    assert statuses == ["queued", "queued", "queued", "scheduled"]
    assert storage.window("default") == storage.window("reports") == []


def test_a_full_window_stops_direct_dispatch(
    storage: QueueStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DISPATCH_WINDOW", "2")
    get_settings.cache_clear()
    sent = [api.submit_job("demo.echo", {"i": i}) for i in range(3)]
    assert [_job(j)["status"] for j in sent] == ["dispatched", "dispatched", "queued"]
    assert len(storage.window("default")) == 2


def test_direct_dispatch_can_be_switched_off(
    storage: QueueStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DIRECT_DISPATCH", "false")
    get_settings.cache_clear()
    assert _job(api.submit_job("demo.echo", {}))["status"] == "queued"
    assert storage.window("default") == []


def test_a_failed_push_loses_nothing(
    storage: QueueStorage, caplog: pytest.LogCaptureFixture
) -> None:
    engine = api.engine()
    sender = direct_dispatch.DirectDispatch("redis://127.0.0.1:1/0", get_settings().queue_namespace)
    new = api.build_job("demo.echo", {"n": 2})
    with caplog.at_level(logging.WARNING, logger="tasks.transport.direct_dispatch"):
        sender.submit(engine, new, window=200)  # no Redis listens on port 1
    assert "their messages were not sent" in caplog.text
    row = _job(new.id)
    assert (row["status"], row["lease"]) == ("dispatched", 1)  # saved all the same

    reconciler = Reconciler(engine, storage, ReconcilerConfig(grace_seconds=-5))
    reconciler.run_once()
    assert reconciler.run_once() == 1  # two passes miss its message: it goes back in line
    row = _job(new.id)
    assert (row["status"], row["attempt"], row["lease"]) == ("queued", 0, 1)

    # meanwhile the producer submits the usual way instead of paying the timeout each time
    other = api.build_job("demo.echo", {"n": 3})
    sender.submit(engine, other, window=200)
    assert _job(other.id)["status"] == "queued"


def test_a_worker_runs_a_directly_dispatched_job(processes: Processes) -> None:
    processes.worker("--concurrency", "1")  # no maintainer: only the producer's push delivers
    job_id = api.submit_job("demo.echo", {"hello": "direct"})
    wait_for(lambda: api.get_job(job_id)["status"] == "completed", 30, "the job to complete")
    assert api.get_job(job_id)["result"] == {"hello": "direct"}
