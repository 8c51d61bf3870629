"""Group commit of what thread workers record about their attempts: start records and
successful outcomes, one statement (one commit) each for everything the worker process
produced within a couple of milliseconds, instead of one commit per job.

A handler thread hands its records over and goes on at once:

- **start**: the job stays ``dispatched`` while it runs until its start record is written,
  ``START_DELAY`` after the start; an attempt that finishes sooner is recorded started and
  completed by its one outcome write (``started_at`` from the worker's own clock).
- **outcome**: the job stays ``dispatched``/``running`` until the batch commits, so a job is
  never reported completed before it is; if the process dies first, the reconciler (never
  started) or the rescuer (running) runs it again (at-least-once).

Every write is fenced on the attempt's lease. A batch refused for its data (a ``DataError``
or ``IntegrityError``, or a value that cannot be encoded: a result it cannot store, not an
outage) does not hold back the others: its outcomes are written one by one, and one still
refused is recorded completed with ``{"unstorable_result": <the error>}`` instead of its
result. Any other error in a flush is logged and the writer goes on (that flush's jobs are
taken back and run again), so it never stops while the worker runs.

Shutdown writes everything pending, starts included, before unfinished jobs are handed back;
with the ledger unreachable at that moment they are dropped (logged) and their jobs run again.
Once a start or an outcome has committed the ledger refuses the delivery by itself, so its
mark in Redis (the delivery gate, ``tasks.transport.broker``) is released: one script for
everything written within ``RELEASE_SECONDS`` (a mark only costs memory until then; it
expires anyway).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from db.driver import driver_for
from db.engine import HeldConnections, write
from db.ledger import attempts
from tasks.service_wait import one_line

log = logging.getLogger(__name__)

MAX_BATCH = 500
LINGER_SECONDS = 0.002  # wait this long for more outcomes to share the commit
START_DELAY = 0.05  # record an attempt as running once it has run this long
#: retries through a database outage stay frequent: until a pending record is written, the
#: reconciler may take the job back once the outage ends (docs/architecture.md, "Leases")
MAX_RETRY_DELAY = 1.0
RELEASE_SECONDS = 0.25  # release delivery marks at most this often (one script each time)
#: errors that refuse the records themselves, not the database being away: a retry of the
#: same records cannot succeed
REFUSED = (DataError, IntegrityError)


@dataclass(frozen=True)
class _Start:
    job_id: uuid.UUID
    lease: int
    worker_id: uuid.UUID
    started: float  # time.monotonic() at the start


@dataclass(frozen=True)
class _Outcome:
    job_id: uuid.UUID
    lease: int
    worker_id: uuid.UUID
    started: float
    finished: float
    result: Any


@dataclass(frozen=True)
class _Forget:  # the attempt's outcome was written by the handler thread itself
    job_id: uuid.UUID
    lease: int


_Event = _Start | _Outcome | _Forget


class AttemptWriter(threading.Thread):
    def __init__(
        self,
        engine: Engine,
        release: Callable[[list[tuple[uuid.UUID, int]]], None] | None = None,
    ) -> None:
        super().__init__(name="attempt-writer", daemon=True)
        self.engine = engine
        #: PostgreSQL: the writer's statements go prepared on a connection it holds
        self.held = HeldConnections(engine) if driver_for(engine).prepared_hot_path else None
        self.release = release
        self._to_release: list[tuple[uuid.UUID, int]] = []
        self._released_at = time.monotonic()
        self._queue: queue.Queue[_Event] = queue.Queue()
        self._pending_starts: dict[tuple[uuid.UUID, int], _Start] = {}
        self._closing = threading.Event()
        self.fenced = 0

    # --- called by handler threads -------------------------------------------------------

    def started(self, job_id: uuid.UUID, lease: int, worker_id: uuid.UUID, at: float) -> None:
        self._queue.put(_Start(job_id, lease, worker_id, at))

    def completed(
        self,
        job_id: uuid.UUID,
        lease: int,
        worker_id: uuid.UUID,
        started: float,
        result: Any,
    ) -> None:
        self._queue.put(_Outcome(job_id, lease, worker_id, started, time.monotonic(), result))

    def forget(self, job_id: uuid.UUID, lease: int) -> None:
        """The attempt ended with an outcome written elsewhere: drop its start record."""
        self._queue.put(_Forget(job_id, lease))

    # --- the writer thread ---------------------------------------------------------------

    def _take(self) -> list[_Event]:
        timeout = 0.1
        if self._pending_starts:
            first_due = min(s.started for s in self._pending_starts.values()) + START_DELAY
            timeout = min(timeout, max(0.0, first_due - time.monotonic()))
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(first, _Outcome):
            # the outcomes of the other handlers gather meanwhile; sleeping instead of
            # waiting on the queue keeps each of them from waking this thread (and taking
            # the GIL from the handlers) on its way in
            time.sleep(LINGER_SECONDS)
        events = [first]
        while len(events) < MAX_BATCH:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _write(
        self, what: str, fn: Callable[[Any], Any], dbapi_fn: Callable[[Any], Any]
    ) -> Exception | None:
        """Run ``fn(connection)`` in a write (``dbapi_fn(psycopg connection)`` on the held
        connection, PostgreSQL), retrying through outages. Returns None once written (or
        given up at shutdown), or the error when the database refused the records themselves
        (:data:`REFUSED`, or a value that cannot be encoded)."""
        delay = 0.1
        while True:
            try:
                if self.held is not None:
                    self.held.run(dbapi_fn)
                else:
                    with write(self.engine) as conn:
                        fn(conn)
                return None
            except REFUSED as exc:
                return exc
            except DBAPIError as exc:
                if not self._retry_after(what, exc, delay):
                    return None
                delay = min(delay * 2, MAX_RETRY_DELAY)
            except (StatementError, TypeError, ValueError) as exc:  # a value not encodable
                return exc

    def _retry_after(self, what: str, exc: DBAPIError, delay: float) -> bool:
        """Wait ``delay`` before another try through an outage; False at shutdown."""
        if self._closing.is_set():
            log.error("dropping %s: database down at shutdown", what)
            return False
        log.warning("%s write failed (%s); retrying in %.1fs", what, one_line(exc), delay)
        time.sleep(delay)
        return True

    def _flush(self, events: list[_Event]) -> None:
        outcomes: list[attempts.Outcome] = []
        written: list[tuple[uuid.UUID, int]] = []  # recorded (or fenced): marks to release
        now = time.monotonic()
        for ev in events:
            if isinstance(ev, _Start):
                self._pending_starts[(ev.job_id, ev.lease)] = ev
                continue
            self._pending_starts.pop((ev.job_id, ev.lease), None)
            written.append((ev.job_id, ev.lease))
            if isinstance(ev, _Outcome):
                outcomes.append(
                    attempts.Outcome(
                        id=ev.job_id,
                        lease=ev.lease,
                        result=ev.result,
                        worker_id=ev.worker_id,
                        started_ago=now - ev.started,
                        finished_ago=now - ev.finished,
                    )
                )
        if outcomes:
            refused = self._write(f"{len(outcomes)} completion(s)", *self._complete(outcomes))
            if refused is not None:
                self._complete_one_by_one(outcomes, refused)
        closing = self._closing.is_set()
        due = [
            s
            for s in self._pending_starts.values()
            if closing or s.started + START_DELAY <= time.monotonic()
        ]
        if due:
            now = time.monotonic()
            rows = [(s.job_id, s.lease, s.worker_id, now - s.started) for s in due]
            dialect = self.engine.dialect
            self._write(
                f"{len(due)} start record(s)",
                lambda conn: attempts.start_many(conn, rows),
                lambda conn: attempts.start_many_dbapi(conn, dialect, rows),
            )
            for s in due:
                self._pending_starts.pop((s.job_id, s.lease), None)
            written += [(s.job_id, s.lease) for s in due]
        self._release_marks(written)

    def _complete(
        self, outcomes: list[attempts.Outcome]
    ) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        """The completion of ``outcomes`` on a SQLAlchemy connection and on a held psycopg
        connection (``_write`` runs the one that fits the engine)."""

        def counted(recorded: set[uuid.UUID]) -> None:
            fenced = len(outcomes) - len(recorded)
            if fenced:
                self.fenced += fenced
                log.warning(
                    "%d finished attempt(s) were fenced off (rescued or taken back)", fenced
                )

        dialect = self.engine.dialect
        return (
            lambda conn: counted(attempts.complete_many(conn, outcomes)),
            lambda conn: counted(attempts.complete_many_dbapi(conn, dialect, outcomes)),
        )

    def _complete_one_by_one(self, outcomes: list[attempts.Outcome], error: Exception) -> None:
        """A batch refused for its data: each outcome alone, so the others commit; one still
        refused is recorded with a note in place of its result (the job did complete)."""
        log.warning(
            "%d completion(s) refused (%s): writing them one by one", len(outcomes), one_line(error)
        )
        for outcome in outcomes:
            refused = self._write(f"completion of job {outcome.id}", *self._complete([outcome]))
            if refused is None:
                continue
            cause = getattr(refused, "orig", None) or refused
            note = {"unstorable_result": f"{type(cause).__name__}: {one_line(cause)}"}
            log.error("job %s: the ledger refused its result (%s)", outcome.id, note)
            noted = replace(outcome, result=note)
            if self._write(f"completion of job {outcome.id}", *self._complete([noted])):
                log.error("job %s: its outcome cannot be recorded; it will run again", outcome.id)

    def _release_marks(self, written: list[tuple[uuid.UUID, int]]) -> None:
        if self.release is None:
            return
        self._to_release += written
        now = time.monotonic()
        if self._to_release and (
            self._closing.is_set() or now - self._released_at >= RELEASE_SECONDS
        ):
            batch, self._to_release = self._to_release, []
            self._released_at = now
            self.release(batch)

    def run(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()):
            self._flush_guarded(self._take())
        self._flush_guarded([])  # starts still pending: written before the hand-back
        if self.held is not None:
            self.held.release()

    def _flush_guarded(self, events: list[_Event]) -> None:
        """A bug in a flush must not stop the writer: every later outcome would wait for ever
        while the worker runs on. The records of that flush are lost; their jobs are taken
        back by the reconciler or the rescuer and run again (at-least-once)."""
        try:
            self._flush(events)
        except Exception:
            log.exception("attempt writer: %d record(s) lost to an error", len(events))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted so far, then stop."""
        self._closing.set()
        self.join(timeout)
