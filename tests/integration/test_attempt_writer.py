"""The attempt writer (``tasks/worker/attempt_writer.py``) against a real ledger: the
worker's group commit of start records and successful outcomes.

What a worker relies on: an outcome handed over is committed (status, result, attempt,
worker, times), outcomes that arrive together share one commit, an outcome whose attempt is
no longer the job's changes nothing and is counted, every written delivery's mark is
released, and ``close()`` returns only once everything handed over before it is committed."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from db.engine import create_ledger_engine, engine_for, read, write
from db.ledger import attempts, core, maintainer, producer
from db.queries import get_job
from tasks.worker.attempt_writer import AttemptWriter
from tests.conftest import empty_tables
from tests.integration.test_ledger import new, run_to_running
from tests.processes import wait_for

Mark = tuple[uuid.UUID, int]


class Harness:
    """Attempt writers on one ledger, each releasing its delivery marks into ``released``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        self.released: list[Mark] = []
        self.writers: list[AttemptWriter] = []

    def writer(self, engine: Engine | None = None) -> AttemptWriter:
        """A writer not started yet: what is handed to it before ``start()`` is taken as one
        batch."""
        w = AttemptWriter(engine or self.engine, release=self.released.extend)
        self.writers.append(w)
        return w

    def dispatched(self, n: int, **kw: Any) -> list[Mark]:
        """``n`` new jobs sent to workers: their (id, lease), attempt 1."""
        with write(self.engine) as conn:
            ids = producer.insert_jobs(conn, [new(**kw) for _ in range(n)])
            rows = maintainer.dispatch(conn, "default", n)
        assert sorted(r.id for r in rows) == sorted(ids)
        return [(r.id, r.lease) for r in rows]

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        with read(self.engine) as conn:
            found = get_job(conn, job_id)
        assert found is not None
        return found

    def statuses(self, marks: list[Mark]) -> list[str]:
        return [self.job(job_id)["status"] for job_id, _ in marks]


def _harness(url: str) -> Iterator[Harness]:
    h = Harness(url)
    yield h
    for w in h.writers:  # a test that failed half-way leaves no thread behind
        if w.is_alive():
            w.close(timeout=10)


@pytest.fixture
def harness(ledger_url: str) -> Iterator[Harness]:
    yield from _harness(ledger_url)


@pytest.fixture
def pg_harness(pg_url: str) -> Iterator[Harness]:
    """The ledger on PostgreSQL only (row locks, jsonb)."""
    empty_tables(engine_for(pg_url))
    yield from _harness(pg_url)


def second_attempt(url: str) -> Mark:
    """A job whose first attempt (lease 1) was rescued and whose second (lease 2) is out."""
    claimed = run_to_running(url, max_attempts=3)
    with write(engine_for(url)) as conn:
        entry = core.error_entry(1, "E1", traceback=None, worker=None, kind="rescued")
        assert attempts.fail_attempt(conn, claimed.id, claimed.lease, entry, 0) == "retrying"
        assert maintainer.stage_due(conn) == 1
        (row,) = maintainer.dispatch(conn, "default", 10)
    assert (row.id, row.lease) == (claimed.id, 2)
    return row.id, row.lease


