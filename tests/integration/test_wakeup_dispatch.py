"""A wake-up on PostgreSQL: the insert NOTIFY names the queues that got due jobs, and the
dispatcher sends each of those with one autocommit statement (real PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.engine import engine_for, write
from db.notify import Listener
from db.queries import get_job
from db.settings import get_settings
from tasks import api
from tasks.maintenance.dispatcher import Dispatcher, DispatcherConfig
from tasks.transport.broker import decode_job_message, make_huey, storage_of


@pytest.fixture(autouse=True)
def _queued_path(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about jobs that wait in the ledger: no direct dispatch."""
    monkeypatch.setenv("QUEUE_DIRECT_DISPATCH", "false")
    get_settings.cache_clear()


def test_the_insert_notification_names_the_queues_of_due_jobs(pg_redis: dict[str, str]) -> None:
    listener = Listener(get_settings().ledger_url)
    try:
        assert listener.wait(0.01) is None  # connected and listening, nothing yet
        api.submit_job("demo.echo", {})
        assert listener.wait(5) == {"default"}
        api.submit_jobs(
            [
                {"type": "demo.echo", "data": {}, "queue": "reports"},
                {"type": "demo.echo", "data": {}},
                {"type": "demo.echo", "data": {}, "queue": "notifications", "schedule": 3600},
            ]
        )
        assert listener.wait(5) == {"default", "reports"}  # COPY fires the trigger too
        api.schedule_job("demo.echo", {}, timedelta(hours=1))
        api.submit_job("demo.echo", {}, queue="reports")
        # the scheduled insert woke nobody: the next notification is the submit's
        assert listener.wait(5) == {"reports"}
    finally:
        listener.close()


def test_a_wake_up_dispatches_the_named_queues_in_one_statement_each(
    pg_redis: dict[str, str],
) -> None:
    settings = get_settings()
    engine = engine_for(settings.ledger_url)
    storage = storage_of(make_huey(settings, ["default", "reports"]))
    dispatcher = Dispatcher(engine, storage, DispatcherConfig(window=2))
    low = api.submit_job("demo.echo", {}, 1)
    high = api.submit_job("demo.echo", {}, 9)
    third = api.submit_job("demo.echo", {}, 5)
    report = api.submit_job("demo.echo", {}, queue="reports")
    api.pause_queue("reports", reason="test")

    assert dispatcher.run_queues({"default", "reports"}) == 2  # the window, best first
    assert dispatcher.backlog
    sent = [decode_job_message(m)[:2] for m in storage.window("default")]
    assert [job_id for job_id, _ in sent] == [high, third]
    with write(engine) as conn:
        rows = {i: get_job(conn, i) for i in (low, high, third, report)}
    assert (rows[high]["status"], rows[high]["attempt"]) == ("dispatched", 1)
    assert sent[0][1] == rows[high]["lease"] == 1
    assert rows[low]["status"] == rows[report]["status"] == "queued"  # window full; paused
    assert storage.window("reports") == []
