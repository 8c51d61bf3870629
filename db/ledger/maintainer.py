"""The maintainer's transitions: stage due jobs, dispatch (the full pass and one queue at
once on NOTIFY), reconcile lost messages, give back and rescue attempts of dead workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Row,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)

from db.driver import driver_for
from db.ledger.core import QUEUED_SQL, HotStatement, S, guarded, ids_from, jobs, queue_not_paused
from db.ledger.dependencies import finishing
from db.models import QueueControl, Worker
from db.states import LEASED, Transition, sorted_values
from db.types import db_now

# --- maintainer transitions -------------------------------------------------------------


#: ``scheduled``/``retrying`` jobs whose time has come
_DUE = (guarded(Transition.STAGE), jobs.c.scheduled_at <= db_now())
_ANY_DUE = HotStatement(select(select(jobs.c.id).where(*_DUE).exists()))


def any_due(conn: Connection) -> bool:
    """Whether a ``scheduled``/``retrying`` job's time has come (what :func:`stage_due`
    would stage): the first entry of the due index, nothing locked."""
    return bool(_ANY_DUE.execute(conn, {}).scalar_one())


def stage_due(conn: Connection, limit: int = 5000) -> int:
    """``scheduled``/``retrying`` jobs whose time has come become ``queued``."""
    due = select(jobs.c.id).where(*_DUE).order_by(jobs.c.scheduled_at).limit(limit)
    stmt = (
        update(jobs)
        .where(ids_from(conn, due), guarded(Transition.STAGE))
        .values(status=S.QUEUED.value, updated_at=db_now())
    )
    return conn.execute(stmt).rowcount


#: a dispatch takes the attempt and a new lease: the message carries the lease, and the worker
#: that runs it writes the outcome fenced on it (no claim round trip before the handler runs)
_DISPATCH_VALUES: dict[str, Any] = {
    "status": S.DISPATCHED.value,
    "attempt": jobs.c.attempt + 1,
    "lease": jobs.c.lease + 1,
    "dispatched_at": db_now(),
    "updated_at": db_now(),
}
_DISPATCH_RETURNING = (
    jobs.c.id,
    jobs.c.lease,
    jobs.c.priority,
    jobs.c.timeout_seconds,
    jobs.c.scheduled_at,
)


def _dispatch_statement(*only_if: Any) -> Any:
    """PostgreSQL: dispatch up to ``:limit`` queued jobs of ``:queue``, best first, picked
    once (``id = ANY(ARRAY(...))``) with ``FOR UPDATE SKIP LOCKED``; ``only_if`` are further
    conditions of the pick (when one is false, nothing is picked)."""
    picked = (
        select(jobs.c.id)
        .where(
            # inline, not a parameter: a prepared statement's generic plan can then use the
            # partial index of queued jobs (a parameter cannot prove its predicate)
            jobs.c.status == literal(S.QUEUED.value, literal_execute=True),
            jobs.c.queue == bindparam("queue", "", type_=jobs.c.queue.type),
            *only_if,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
        .limit(bindparam("limit", 0, type_=Integer()))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(jobs)
        .where(jobs.c.id == any_(func.array(picked)), guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )


_DISPATCH = HotStatement(_dispatch_statement())

#: the dispatcher's advisory lock, taken once for the statement (MATERIALIZED: evaluated
#: once, before the pick)
_DISPATCH_LOCK = (
    select(func.pg_try_advisory_xact_lock(bindparam("lock_key", 0, type_=BigInteger())).label("ok"))
    .cte("lock")
    .prefix_with("MATERIALIZED")
)

#: one queue's dispatch in one autocommit statement: the advisory lock (held for the
#: statement), the pause check, the pick and the lease; nothing is picked when the lock is
#: taken elsewhere or the queue is paused
_DISPATCH_QUEUE_PG = HotStatement(
    _dispatch_statement(
        select(_DISPATCH_LOCK.c.ok).scalar_subquery(),
        queue_not_paused(bindparam("queue", "", type_=jobs.c.queue.type)),
    ).add_cte(_DISPATCH_LOCK)
)


def dispatch(
    conn: Connection,
    queue: str,
    limit: int,
    *,
    only_type: str | None = None,
    exclude_types: Sequence[str] = (),
    unpartitioned_of: Sequence[str] = (),
) -> list[Row[Any]]:
    """Mark up to ``limit`` due jobs of ``queue`` ``dispatched``, best first (optionally of one
    type only, or of every type but some: the metered types are dispatched on their own).
    Of the types in ``unpartitioned_of`` (partitioned types, dispatched by partition) only
    jobs without a partition key are taken (jobs queued before their type was partitioned).
    Each takes its attempt (``attempt + 1``) and a new lease (``lease + 1``).

    Returns ``(id, lease, priority, timeout_seconds, scheduled_at)`` rows ordered as they
    should be pushed.
    The caller pushes them to Redis after commit; a push that never happens is repaired
    by :func:`requeue_lost`.
    """
    if limit <= 0:
        return []
    plain = only_type is None and not exclude_types and not unpartitioned_of
    if plain and driver_for(conn).prepared_hot_path:
        rows = list(_DISPATCH.execute(conn, {"queue": queue, "limit": limit}))
        rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
        return rows
    # the status inline, not a parameter: once psycopg prepares the statement, PostgreSQL's
    # generic plan could not use the partial index of queued jobs (measured: 17 - 25 ms per
    # pass, then 186 ms from the 11th call, at 100,000 queued jobs)
    queued = jobs.c.status == literal(S.QUEUED.value, literal_execute=True)
    picked = select(jobs.c.id).where(queued, jobs.c.queue == queue)
    if only_type is not None:
        picked = picked.where(jobs.c.type == only_type)
    if exclude_types:
        picked = picked.where(jobs.c.type.not_in(list(exclude_types)))
    if unpartitioned_of:
        picked = picked.where(
            or_(jobs.c.partition_key.is_(None), jobs.c.type.not_in(list(unpartitioned_of)))
        )
    picked = (
        picked.order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(jobs)
        .where(ids_from(conn, picked), guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )
    rows = list(conn.execute(stmt))
    rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
    return rows


def dispatch_ids(conn: Connection, ids: Sequence[uuid.UUID]) -> list[Row[Any]]:
    """Mark these jobs ``dispatched`` (those still ``queued``: one cancelled meanwhile is
    skipped), as :func:`dispatch` does; the fair pass chose them (``db.partitions``).
    Returns the rows unordered."""
    if not ids:
        return []
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(list(ids)), guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )
    return list(conn.execute(stmt))


#: Distinct queues with queued jobs by skip-scan over the dispatch-order index: one index
#: probe per queue, however long the backlog (a plain DISTINCT reads every queued row).
_QUEUED_QUEUES = text(
    f"""
    WITH RECURSIVE q(queue) AS (
        SELECT (SELECT queue FROM queue_jobs WHERE status = {QUEUED_SQL} ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM queue_jobs j
                WHERE j.status = {QUEUED_SQL} AND j.queue > q.queue ORDER BY j.queue LIMIT 1)
        FROM q WHERE q.queue IS NOT NULL
    )
    SELECT queue FROM q WHERE queue IS NOT NULL
    """
)


def queues_with_queued_jobs(conn: Connection) -> list[str]:
    return list(conn.execute(_QUEUED_QUEUES).scalars())


_DISPATCH_PLAN_PG = text(
    f"""
    SELECT pg_try_advisory_xact_lock(:lock_key),
           ARRAY({_QUEUED_QUEUES.text}),
           ARRAY(SELECT queue_name FROM queue_controls WHERE paused)
    """
)


def dispatch_queue_now(conn: Connection, queue: str, limit: int, lock_key: int) -> list[Row[Any]]:
    """PostgreSQL, in autocommit: :func:`dispatch` of one queue (no metered types) as a single
    statement that also takes the dispatcher's advisory lock and skips a paused queue. What a
    wake-up for new jobs runs: one round trip instead of a transaction of four."""
    if limit <= 0:
        return []
    params = {"lock_key": lock_key, "queue": queue, "limit": limit}
    rows = list(_DISPATCH_QUEUE_PG.execute(conn, params))
    rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
    return rows


@dataclass(frozen=True)
class DispatchPlan:
    locked: bool  # this maintainer holds the dispatcher's lock for the transaction
    queues: list[str]  # queues with queued jobs
    paused: set[str]


def dispatch_plan(conn: Connection, lock_key: int) -> DispatchPlan:
    """What a dispatch pass starts from, in one round trip on PostgreSQL (it runs on every
    wake-up, so it is on the submit-to-start path): the transaction-scoped advisory lock,
    the queues with queued jobs, and the paused queues. SQLite's ``BEGIN IMMEDIATE`` already
    serializes passes."""
    if driver_for(conn).advisory_locks:
        locked, queues, paused = conn.execute(_DISPATCH_PLAN_PG, {"lock_key": lock_key}).one()
        return DispatchPlan(bool(locked), list(queues), set(paused))
    paused_rows = conn.execute(select(QueueControl.queue_name).where(QueueControl.paused.is_(True)))
    return DispatchPlan(True, queues_with_queued_jobs(conn), set(paused_rows.scalars()))


def active_counts(conn: Connection, types: Sequence[str]) -> dict[str, int]:
    """Jobs of these types that are dispatched or running (counted against concurrency)."""
    if not types:
        return {}
    rows = conn.execute(
        select(jobs.c.type, func.count())
        .where(jobs.c.type.in_(list(types)), jobs.c.status.in_(sorted_values(LEASED)))
        .group_by(jobs.c.type)
    )
    return {t: int(n) for t, n in rows}


def starts_since(conn: Connection, job_type: str, period_seconds: float) -> int:
    """Attempts of ``job_type`` started in the last ``period_seconds``, plus those dispatched
    and about to start (both count against a rate limit). One statement, so a job moving
    from dispatched to running in between is counted exactly once."""
    stmt = select(func.count()).where(
        jobs.c.type == job_type,
        or_(
            jobs.c.status == S.DISPATCHED.value,
            jobs.c.started_at >= db_now(-period_seconds),
        ),
    )
    return int(conn.execute(stmt).scalar_one())


def dispatched_of_queue(conn: Connection, queue: str) -> list[tuple[uuid.UUID, int]]:
    """``(id, lease)`` of every dispatched job of ``queue``."""
    stmt = select(jobs.c.id, jobs.c.lease).where(
        jobs.c.queue == queue, jobs.c.status == S.DISPATCHED.value
    )
    return [(job_id, lease) for job_id, lease in conn.execute(stmt)]


def requeue_dispatched(
    conn: Connection, queue: str, only: Sequence[tuple[uuid.UUID, int]] | None = None
) -> int:
    """Take back the dispatched jobs of ``queue`` (pausing it) and the attempts they took:
    every one, or ``only`` those deliveries ``(id, lease)`` that are still dispatched. Their
    messages start nothing (a worker checks the lease is still dispatched)."""
    if only is not None and not only:
        return 0
    picked = [] if only is None else [tuple_(jobs.c.id, jobs.c.lease).in_(list(only))]
    stmt = (
        update(jobs)
        .where(jobs.c.queue == queue, guarded(Transition.RECONCILE), *picked)
        .values(**_GIVE_BACK_VALUES)
    )
    return finishing(conn, stmt)


def find_unique(conn: Connection, unique_key: str, window_seconds: float) -> uuid.UUID | None:
    """The newest job with this unique key created within the window that did not fail and
    was not cancelled (those do not block a new submit), if any."""
    stmt = (
        select(jobs.c.id)
        .where(
            jobs.c.unique_key == unique_key,
            jobs.c.created_at >= db_now(-window_seconds),
            jobs.c.status.not_in([S.FAILED.value, S.CANCELLED.value]),
        )
        .order_by(jobs.c.created_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).scalar_one_or_none()


def dispatched_before(
    conn: Connection, grace_seconds: float
) -> dict[str, list[tuple[uuid.UUID, int]]]:
    """``(id, lease)`` of jobs dispatched more than ``grace_seconds`` ago and not started yet,
    by queue."""
    rows = conn.execute(
        select(jobs.c.queue, jobs.c.id, jobs.c.lease).where(
            jobs.c.status == S.DISPATCHED.value,
            jobs.c.dispatched_at < db_now(-grace_seconds),
        )
    )
    out: dict[str, list[tuple[uuid.UUID, int]]] = {}
    for queue, job_id, lease in rows:
        out.setdefault(queue, []).append((job_id, lease))
    return out


#: deliveries a job may get back without an attempt counted (``lease - attempt`` counts
#: them: a dispatch takes both, a give-back returns the attempt only); past it, a delivery
#: that nobody recorded as started costs an attempt, so no job circles for ever
MAX_GIVEN_BACK = 10

_CANCEL_ASKED = jobs.c.cancel_requested_at.is_not(None)

#: a lease that never started goes back: the job waits again and its attempt is not counted;
#: a job whose cancel was requested meanwhile ends ``cancelled`` instead
_GIVE_BACK_VALUES: dict[str, Any] = {
    "status": case((_CANCEL_ASKED, literal(S.CANCELLED.value)), else_=literal(S.QUEUED.value)),
    "attempt": case((_CANCEL_ASKED, jobs.c.attempt), else_=jobs.c.attempt - 1),
    "finished_at": case((_CANCEL_ASKED, db_now()), else_=None),
    "dispatched_at": None,
    "updated_at": db_now(),
}


def requeue_lost(conn: Connection, leases: Iterable[tuple[uuid.UUID, int]]) -> int:
    """Dispatched jobs whose message ``(id, lease)`` is gone from Redis and that no worker
    took go back to queued, giving their attempt back (``cancelled`` if a cancel was
    requested). The lease stays taken, so a late worker holding that message can no longer
    write anything. A job that already got :data:`MAX_GIVEN_BACK` deliveries back is left
    alone: the caller counts the attempt (:func:`still_dispatched`)."""
    pairs = list(leases)
    if not pairs:
        return 0
    stmt = (
        update(jobs)
        .where(
            tuple_(jobs.c.id, jobs.c.lease).in_(pairs),
            guarded(Transition.RECONCILE),
            jobs.c.lease - jobs.c.attempt < MAX_GIVEN_BACK,
        )
        .values(**_GIVE_BACK_VALUES)
    )
    return finishing(conn, stmt)


def still_dispatched(conn: Connection, leases: Iterable[tuple[uuid.UUID, int]]) -> list[Row[Any]]:
    """``(id, type, attempt, lease)`` of the given deliveries that are still ``dispatched``
    under that lease (after :func:`requeue_lost`: those to count as attempts)."""
    pairs = list(leases)
    if not pairs:
        return []
    stmt = select(jobs.c.id, jobs.c.type, jobs.c.attempt, jobs.c.lease).where(
        tuple_(jobs.c.id, jobs.c.lease).in_(pairs), jobs.c.status == S.DISPATCHED.value
    )
    return list(conn.execute(stmt))


def orphaned_running(
    conn: Connection, stale_seconds: float, deadline_grace_seconds: float
) -> list[Row[Any]]:
    """Running attempts whose worker is dead (stale or missing) or whose deadline passed.

    Returns ``(id, type, attempt, lease, worker_id, reason)`` rows.
    """
    live = select(Worker.id).where(
        Worker.status != "stopped", Worker.last_heartbeat >= db_now(-stale_seconds)
    )
    dead_worker = or_(jobs.c.worker_id.is_(None), jobs.c.worker_id.not_in(live))
    overdue = and_(
        jobs.c.timeout_seconds.is_not(None),
        jobs.c.started_at < db_now(-(jobs.c.timeout_seconds + deadline_grace_seconds)),
    )
    reason = case(
        (dead_worker, literal("worker lost: heartbeat stale or worker stopped")),
        else_=literal("attempt exceeded its timeout"),
    )
    stmt = select(
        jobs.c.id,
        jobs.c.type,
        jobs.c.attempt,
        jobs.c.lease,
        jobs.c.worker_id,
        reason.label("reason"),
    ).where(jobs.c.status == S.RUNNING.value, or_(dead_worker, overdue))
    return list(conn.execute(stmt))