@contextmanager
def job_commits(writer: AttemptWriter) -> Iterator[Callable[[], int]]:
    """Counts the writer's commits: on PostgreSQL each statement it runs on its held
    connection is one autocommit statement (one commit); on SQLite its statements run in a
    transaction committed at the end."""
    count = 0
    held = writer.held
    if held is not None:
        run = held.run

        def counted(fn: Any) -> Any:
            nonlocal count
            count += 1
            return run(fn)

        held.run = counted  # type: ignore[method-assign]
        try:
            yield lambda: count
        finally:
            held.run = run  # type: ignore[method-assign]
        return
    dirty: set[int] = set()

    def on_execute(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE QUEUE_JOBS"):
            dirty.add(id(conn))

    def on_commit(conn: Connection) -> None:
        nonlocal count
        if id(conn) in dirty:
            dirty.discard(id(conn))
            count += 1

    event.listen(writer.engine, "before_cursor_execute", on_execute)
    event.listen(writer.engine, "commit", on_commit)
    try:
        yield lambda: count
    finally:
        event.remove(writer.engine, "before_cursor_execute", on_execute)
        event.remove(writer.engine, "commit", on_commit)


def test_an_outcome_is_committed_with_its_result_attempt_and_worker(harness: Harness) -> None:
    job_id, lease = second_attempt(harness.url)
    worker_id = uuid.uuid4()
    writer = harness.writer()
    writer.start()
    writer.completed(job_id, lease, worker_id, time.monotonic() - 0.3, {"score": 7})
    wait_for(lambda: harness.job(job_id)["status"] == "completed", 5, "the outcome committed")
    row = harness.job(job_id)
    assert (row["result"], row["attempt"], row["lease"]) == ({"score": 7}, 2, 2)
    assert row["worker_id"] == worker_id
    # the error history of the rescued first attempt is kept
    assert [(e["attempt"], e["error"], e["kind"]) for e in row["errors"]] == [(1, "E1", "rescued")]
    assert row["completed_at"] == row["finished_at"]
    took = (row["finished_at"] - row["started_at"]).total_seconds()
    assert 0.25 < took < 0.5, took  # started_at from the worker's own clock
    assert writer.fenced == 0


def test_outcomes_that_arrive_together_share_one_commit(harness: Harness) -> None:
    marks = harness.dispatched(50)
    worker_id = uuid.uuid4()
    writer = harness.writer()
    for i, (job_id, lease) in enumerate(marks):
        writer.completed(job_id, lease, worker_id, time.monotonic(), {"i": i})
    with job_commits(writer) as commits:
        writer.start()
        wait_for(
            lambda: set(harness.statuses(marks)) == {"completed"}, 5, "the 50 outcomes committed"
        )
        assert commits() == 1
    assert [harness.job(job_id)["result"] for job_id, _ in marks] == [{"i": i} for i in range(50)]
    writer.close()
    assert sorted(harness.released) == sorted(marks)  # every delivery's mark is released


def test_a_short_attempt_costs_one_write_and_a_long_one_is_recorded_running(
    harness: Harness,
) -> None:
    (short, short_lease), (long, long_lease) = harness.dispatched(2)
    worker_id = uuid.uuid4()
    writer = harness.writer()
    began = time.monotonic()
    writer.started(short, short_lease, worker_id, began)
    writer.completed(short, short_lease, worker_id, began, "done")
    with job_commits(writer) as commits:
        writer.start()
        wait_for(lambda: harness.job(short)["status"] == "completed", 5, "the short outcome")
        assert commits() == 1  # its start record was never written on its own
    assert harness.job(short)["worker_id"] == worker_id
    writer.started(long, long_lease, worker_id, time.monotonic())
    # still dispatched until it has run START_DELAY (50 ms), then running under this worker
    row = wait_for(
        lambda: (r := harness.job(long))["status"] == "running" and r, 5, "the start record"
    )
    assert row["worker_id"] == worker_id and row["started_at"] is not None
    writer.completed(long, long_lease, worker_id, time.monotonic(), "long done")
    writer.close()
    assert (harness.job(long)["status"], harness.job(long)["result"]) == ("completed", "long done")


def test_a_fenced_outcome_changes_nothing_and_is_reported(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    rescued, current_lease = second_attempt(harness.url)  # attempt 1 (lease 1) was rescued
    (done, done_lease), (fine, fine_lease) = harness.dispatched(2)
    with write(harness.engine) as conn:
        assert attempts.complete(conn, done, done_lease, "first")
    worker_id = uuid.uuid4()
    writer = harness.writer()
    now = time.monotonic()
    writer.completed(rescued, current_lease - 1, worker_id, now, "zombie")  # a late write
    writer.completed(done, done_lease, worker_id, now, "second")  # a duplicate outcome
    writer.completed(fine, fine_lease, worker_id, now, "fine")
    before = harness.job(rescued)
    with caplog.at_level(logging.WARNING, logger="tasks.worker.attempt_writer"):
        writer.start()
        writer.close()
    assert not writer.is_alive()
    assert harness.job(rescued) == before  # still the second attempt's, untouched
    assert harness.job(rescued)["status"] == "dispatched"
    assert (harness.job(done)["status"], harness.job(done)["result"]) == ("completed", "first")
    assert (harness.job(fine)["status"], harness.job(fine)["result"]) == ("completed", "fine")
    assert writer.fenced == 2
    assert "2 finished attempt(s) were fenced off" in caplog.text
    # the fenced deliveries' marks are released too: the ledger refuses them by itself
    assert sorted(harness.released) == sorted(
        [(rescued, current_lease - 1), (done, done_lease), (fine, fine_lease)]
    )


def _writer_waits_on_a_row_lock(engine: Engine) -> bool:
    with read(engine) as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE '%UPDATE queue_jobs%'"
            )
        ).scalar_one()
    return bool(waiting)


