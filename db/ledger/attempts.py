"""A worker's writes of one attempt, each fenced by the attempt's lease: read the lease or
claim, record the start, complete, fail (retry or give up), progress, cancel, hand back at
shutdown.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, case, literal, select, text, update

from db.driver import driver_for
from db.ledger.core import (
    COMPLETED_SQL,
    RUNNING_SQL,
    HotStatement,
    S,
    guarded,
    jobs,
    queue_not_paused,
)
from db.ledger.dependencies import finishing, release_dependents
from db.states import LEASED, TRANSITIONS, Transition, sql_list
from db.types import JSONType, db_now, json_append


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one attempt; ``lease`` fences every write of the attempt."""

    id: uuid.UUID
    type: str
    queue: str
    data: dict[str, Any]
    attempt: int
    lease: int
    max_attempts: int
    timeout_seconds: float | None
    cancel_requested_at: datetime | None = None

    @property
    def cancel_requested(self) -> bool:
        """A cancel came before the worker started the attempt."""
        return self.cancel_requested_at is not None


# --- worker transitions -----------------------------------------------------------------


#: what a claim returns, in the order of ``Claimed``'s fields
_CLAIMED_COLUMNS = (
    jobs.c.id,
    jobs.c.type,
    jobs.c.queue,
    jobs.c.data,
    jobs.c.attempt,
    jobs.c.lease,
    jobs.c.max_attempts,
    jobs.c.timeout_seconds,
    # the column itself: SQLite 3.40 answers 1 for "col IS NOT NULL" in UPDATE ... RETURNING
    # when col is NULL
    jobs.c.cancel_requested_at,
)

_QUEUE_NOT_PAUSED = queue_not_paused(jobs.c.queue)

_LEASED = HotStatement(
    select(*_CLAIMED_COLUMNS).where(
        jobs.c.id == bindparam("job_id", None, type_=jobs.c.id.type),
        jobs.c.lease == bindparam("lease", None, type_=Integer()),
        jobs.c.status == S.DISPATCHED.value,
        _QUEUE_NOT_PAUSED,
    )
)


def leased(conn: Connection, job_id: uuid.UUID, lease: int) -> Claimed | None:
    """The attempt a message ``(job_id, lease)`` may run, read without a write: None when the
    message is stale (its lease was given back or superseded), the job was cancelled, or its
    queue is paused. The worker records the start later (:func:`start_many`); the outcome
    write is fenced on the lease either way."""
    row = _LEASED.execute(conn, {"job_id": job_id, "lease": lease}).first()
    return None if row is None else Claimed(*row)


_CLAIM_LEASE = HotStatement(
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id", None, type_=jobs.c.id.type),
        jobs.c.lease == bindparam("b_lease", None, type_=Integer()),
        jobs.c.status == S.DISPATCHED.value,
        _QUEUE_NOT_PAUSED,
    )
    .values(
        status=S.RUNNING.value,
        started_at=db_now(),
        worker_id=bindparam("worker_id", None, type_=jobs.c.worker_id.type),
        updated_at=db_now(),
    )
    .returning(*_CLAIMED_COLUMNS)
)


def leased_dbapi(dbapi_conn: Any, dialect: Any, job_id: uuid.UUID, lease: int) -> Claimed | None:
    """:func:`leased` on a psycopg connection in autocommit that the calling thread holds: a
    thread worker's per-job read, at about half the CPU of going through a pooled SQLAlchemy
    connection (measured: 303 vs 563 µs per read)."""
    return claimed_from(leased_cursor_dbapi(dbapi_conn, dialect, job_id, lease).fetchone())


def leased_cursor_dbapi(dbapi_conn: Any, dialect: Any, job_id: uuid.UUID, lease: int) -> Any:
    """:func:`leased_dbapi`'s statement sent, its cursor not yet read (in psycopg's
    pipeline mode several are sent before the first result is read)."""
    return _LEASED.execute_dbapi(dbapi_conn, dialect, {"job_id": job_id, "lease": lease})


