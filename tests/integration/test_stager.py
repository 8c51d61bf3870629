"""The stager (``tasks/maintenance/stager.py``) against a real ledger, one ``run_once()`` at a
time: ``scheduled`` and ``retrying`` jobs whose time has come become ``queued``, earliest
first and at most ``batch`` per pass; nothing else is touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from db import controls
from db.engine import engine_for, read, transaction, write
from db.ledger import admin, attempts, maintainer, producer
from db.locks import try_xact_lock
from db.models import Job
from db.types import db_now
from tasks.maintenance.stager import Stager, StagerConfig
from tests.conftest import empty_tables
from tests.integration.test_ledger import new, run_to_running, status


def stager(url: str, batch: int = 5000) -> Stager:
    return Stager(engine_for(url), StagerConfig(batch=batch))


def scheduled(url: str, due_in: float, **kw: object) -> uuid.UUID:
    """A ``scheduled`` job due ``due_in`` seconds from now (database clock; may be past)."""
    engine = engine_for(url)
    with write(engine) as conn:
        later = datetime.now(UTC) + timedelta(days=1)
        [job_id] = producer.insert_jobs(conn, [new(scheduled_at=later, **kw)])
        conn.execute(update(Job).where(Job.id == job_id).values(scheduled_at=db_now(due_in)))
    assert status(url, job_id) == "scheduled"
    return job_id


def retrying(url: str, due_in: float) -> uuid.UUID:
    """A job whose first attempt failed and whose next one is due in ``due_in`` seconds."""
    claimed = run_to_running(url, max_attempts=3)
    with write(engine_for(url)) as conn:
        entry = {"attempt": 1, "error": "E"}
        assert attempts.fail_attempt(conn, claimed.id, claimed.lease, entry, 3600) == "retrying"
        conn.execute(update(Job).where(Job.id == claimed.id).values(scheduled_at=db_now(due_in)))
    return claimed.id


def test_due_scheduled_and_retrying_jobs_become_queued_and_not_yet_due_ones_wait(
    ledger_url: str,
) -> None:
    due = [scheduled(ledger_url, -1), retrying(ledger_url, -1)]
    later = [scheduled(ledger_url, 3600), retrying(ledger_url, 3600)]

    assert stager(ledger_url).run_once() == 2

    assert [status(ledger_url, i) for i in due] == ["queued", "queued"]
    assert [status(ledger_url, i) for i in later] == ["scheduled", "retrying"]
    assert stager(ledger_url).run_once() == 0  # a second pass finds nothing more


def test_no_other_status_is_staged(ledger_url: str) -> None:
    """Jobs that are due by ``scheduled_at`` but not waiting for their time stay as they are."""
    engine = engine_for(ledger_url)
    running = run_to_running(ledger_url).id
    cancelled = scheduled(ledger_url, -1)
    with write(engine) as conn:
        assert admin.cancel(conn, cancelled) == "cancelled"
        [queued] = producer.insert_jobs(conn, [new()])
    expected = {running: "running", cancelled: "cancelled", queued: "queued"}

    assert stager(ledger_url).run_once() == 0

    assert {i: status(ledger_url, i) for i in expected} == expected


def test_a_pass_stages_at_most_its_batch_earliest_first(ledger_url: str) -> None:
    # inserted latest-due first, so that neither insert order nor id order is due order
    jobs = [scheduled(ledger_url, -10 - i) for i in range(5)]  # jobs[4] is the earliest
    loop = stager(ledger_url, batch=2)
    staged = []
    for _ in range(4):
        count = loop.run_once()
        staged.append((count, {i for i, j in enumerate(jobs) if status(ledger_url, j) == "queued"}))
    assert staged == [(2, {3, 4}), (2, {1, 2, 3, 4}), (1, {0, 1, 2, 3, 4}), (0, {0, 1, 2, 3, 4})]


def test_a_paused_queue_is_staged_all_the_same(ledger_url: str) -> None:
    """The stager does not read pauses: a due job of a paused queue becomes ``queued`` and
    waits there, because the dispatcher is what skips paused queues."""
    with write(engine_for(ledger_url)) as conn:
        controls.set_paused(conn, "default", True, "test", "holiday")
    job_id = scheduled(ledger_url, -1)
    assert stager(ledger_url).run_once() == 1
    assert status(ledger_url, job_id) == "queued"


def test_a_pass_is_skipped_while_another_stager_holds_the_lock(pg_url: str) -> None:
    """Several maintainers: the pass of the one that does not get the advisory lock does
    nothing (PostgreSQL; on SQLite BEGIN IMMEDIATE serializes the passes instead)."""
    engine = engine_for(pg_url)
    empty_tables(engine)
    job_id = scheduled(pg_url, -1)
    with transaction(engine) as other:
        assert try_xact_lock(other, Stager.name)
        assert stager(pg_url).run_once() == 0
        assert status(pg_url, job_id) == "scheduled"
    assert stager(pg_url).run_once() == 1
    assert status(pg_url, job_id) == "queued"


def test_a_pass_looks_before_it_locks_and_stages_what_is_due(ledger_url: str) -> None:
    """``any_due`` is the idle pass (one autocommit read); it agrees with what a pass
    stages: nothing for a job due later, the job once its time has come."""
    engine = engine_for(ledger_url)
    later = scheduled(ledger_url, due_in=3600)
    with read(engine) as conn:
        assert maintainer.any_due(conn) is False
    assert stager(ledger_url).run_once() == 0 and status(ledger_url, later) == "scheduled"
    now = scheduled(ledger_url, due_in=-1)
    with read(engine) as conn:
        assert maintainer.any_due(conn) is True
    assert stager(ledger_url).run_once() == 1 and status(ledger_url, now) == "queued"
    with read(engine) as conn:
        assert maintainer.any_due(conn) is False