def test_close_commits_what_was_handed_over_while_a_write_was_in_flight(
    pg_harness: Harness,
) -> None:
    """Shutdown: completions and a start record queued behind a write that is still in
    flight are all committed by the time ``close()`` returns (the worker hands back its
    unfinished jobs right after, so a completion written later would be lost work)."""
    h = pg_harness
    (first, first_lease), *rest = h.dispatched(12)
    (long, long_lease), queued = rest[0], rest[1:]
    worker_id = uuid.uuid4()
    writer = h.writer()
    holder = create_ledger_engine(h.url, pool_size=1, max_overflow=0)
    lock = holder.connect()
    try:
        lock.execute(text("SELECT 1 FROM queue_jobs WHERE id = :id FOR UPDATE"), {"id": first})
        writer.start()
        writer.completed(first, first_lease, worker_id, time.monotonic(), "first")
        wait_for(lambda: _writer_waits_on_a_row_lock(h.engine), 5, "the writer blocked")
        # handed over while the writer is stuck in its first write
        writer.started(long, long_lease, worker_id, time.monotonic())
        for i, (job_id, lease) in enumerate(queued):
            writer.completed(job_id, lease, worker_id, time.monotonic(), i)
        close_called = threading.Event()

        def stop() -> None:
            close_called.set()
            writer.close(timeout=20)

        closer = threading.Thread(target=stop)
        closer.start()
        assert close_called.wait(5)
        lock.rollback()  # the write in flight goes through now
        closer.join(20)
        assert not closer.is_alive() and not writer.is_alive()
    finally:
        lock.close()
        holder.dispose()
    # nothing polled: close() has returned, so everything must be in the ledger already
    assert h.statuses([(first, first_lease), *queued]) == ["completed"] * 11
    assert [h.job(job_id)["result"] for job_id, _ in queued] == list(range(10))
    long_row = h.job(long)
    assert (long_row["status"], long_row["worker_id"]) == ("running", worker_id)
    assert sorted(h.released) == sorted([(first, first_lease), (long, long_lease), *queued])
    assert writer.fenced == 0