def claimed_from(row: Any) -> Claimed | None:
    """The attempt a lease read's row describes (None: no row, the attempt may not run)."""
    return None if row is None else Claimed(*row)


def claim(
    conn: Connection, job_id: uuid.UUID, worker_id: uuid.UUID | None, lease: int | None = None
) -> Claimed | None:
    """Start an attempt before running it, in one guarded UPDATE (process workers, and tools).

    With ``lease`` (a message's): the leased ``dispatched`` attempt becomes ``running``.
    Without: a ``queued`` job is started directly under a new lease (attempt + 1), and a
    ``dispatched`` one under its current lease. None when the message is stale or duplicate,
    the job was cancelled, or its queue is paused.
    """
    if lease is not None:
        params = {"job_id": job_id, "b_lease": lease, "worker_id": worker_id}
        row = _CLAIM_LEASE.execute(conn, params).first()
        return None if row is None else Claimed(*row)
    fresh = jobs.c.status == S.QUEUED.value
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, guarded(Transition.CLAIM), _QUEUE_NOT_PAUSED)
        .values(
            status=S.RUNNING.value,
            attempt=case((fresh, jobs.c.attempt + 1), else_=jobs.c.attempt),
            lease=case((fresh, jobs.c.lease + 1), else_=jobs.c.lease),
            started_at=db_now(),
            worker_id=worker_id,
            updated_at=db_now(),
        )
        .returning(*_CLAIMED_COLUMNS)
    )
    row = conn.execute(stmt).first()
    return None if row is None else Claimed(*row)


def claimed_by(conn: Connection, job_id: uuid.UUID, worker_id: uuid.UUID) -> Claimed | None:
    """The running attempt of ``job_id`` if ``worker_id`` holds it: after a claim whose reply
    was lost (connection dropped after the commit), the worker picks its attempt up again."""
    row = conn.execute(
        select(*_CLAIMED_COLUMNS).where(
            jobs.c.id == job_id,
            jobs.c.status == S.RUNNING.value,
            jobs.c.worker_id == worker_id,
        )
    ).first()
    return None if row is None else Claimed(*row)


def _fence(job_id: uuid.UUID, lease: int) -> Any:
    """The writes of an attempt: only while its lease is the job's lease and not finished."""
    return and_(
        jobs.c.id == job_id,
        jobs.c.lease == lease,
        jobs.c.status.in_(sorted(s.value for s in LEASED)),
    )


def _ran(worker_id: uuid.UUID | None, started_ago: float | None) -> dict[str, Any]:
    """``started_at``/``worker_id`` of an attempt whose start the worker measured itself
    (``started_ago`` seconds before this statement): the outcome may be the first write."""
    if started_ago is None:
        return {}
    return {"started_at": db_now(-float(started_ago)), "worker_id": worker_id}


_START_MANY_PG = text(
    f"""
    UPDATE queue_jobs AS j
    SET status = {RUNNING_SQL}, worker_id = v.worker_id, updated_at = now(),
        started_at = now() - make_interval(secs => v.ago)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:leases AS integer[]), CAST(:workers AS uuid[]),
                CAST(:agos AS double precision[])) AS v(id, lease, worker_id, ago)
    WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = v.id
      AND j.status IN ({sql_list(TRANSITIONS[Transition.START][0])}) AND j.lease = v.lease
    """
)


_START_MANY = HotStatement(_START_MANY_PG)


def _start_params(
    started: Sequence[tuple[uuid.UUID, int, uuid.UUID | None, float]],
) -> dict[str, Any]:
    return {
        "ids": [s[0] for s in started],
        "leases": [s[1] for s in started],
        "workers": [s[2] for s in started],
        "agos": [float(s[3]) for s in started],
    }


