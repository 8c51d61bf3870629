"""The state machine on SQLite and PostgreSQL: every transition guarded, fenced, counted."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from db import ledger
from db.engine import engine_for, write
from db.models import Job
from db.queries import get_job


def new(**kw: object) -> ledger.NewJob:
    base = {"type": "demo.echo", "queue": "default", "priority": 5, "data": {}, "max_attempts": 2}
    return ledger.NewJob(**{**base, **kw})  # type: ignore[arg-type]


def status(url: str, job_id: uuid.UUID) -> str:
    with write(engine_for(url)) as conn:
        found = get_job(conn, job_id)
    assert found is not None
    return found["status"]


def run_to_running(url: str, **kw: object) -> ledger.Claimed:
    with write(engine_for(url)) as conn:
        job_id = ledger.insert_jobs(conn, [new(**kw)])[0]
        rows = ledger.dispatch(conn, "default", 10)
        assert [r.id for r in rows] == [job_id]
        claimed = ledger.claim(conn, job_id, None)
    assert claimed is not None
    return claimed


def test_dispatch_is_best_first(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        low = ledger.insert_jobs(conn, [new(priority=1)])[0]
        high = ledger.insert_jobs(conn, [new(priority=9)])[0]
        mid = ledger.insert_jobs(conn, [new(priority=5)])[0]
        first = ledger.dispatch(conn, "default", 2)
        rest = ledger.dispatch(conn, "default", 2)
    assert [r.id for r in first] == [high, mid]
    assert [r.id for r in rest] == [low]


def test_claim_is_exactly_once(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert ledger.claim(conn, claimed.id, None) is None  # duplicate message
    assert claimed.attempt == 1


def test_completion_is_fenced_on_the_attempt(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert not ledger.complete(conn, claimed.id, claimed.attempt + 1, {"r": 1})
        assert ledger.complete(conn, claimed.id, claimed.attempt, {"r": 1})
        assert not ledger.complete(conn, claimed.id, claimed.attempt, {"r": 2})
        row = get_job(conn, claimed.id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["result"] == {"r": 1}
    assert row["completed_at"] is not None and row["finished_at"] is not None


def test_failures_retry_then_fail_with_every_error_kept(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    engine = engine_for(ledger_url)
    with write(engine) as conn:
        entry = {"attempt": 1, "error": "E1"}
        assert ledger.fail_attempt(conn, claimed.id, 1, entry, 0) == "retrying"
        assert ledger.stage_due(conn) == 1
        ledger.dispatch(conn, "default", 10)
        second = ledger.claim(conn, claimed.id, None)
        assert second is not None and second.attempt == 2
        assert ledger.fail_attempt(conn, claimed.id, 1, {"error": "zombie"}, 0) is None
        assert ledger.fail_attempt(conn, claimed.id, 2, {"attempt": 2, "error": "E2"}, 0) == (
            "failed"
        )
        row = get_job(conn, claimed.id)
    assert row is not None
    assert [e["error"] for e in row["errors"]] == ["E1", "E2"]
    assert row["last_error"] == "E2"


def test_retry_delay_keeps_the_job_waiting(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        ledger.fail_attempt(conn, claimed.id, 1, {"error": "E"}, 60)
        assert ledger.stage_due(conn) == 0
    assert status(ledger_url, claimed.id) == "retrying"


def test_cancel_before_start_and_request_while_running(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        waiting = ledger.insert_jobs(conn, [new()])[0]
        assert ledger.cancel(conn, waiting) == "cancelled"
        with pytest.raises(ledger.TransitionError, match="it is cancelled"):
            ledger.cancel(conn, waiting)
        ledger.dispatch(conn, "default", 10)
        assert ledger.claim(conn, waiting, None) is None  # a message already sent is dropped
    running = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert ledger.cancel(conn, running.id) == "cancel_requested"
        assert ledger.fail_attempt(conn, running.id, 1, {"error": "x"}, 0) == "cancelled"


def test_retry_only_from_failed_or_cancelled(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url, max_attempts=1)
    with write(engine_for(ledger_url)) as conn:
        with pytest.raises(ledger.TransitionError, match="it is running"):
            ledger.retry(conn, claimed.id)
        ledger.fail_attempt(conn, claimed.id, 1, {"error": "x"}, 0)
        ledger.retry(conn, claimed.id)
        again = ledger.dispatch(conn, "default", 10)
        assert [r.id for r in again] == [claimed.id]
        again_claimed = ledger.claim(conn, claimed.id, None)
        assert again_claimed is not None
        assert (again_claimed.attempt, again_claimed.max_attempts) == (2, 2)
        with pytest.raises(ledger.TransitionError, match="does not exist"):
            ledger.retry(conn, uuid.uuid4())


def test_idempotency_key_returns_the_live_job(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        first = ledger.insert_jobs(conn, [new(idempotency_key="k1")])[0]
        again = ledger.insert_jobs(conn, [new(idempotency_key="k1"), new()])
        assert again[0] == first and again[1] != first
        ledger.cancel(conn, first)
        after = ledger.insert_jobs(conn, [new(idempotency_key="k1")])[0]
    assert after != first  # unique while not terminal


def test_tick_key_is_unique_forever(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        first = ledger.insert_jobs(conn, [new(tick_key="t@1")])[0]
        ledger.cancel(conn, first)
        assert ledger.insert_jobs(conn, [new(tick_key="t@1")]) == [first]


def test_future_jobs_are_scheduled_until_due(ledger_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=1)
    with write(engine_for(ledger_url)) as conn:
        job_id = ledger.insert_jobs(conn, [new(scheduled_at=later)])[0]
        assert ledger.stage_due(conn) == 0
        assert ledger.dispatch(conn, "default", 10) == []
        past = datetime.now(UTC) - timedelta(seconds=1)  # SQLite's clock has ms resolution
        conn.execute(update(Job).where(Job.id == job_id).values(scheduled_at=past))
        assert ledger.stage_due(conn) == 1
    assert status(ledger_url, job_id) == "queued"


def test_lost_dispatch_is_requeued_but_not_a_claimed_one(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        a, b = ledger.insert_jobs(conn, [new(), new()])
        ledger.dispatch(conn, "default", 10)
        ledger.claim(conn, b, None)
        assert set(ledger.dispatched_before(conn, -5).get("default", [])) == {a}
        assert ledger.requeue_lost(conn, [a, b]) == 1
    assert status(ledger_url, a) == "queued"
    assert status(ledger_url, b) == "running"


def test_running_job_of_unknown_worker_is_orphaned(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        orphans = ledger.orphaned_running(conn, 10, 10)
    assert [o.id for o in orphans] == [claimed.id]
    assert "worker lost" in orphans[0].reason


def test_hand_back_gives_the_attempt_back(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        job_id = ledger.insert_jobs(conn, [new()])[0]
        ledger.claim(conn, job_id, wid)
        assert ledger.hand_back_all(conn, wid) == 1
        row = get_job(conn, job_id)
    assert row is not None and (row["status"], row["attempt"]) == ("queued", 0)


def test_hand_back_of_a_job_asked_to_cancel_cancels_it(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        job_id = ledger.insert_jobs(conn, [new()])[0]
        ledger.claim(conn, job_id, wid)
        assert ledger.cancel(conn, job_id) == "cancel_requested"
        assert ledger.hand_back_all(conn, wid) == 1
        row = get_job(conn, job_id)
    assert row is not None and (row["status"], row["attempt"]) == ("cancelled", 1)
    assert row["finished_at"] is not None


def test_unique_window_ignores_failed_and_cancelled(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        job_id = ledger.insert_jobs(conn, [new(unique_key="u1")])[0]
        assert ledger.find_unique(conn, "u1", 60) == job_id
        ledger.cancel(conn, job_id)
        assert ledger.find_unique(conn, "u1", 60) is None


def test_complete_many_is_fenced_per_attempt(ledger_url: str) -> None:
    a = run_to_running(ledger_url)
    b = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        done = ledger.complete_many(conn, [(a.id, a.attempt, {"r": "a"}), (b.id, 99, {"r": "b"})])
        assert done == {a.id}
        row_a, row_b = get_job(conn, a.id), get_job(conn, b.id)
    assert row_a is not None and row_a["status"] == "completed" and row_a["result"] == {"r": "a"}
    assert row_b is not None and row_b["status"] == "running"
