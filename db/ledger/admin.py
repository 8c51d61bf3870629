"""Transitions an admin asks for through the job API: cancel (before or after a worker
started the job) and retry.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, case, func, select, update

from db.ledger.core import S, TransitionError, guarded, jobs, status_of
from db.ledger.dependencies import finishing, revive_dependents
from db.states import LEASED, Transition, can
from db.types import db_now

# --- admin transitions (job API) --------------------------------------------------------


def cancel_target(conn: Connection, job_id: uuid.UUID) -> tuple[str, int]:
    """``(status, lease)`` of a job about to be cancelled; :class:`TransitionError` when it
    does not exist."""
    row = conn.execute(select(jobs.c.status, jobs.c.lease).where(jobs.c.id == job_id)).first()
    if row is None:
        raise TransitionError(job_id, Transition.CANCEL, None)
    return row[0], row[1]


def cancel_unstarted(conn: Connection, job_id: uuid.UUID, lease: int) -> bool:
    """Cancel a job that no worker has started, if it is still as the caller saw it
    (``lease``): ``scheduled``, ``queued``, ``retrying``, or ``dispatched`` under a delivery
    the caller knows no worker will start (blocked in Redis, or claimed in the ledger by
    workers that claim). False when it moved meanwhile."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease == lease, guarded(Transition.CANCEL))
        .values(
            status=S.CANCELLED.value,
            cancel_requested_at=db_now(),
            finished_at=db_now(),
            updated_at=db_now(),
        )
    )
    return finishing(conn, stmt, one=True) == 1


def request_cancel(conn: Connection, job_id: uuid.UUID) -> bool:
    """Ask the attempt a worker holds (``running``, or ``dispatched`` and taken from Redis) to
    stop: a worker that has not started it ends it ``cancelled`` without running it; a
    running handler sees ``ctx.cancel_requested``. False when no worker holds it."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(sorted(s.value for s in LEASED)))
        .values(
            cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, db_now()),
            updated_at=db_now(),
        )
    )
    return conn.execute(stmt).rowcount == 1


def cancel(conn: Connection, job_id: uuid.UUID) -> str:
    """Cancel a job whose deliveries workers claim in the ledger (no delivery marks): a
    ``dispatched`` job is then not started until its claim commits, so cancelling it is
    final. Returns ``"cancelled"`` or ``"cancel_requested"`` (running);
    raises :class:`TransitionError`."""
    for _ in range(3):
        status, lease = cancel_target(conn, job_id)
        if status == S.RUNNING.value:
            if request_cancel(conn, job_id):
                return "cancel_requested"
        elif not can(Transition.CANCEL, status):
            raise TransitionError(job_id, Transition.CANCEL, status)
        elif cancel_unstarted(conn, job_id, lease):
            return S.CANCELLED.value
    raise TransitionError(job_id, Transition.CANCEL, status_of(conn, job_id))


def retry(conn: Connection, job_id: uuid.UUID) -> int:
    """Run a failed or cancelled job again. Attempts keep counting (so every entry of the
    error history keeps its own attempt number); a job with no attempts left gets one more.
    Jobs it cancelled as a dependency wait for it again (:func:`revive_dependents`; run it
    in a transaction when the job has dependents). Returns how many were revived."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, guarded(Transition.RETRY))
        .values(
            status=S.QUEUED.value,
            max_attempts=case(
                (jobs.c.attempt >= jobs.c.max_attempts, jobs.c.attempt + 1),
                else_=jobs.c.max_attempts,
            ),
            scheduled_at=db_now(),
            started_at=None,
            completed_at=None,
            finished_at=None,
            dispatched_at=None,
            cancel_requested_at=None,
            worker_id=None,
            result=None,
            updated_at=db_now(),
        )
        .returning(jobs.c.has_dependents)
    )
    parent = conn.execute(stmt).scalar_one_or_none()
    if parent is None:
        raise TransitionError(job_id, Transition.RETRY, status_of(conn, job_id))
    return revive_dependents(conn, job_id) if parent else 0
