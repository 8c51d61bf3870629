"""The state machine on SQLite and PostgreSQL: every transition guarded, fenced, counted."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from db.engine import HeldConnections, engine_for, write
from db.ledger import admin, attempts, core, maintainer, producer
from db.models import Job
from db.queries import get_job


def new(**kw: object) -> producer.NewJob:
    base = {"type": "demo.echo", "queue": "default", "priority": 5, "data": {}, "max_attempts": 2}
    return producer.NewJob(**{**base, **kw})  # type: ignore[arg-type]


def status(url: str, job_id: uuid.UUID) -> str:
    with write(engine_for(url)) as conn:
        found = get_job(conn, job_id)
    assert found is not None
    return found["status"]


def run_to_running(url: str, **kw: object) -> attempts.Claimed:
    with write(engine_for(url)) as conn:
        job_id = producer.insert_jobs(conn, [new(**kw)])[0]
        rows = maintainer.dispatch(conn, "default", 10)
        assert [r.id for r in rows] == [job_id]
        claimed = attempts.claim(conn, job_id, None, rows[0].lease)
    assert claimed is not None
    return claimed


def test_dispatch_is_best_first(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        low = producer.insert_jobs(conn, [new(priority=1)])[0]
        high = producer.insert_jobs(conn, [new(priority=9)])[0]
        mid = producer.insert_jobs(conn, [new(priority=5)])[0]
        first = maintainer.dispatch(conn, "default", 2)
        rest = maintainer.dispatch(conn, "default", 2)
    assert [r.id for r in first] == [high, mid]
    assert [r.id for r in rest] == [low]


def test_claim_is_exactly_once(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert attempts.claim(conn, claimed.id, None, claimed.lease) is None  # duplicate message
        assert attempts.claim(conn, claimed.id, None) is None  # running already
    assert (claimed.attempt, claimed.lease) == (1, 1)


def test_completion_is_fenced_on_the_attempt(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert not attempts.complete(conn, claimed.id, claimed.lease + 1, {"r": 1})
        assert attempts.complete(conn, claimed.id, claimed.lease, {"r": 1})
        assert not attempts.complete(conn, claimed.id, claimed.lease, {"r": 2})
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
        assert attempts.fail_attempt(conn, claimed.id, 1, entry, 0) == "retrying"
        assert maintainer.stage_due(conn) == 1
        (again,) = maintainer.dispatch(conn, "default", 10)
        second = attempts.claim(conn, claimed.id, None, again.lease)
        assert second is not None and (second.attempt, second.lease) == (2, 2)
        assert attempts.fail_attempt(conn, claimed.id, 1, {"error": "zombie"}, 0) is None
        assert attempts.fail_attempt(conn, claimed.id, 2, {"attempt": 2, "error": "E2"}, 0) == (
            "failed"
        )
        row = get_job(conn, claimed.id)
    assert row is not None
    assert [e["error"] for e in row["errors"]] == ["E1", "E2"]
    assert row["last_error"] == "E2"


def test_retry_delay_keeps_the_job_waiting(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        attempts.fail_attempt(conn, claimed.id, 1, {"error": "E"}, 60)
        assert maintainer.stage_due(conn) == 0
    assert status(ledger_url, claimed.id) == "retrying"


def test_cancel_before_start_and_request_while_running(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        waiting = producer.insert_jobs(conn, [new()])[0]
        assert admin.cancel(conn, waiting) == "cancelled"
        with pytest.raises(core.TransitionError, match="it is cancelled"):
            admin.cancel(conn, waiting)
        assert maintainer.dispatch(conn, "default", 10) == []  # nothing to send
        assert attempts.claim(conn, waiting, None, 1) is None  # a message already sent is dropped
        assert attempts.leased(conn, waiting, 1) is None
    running = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        assert admin.cancel(conn, running.id) == "cancel_requested"
        assert attempts.fail_attempt(conn, running.id, 1, {"error": "x"}, 0) == "cancelled"


def test_retry_only_from_failed_or_cancelled(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url, max_attempts=1)
    with write(engine_for(ledger_url)) as conn:
        with pytest.raises(core.TransitionError, match="it is running"):
            admin.retry(conn, claimed.id)
        attempts.fail_attempt(conn, claimed.id, 1, {"error": "x"}, 0)
        admin.retry(conn, claimed.id)
        again = maintainer.dispatch(conn, "default", 10)
        assert [r.id for r in again] == [claimed.id]
        again_claimed = attempts.claim(conn, claimed.id, None, again[0].lease)
        assert again_claimed is not None
        assert (again_claimed.attempt, again_claimed.max_attempts) == (2, 2)
        with pytest.raises(core.TransitionError, match="does not exist"):
            admin.retry(conn, uuid.uuid4())


def test_idempotency_key_returns_the_live_job(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        first = producer.insert_jobs(conn, [new(idempotency_key="k1")])[0]
        again = producer.insert_jobs(conn, [new(idempotency_key="k1"), new()])
        assert again[0] == first and again[1] != first
        admin.cancel(conn, first)
        after = producer.insert_jobs(conn, [new(idempotency_key="k1")])[0]
    assert after != first  # unique while not terminal


def test_tick_key_is_unique_forever(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        first = producer.insert_jobs(conn, [new(tick_key="t@1")])[0]
        admin.cancel(conn, first)
        assert producer.insert_jobs(conn, [new(tick_key="t@1")]) == [first]


def test_future_jobs_are_scheduled_until_due(ledger_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=1)
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new(scheduled_at=later)])[0]
        assert maintainer.stage_due(conn) == 0
        assert maintainer.dispatch(conn, "default", 10) == []
        past = datetime.now(UTC) - timedelta(seconds=1)  # SQLite's clock has ms resolution
        conn.execute(update(Job).where(Job.id == job_id).values(scheduled_at=past))
        assert maintainer.stage_due(conn) == 1
    assert status(ledger_url, job_id) == "queued"


def test_lost_dispatch_is_requeued_but_not_a_started_one(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        a, b = producer.insert_jobs(conn, [new(), new()])
        maintainer.dispatch(conn, "default", 10)
        attempts.claim(conn, b, None, 1)
        assert set(maintainer.dispatched_before(conn, -5).get("default", [])) == {(a, 1)}
        assert maintainer.requeue_lost(conn, [(a, 1), (b, 1)]) == 1
        row_a = get_job(conn, a)
        assert row_a is not None and (row_a["status"], row_a["attempt"]) == ("queued", 0)
        row_b = get_job(conn, b)
        assert row_b is not None and row_b["status"] == "running"
        # sent again under a new lease: the lost message, should it come back, runs nothing
        (again,) = maintainer.dispatch(conn, "default", 10)
        assert (again.id, again.lease) == (a, 2)
        assert attempts.leased(conn, a, 1) is None
        assert not attempts.complete(conn, a, 1, {"zombie": True})
        current = attempts.leased(conn, a, 2)
    assert current is not None and current.attempt == 1  # the lost attempt was not counted


def test_a_message_runs_only_its_own_lease(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new()])[0]
        (row,) = maintainer.dispatch(conn, "default", 10)
        assert attempts.leased(conn, job_id, row.lease + 1) is None  # forged or stale
        leased = attempts.leased(conn, job_id, row.lease)
        assert leased is not None and (leased.attempt, leased.lease) == (1, 1)
        row_now = get_job(conn, job_id)
        assert row_now is not None and row_now["status"] == "dispatched"  # a read writes nothing
        assert admin.cancel(conn, job_id) == "cancelled"
        assert attempts.leased(conn, job_id, row.lease) is None


def test_the_outcome_may_be_the_first_write_of_an_attempt(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        short, long = producer.insert_jobs(conn, [new(), new()])
        rows = {r.id: r for r in maintainer.dispatch(conn, "default", 10)}
        # a short job: started and completed by its one outcome write
        outcome = attempts.Outcome(short, 1, {"r": 1}, worker_id=wid, started_ago=0.5)
        assert attempts.complete_many(conn, [outcome]) == {short}
        # a long one: its start record first
        assert attempts.start_many(conn, [(long, 1, wid, 0.25), (short, 1, wid, 0.5)]) == 1
        assert attempts.start_many(conn, [(long, 1, wid, 0.25)]) == 0  # recorded once
        done, running = get_job(conn, short), get_job(conn, long)
    assert rows.keys() == {short, long}
    assert done is not None and (done["status"], done["worker_id"]) == ("completed", wid)
    took = (done["finished_at"] - done["started_at"]).total_seconds()
    assert 0.45 < took < 0.55, took
    assert running is not None and (running["status"], running["worker_id"]) == ("running", wid)


def test_a_failure_may_be_the_first_write_of_an_attempt(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new(max_attempts=1)])[0]
        maintainer.dispatch(conn, "default", 10)
        entry = {"attempt": 1, "error": "E"}
        assert attempts.fail_attempt(conn, job_id, 1, entry, 0, worker_id=wid, started_ago=1) == (
            "failed"
        )
        assert attempts.start_many(conn, [(job_id, 1, wid, 1.0)]) == 0  # a late start record
        row = get_job(conn, job_id)
    assert row is not None and (row["status"], row["worker_id"]) == ("failed", wid)
    assert row["started_at"] is not None and row["started_at"] < row["finished_at"]


def test_running_job_of_unknown_worker_is_orphaned(ledger_url: str) -> None:
    claimed = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        orphans = maintainer.orphaned_running(conn, 10, 10)
    assert [o.id for o in orphans] == [claimed.id]
    assert "worker lost" in orphans[0].reason


def test_hand_back_gives_the_attempt_back(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new()])[0]
        attempts.claim(conn, job_id, wid)
        assert attempts.hand_back_all(conn, wid) == 1
        row = get_job(conn, job_id)
    assert row is not None and (row["status"], row["attempt"]) == ("queued", 0)


def test_hand_back_of_a_job_asked_to_cancel_cancels_it(ledger_url: str) -> None:
    wid = uuid.uuid4()
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new()])[0]
        attempts.claim(conn, job_id, wid)
        assert admin.cancel(conn, job_id) == "cancel_requested"
        assert attempts.hand_back_all(conn, wid) == 1
        row = get_job(conn, job_id)
    assert row is not None and (row["status"], row["attempt"]) == ("cancelled", 1)
    assert row["finished_at"] is not None


def test_unique_window_ignores_failed_and_cancelled(ledger_url: str) -> None:
    with write(engine_for(ledger_url)) as conn:
        job_id = producer.insert_jobs(conn, [new(unique_key="u1")])[0]
        assert maintainer.find_unique(conn, "u1", 60) == job_id
        admin.cancel(conn, job_id)
        assert maintainer.find_unique(conn, "u1", 60) is None


def test_complete_many_is_fenced_per_attempt(ledger_url: str) -> None:
    a = run_to_running(ledger_url)
    b = run_to_running(ledger_url)
    with write(engine_for(ledger_url)) as conn:
        done = attempts.complete_many(
            conn,
            [attempts.Outcome(a.id, a.lease, {"r": "a"}), attempts.Outcome(b.id, 99, {"r": "b"})],
        )
        assert done == {a.id}
        row_a, row_b = get_job(conn, a.id), get_job(conn, b.id)
    assert row_a is not None and row_a["status"] == "completed" and row_a["result"] == {"r": "a"}
    assert row_b is not None and row_b["status"] == "running"


def test_the_prepared_group_commits_are_fenced_like_the_others(pg_url: str) -> None:
    """What a worker's attempt writer runs on PostgreSQL: ``start_many_dbapi`` and
    ``complete_many_dbapi`` on its held connection record and fence exactly as the
    SQLAlchemy forms (the tests above)."""
    engine = engine_for(pg_url)
    wid, queue = uuid.uuid4(), f"prepared-{uuid.uuid4().hex[:8]}"  # pg_url is shared
    with write(engine) as conn:
        ids = producer.insert_jobs(conn, [new(queue=queue) for _ in range(3)])
        rows = {r.id: r for r in maintainer.dispatch(conn, queue, 10)}
    a, b, long = (rows[i] for i in ids)
    held, dialect = HeldConnections(engine), engine.dialect
    outcomes = [
        attempts.Outcome(a.id, a.lease, {"r": "a"}, worker_id=wid, started_ago=0.5),
        attempts.Outcome(b.id, b.lease + 1, {"r": "b"}, worker_id=wid, started_ago=0.5),
    ]
    assert held.run(lambda c: attempts.complete_many_dbapi(c, dialect, outcomes)) == {a.id}
    starts = [(long.id, long.lease, wid, 0.25), (a.id, a.lease, wid, 0.5)]
    assert held.run(lambda c: attempts.start_many_dbapi(c, dialect, starts)) == 1
    assert held.run(lambda c: attempts.start_many_dbapi(c, dialect, starts[:1])) == 0
    with write(engine) as conn:
        row_a, row_b, row_long = (get_job(conn, j.id) for j in (a, b, long))
    assert row_a is not None and (row_a["status"], row_a["result"]) == ("completed", {"r": "a"})
    took = (row_a["finished_at"] - row_a["started_at"]).total_seconds()
    assert 0.45 < took < 0.55, took
    assert row_b is not None and row_b["status"] == "dispatched"  # another lease: fenced
    assert row_long is not None and (row_long["status"], row_long["worker_id"]) == ("running", wid)