def start_many(
    conn: Connection, started: Sequence[tuple[uuid.UUID, int, uuid.UUID | None, float]]
) -> int:
    """Record that attempts ``(job id, lease, worker id, seconds since start)`` are running,
    in one statement. An attempt whose outcome was written first, or whose lease was taken
    back, is left alone. Returns the number recorded."""
    if not started:
        return 0
    if driver_for(conn).array_sql:
        return conn.execute(_START_MANY_PG, _start_params(started)).rowcount
    recorded = 0
    for job_id, lease, worker_id, ago in started:
        stmt = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.lease == lease, guarded(Transition.START))
            .values(status=S.RUNNING.value, updated_at=db_now(), **_ran(worker_id, ago))
        )
        recorded += conn.execute(stmt).rowcount
    return recorded


def start_many_dbapi(
    dbapi_conn: Any,
    dialect: Any,
    started: Sequence[tuple[uuid.UUID, int, uuid.UUID | None, float]],
) -> int:
    """:func:`start_many` as a prepared statement on a psycopg connection in autocommit that
    the calling thread holds (``db.engine.HeldConnections``; PostgreSQL)."""
    if not started:
        return 0
    return int(_START_MANY.execute_dbapi(dbapi_conn, dialect, _start_params(started)).rowcount)


@dataclass(frozen=True)
class Outcome:
    """A successful attempt, as the worker hands it to the group commit."""

    id: uuid.UUID
    lease: int
    result: Any
    worker_id: uuid.UUID | None = None
    started_ago: float | None = None  # seconds between the start and the write
    finished_ago: float = 0.0  # seconds between the end of the handler and the write


def complete(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    result: Any,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
    finished_ago: float = 0.0,
) -> bool:
    """Record success of the attempt. False when the attempt was fenced off (rescued)."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(
            status=S.COMPLETED.value,
            result=bindparam("b_result", value=result, type_=JSONType),
            completed_at=db_now(-float(finished_ago)),
            finished_at=db_now(-float(finished_ago)),
            updated_at=db_now(),
            **_ran(worker_id, started_ago),
        )
    )
    return finishing(conn, stmt, one=True) == 1


_COMPLETE_MANY_PG = text(
    f"""
    UPDATE queue_jobs AS j
    SET status = {COMPLETED_SQL}, result = v.result,
        completed_at = now() - make_interval(secs => v.fago),
        finished_at = now() - make_interval(secs => v.fago),
        started_at = COALESCE(now() - make_interval(secs => v.sago), j.started_at),
        worker_id = COALESCE(v.worker_id, j.worker_id),
        updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:leases AS integer[]), CAST(:results AS jsonb[]),
                CAST(:workers AS uuid[]), CAST(:sagos AS double precision[]),
                CAST(:fagos AS double precision[]))
         AS v(id, lease, result, worker_id, sago, fago)
    WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = v.id
      AND j.status IN ({sql_list(TRANSITIONS[Transition.COMPLETE][0])}) AND j.lease = v.lease
    RETURNING j.id
    """
)


_COMPLETE_MANY = HotStatement(_COMPLETE_MANY_PG)


def _complete_params(done: Sequence[Outcome]) -> dict[str, Any]:
    return {
        "ids": [d.id for d in done],
        "leases": [d.lease for d in done],
        "results": [json.dumps(d.result) for d in done],
        "workers": [d.worker_id for d in done],
        "sagos": [d.started_ago for d in done],
        "fagos": [float(d.finished_ago) for d in done],
    }


def complete_many(conn: Connection, done: Sequence[Outcome]) -> set[uuid.UUID]:
    """Record the success of many attempts in one statement (group commit). Returns the ids
    recorded; the others were fenced off."""
    if not done:
        return set()
    if driver_for(conn).array_sql:
        return set(conn.execute(_COMPLETE_MANY_PG, _complete_params(done)).scalars())
    return {
        d.id
        for d in done
        if complete(
            conn,
            d.id,
            d.lease,
            d.result,
            worker_id=d.worker_id,
            started_ago=d.started_ago,
            finished_ago=d.finished_ago,
        )
    }


def complete_many_dbapi(dbapi_conn: Any, dialect: Any, done: Sequence[Outcome]) -> set[uuid.UUID]:
    """:func:`complete_many` as a prepared statement on a psycopg connection in autocommit
    that the calling thread holds (``db.engine.HeldConnections``; PostgreSQL): the writer
    used 0.40 ms of CPU per job at 100 jobs/s this way, 0.71 ms through a SQLAlchemy
    connection (docs/benchmarks.md, "Twelfth session")."""
    if not done:
        return set()
    rows = _COMPLETE_MANY.fetch_all_dbapi(dbapi_conn, dialect, _complete_params(done))
    return {row[0] for row in rows}


def fail_attempt(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    error_entry: dict[str, Any],
    retry_delay_seconds: float,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
) -> str | None:
    """Record a failed attempt: ``retrying`` (attempts left), ``failed``, or ``cancelled``
    (cancel was requested). Returns the new status, or None if fenced off.
    """
    cancelled = jobs.c.cancel_requested_at.is_not(None)
    retry = and_(~cancelled, jobs.c.attempt < jobs.c.max_attempts)
    new_status = case(
        (cancelled, literal(S.CANCELLED.value)),
        (retry, literal(S.RETRYING.value)),
        else_=literal(S.FAILED.value),
    )
    ran = _ran(worker_id, started_ago)
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(
            status=new_status,
            scheduled_at=case((retry, db_now(retry_delay_seconds)), else_=jobs.c.scheduled_at),
            finished_at=case((retry, None), else_=db_now()),
            last_error=str(error_entry.get("error", ""))[:4000],
            errors=json_append(jobs.c.errors, bindparam("b_entry", error_entry, JSONType)),
            worker_id=case((retry, None), else_=ran.get("worker_id", jobs.c.worker_id)),
            started_at=ran.get("started_at", jobs.c.started_at),
            updated_at=db_now(),
        )
        .returning(jobs.c.status)
    )
    if driver_for(conn).dependents_released_by_trigger:
        return conn.execute(stmt).scalar_one_or_none()
    row = conn.execute(stmt.returning(jobs.c.has_dependents)).first()
    if row is not None and row[1]:
        release_dependents(conn)
    return None if row is None else row[0]


def set_progress(
    conn: Connection, job_id: uuid.UUID, lease: int, fraction: float, message: str | None
) -> bool:
    """Store the handler's progress on its attempt (fenced like every attempt write)."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(progress=fraction, progress_message=message, progress_at=db_now())
    )
    return conn.execute(stmt).rowcount == 1