def test_close_with_the_ledger_down_gives_up_the_records_instead_of_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What shutdown does when the ledger cannot be reached: the records are dropped and
    logged (the jobs stay dispatched, so the reconciler runs them again) and ``close()``
    returns at once rather than retrying for ever."""
    down = create_ledger_engine("postgresql+psycopg://root@127.0.0.1:1/down")
    writer = AttemptWriter(down)
    job_id, worker_id = uuid.uuid4(), uuid.uuid4()
    writer.started(uuid.uuid4(), 1, worker_id, time.monotonic())
    writer.completed(job_id, 1, worker_id, time.monotonic(), None)
    with caplog.at_level(logging.WARNING, logger="tasks.worker.attempt_writer"):
        writer.start()
        wait_for(lambda: "write failed" in caplog.text, 5, "a failed write")
        began = time.monotonic()
        writer.close(timeout=10)
    assert not writer.is_alive()
    assert time.monotonic() - began < 5
    assert "dropping 1 completion(s): database down at shutdown" in caplog.text
    assert "dropping 1 start record(s): database down at shutdown" in caplog.text
    down.dispose()


def test_a_result_postgresql_cannot_store_does_not_block_the_other_outcomes(
    pg_harness: Harness,
) -> None:
    """jsonb refuses a string with a NUL character (a DataError, not an outage): the other
    outcomes of the batch and the ones after it commit, and the refused one is recorded
    completed with a note in place of its result."""
    h = pg_harness
    (bad, bad_lease), (good, good_lease) = h.dispatched(2)
    worker_id = uuid.uuid4()
    writer = h.writer()
    writer.completed(bad, bad_lease, worker_id, time.monotonic(), {"text": "a\x00b"})
    writer.completed(good, good_lease, worker_id, time.monotonic(), {"text": "ok"})
    writer.start()
    try:
        wait_for(lambda: h.job(good)["status"] == "completed", 1.0, "the storable outcome")
        later = h.dispatched(1)[0]
        writer.completed(*later, worker_id, time.monotonic(), "later")
        wait_for(lambda: h.job(later[0])["status"] == "completed", 1.0, "a later outcome")
        refused = h.job(bad)
        assert refused["status"] == "completed"
        assert refused["result"]["unstorable_result"].startswith("UntranslatableCharacter")
    finally:
        writer.close(timeout=10)


def test_a_result_that_cannot_be_encoded_is_noted_and_the_others_commit(harness: Harness) -> None:
    """A value SQLAlchemy cannot turn into JSON (it never passed ``cap_result``) is refused
    before it reaches the database: its job is recorded with a note, the others commit."""
    h = harness
    (odd, odd_lease), (good, good_lease) = h.dispatched(2)
    worker_id = uuid.uuid4()
    writer = h.writer()
    writer.completed(odd, odd_lease, worker_id, time.monotonic(), {"when": object()})
    writer.completed(good, good_lease, worker_id, time.monotonic(), {"text": "ok"})
    writer.start()
    try:
        wait_for(lambda: h.statuses([(odd, 0), (good, 0)]) == ["completed"] * 2, 5.0, "both")
        assert h.job(good)["result"] == {"text": "ok"}
        assert h.job(odd)["result"]["unstorable_result"].startswith("TypeError")
    finally:
        writer.close(timeout=10)


def test_an_error_in_one_flush_does_not_stop_the_writer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, any error but a database one ended the writer's thread, and every later outcome
    waited for ever while the worker ran on. Now that flush's records are lost (their jobs run
    again when taken back) and the writer goes on."""
    h = harness
    (first, first_lease), (later, later_lease) = h.dispatched(2)
    worker_id = uuid.uuid4()
    writer = h.writer()
    # the completion the writer uses: prepared on its held connection (PostgreSQL) or not
    name = "complete_many" if writer.held is None else "complete_many_dbapi"
    real = getattr(attempts, name)
    failed = threading.Event()

    def fails_once(*args: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the writer")
        return real(*args)

    monkeypatch.setattr(attempts, name, fails_once)
    writer.start()
    try:
        writer.completed(first, first_lease, worker_id, time.monotonic(), "first")
        assert failed.wait(5.0)
        writer.completed(later, later_lease, worker_id, time.monotonic(), "later")
        wait_for(lambda: h.job(later)["status"] == "completed", 5.0, "the later outcome")
        assert writer.is_alive()
        assert h.job(first)["status"] == "dispatched"  # taken back and run again later
        assert "attempt writer: 1 record(s) lost to an error" in caplog.text
    finally:
        writer.close(timeout=10)