def cancel_requested(conn: Connection, job_id: uuid.UUID) -> bool:
    stmt = select(jobs.c.cancel_requested_at.is_not(None)).where(jobs.c.id == job_id)
    return bool(conn.execute(stmt).scalar_one_or_none())


def finish_cancelled(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
) -> bool:
    """A job whose cancel was requested stopped cooperatively."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease), jobs.c.cancel_requested_at.is_not(None))
        .values(
            status=S.CANCELLED.value,
            finished_at=db_now(),
            updated_at=db_now(),
            **_ran(worker_id, started_ago),
        )
    )
    return finishing(conn, stmt, one=True) == 1


def hand_back_all(conn: Connection, worker_id: uuid.UUID) -> int:
    """A worker shutting down returns the jobs it could not finish: they run again and the
    interrupted attempt is not counted (its number is given back). A job whose cancel was
    requested ends ``cancelled`` instead."""
    cancelled = jobs.c.cancel_requested_at.is_not(None)
    stmt = (
        update(jobs)
        .where(jobs.c.worker_id == worker_id, guarded(Transition.HAND_BACK))
        .values(
            status=case((cancelled, literal(S.CANCELLED.value)), else_=literal(S.QUEUED.value)),
            finished_at=case((cancelled, db_now()), else_=None),
            attempt=case((cancelled, jobs.c.attempt), else_=jobs.c.attempt - 1),
            worker_id=case((cancelled, jobs.c.worker_id), else_=None),
            started_at=case((cancelled, jobs.c.started_at), else_=None),
            dispatched_at=None,
            updated_at=db_now(),
        )
    )
    return finishing(conn, stmt)
