"""Jobs that wait for other jobs (docs/architecture.md, "Dependencies"): counting ended
dependencies (on SQLite; a trigger does it on PostgreSQL), reviving dependents on retry, and the
reads of a job's dependencies, dependents and their results.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, literal, or_, select, update

from db.driver import driver_for
from db.ledger.core import S, deps, error_entry, guarded, jobs
from db.states import TERMINAL, Transition, sorted_values
from db.types import JSONType, db_now, json_append

# --- workflows: jobs that wait for other jobs (docs/architecture.md, "Dependencies") ------

#: what a dependency that did not complete does to a job that waits for it
ON_DEPENDENCY_FAILURE = ("cancel", "run")
_ENDED_BADLY = sorted_values({S.FAILED, S.CANCELLED})


class UnknownDependencies(Exception):
    """Dependencies named by id that are not in the ledger."""

    def __init__(self, missing: Sequence[uuid.UUID]) -> None:
        self.missing = list(missing)
        shown = ", ".join(str(m) for m in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"unknown dependency job(s): {shown}{more}")


def dependency_error(dependency: uuid.UUID, status: str, attempt: int) -> dict[str, Any]:
    """The ``errors`` entry of a job cancelled because ``dependency`` ended ``status``
    (the PostgreSQL trigger writes the same fields)."""
    entry = error_entry(
        attempt, f"dependency {dependency} ended {status}", traceback=None, worker=None, kind=""
    )
    return {**entry, "kind": "dependency", "dependency": str(dependency)}


def finishing(conn: Connection, stmt: Any, *, one: bool = False) -> int:
    """Run an UPDATE that may end jobs; returns its row count. PostgreSQL: as it is (the
    release trigger counts the edges of an ended job that others depend on, inside the
    statement). SQLite: first for the rows no job depends on (``NOT has_dependents``: the
    same one statement as before for a job outside any workflow), then, unless ``one`` job
    was named and already written, for the others, followed by :func:`release_dependents`
    in the same transaction when it wrote any. (A RETURNING of the flag cost 50 µs per
    finish through SQLAlchemy, a probe of the open edges 380 µs: measured, median.)"""
    if driver_for(conn).dependents_released_by_trigger:
        return int(conn.execute(stmt).rowcount)
    plain = int(conn.execute(stmt.where(jobs.c.has_dependents.is_(False))).rowcount)
    if one and plain:
        return plain
    parents = int(conn.execute(stmt.where(jobs.c.has_dependents.is_(True))).rowcount)
    if parents:
        release_dependents(conn)
    return plain + parents


#: open edges whose dependency has ended: what :func:`release_dependents` counts
_ENDED_EDGES = (
    select(deps.c.job_id, deps.c.depends_on, jobs.c.status)
    .select_from(deps.join(jobs, jobs.c.id == deps.c.depends_on))
    .where(deps.c.resolved.is_(None), jobs.c.status.in_(sorted_values(TERMINAL)))
    .order_by(deps.c.depends_on, deps.c.job_id)
)


def release_dependents(conn: Connection) -> int:
    """Count every open edge whose dependency has ended, what the PostgreSQL trigger
    ``queue_jobs_release_dependents`` does in the finishing statement: a ``waiting`` job
    with ``on_dependency_failure="cancel"`` whose dependency failed or was cancelled is
    cancelled (an error entry names the dependency); otherwise it loses a pending dependency
    and, at 0, is released (``queued``, or ``scheduled`` at its own time). Repeats until no
    edge is left to count (a cancelled job's own dependents next). Returns the jobs moved.

    Run in the transaction of the write that ended the dependencies (SQLite, where
    ``BEGIN IMMEDIATE`` serializes writers); each edge is counted once (``resolved IS
    NULL`` guard)."""
    moved = 0
    while True:
        ended = conn.execute(_ENDED_EDGES).all()
        if not ended:
            return moved
        for child, parent, status in ended:
            counted = conn.execute(
                update(deps)
                .where(deps.c.job_id == child, deps.c.depends_on == parent)
                .where(deps.c.resolved.is_(None))
                .values(resolved=status)
            ).rowcount
            if counted:
                moved += _count_edge(conn, child, parent, status)


def _count_edge(conn: Connection, child: uuid.UUID, parent: uuid.UUID, status: str) -> int:
    waiting = and_(jobs.c.id == child, jobs.c.status == S.WAITING.value)
    doomed = and_(waiting, jobs.c.on_dependency_failure == "cancel")
    attempt = None
    if status != S.COMPLETED.value:
        attempt = conn.execute(select(jobs.c.attempt).where(doomed)).scalar_one_or_none()
    if attempt is not None:
        entry = dependency_error(parent, status, attempt)
        cancelled = conn.execute(
            update(jobs)
            .where(doomed)
            .values(
                status=S.CANCELLED.value,
                finished_at=db_now(),
                updated_at=db_now(),
                last_error=entry["error"],
                errors=json_append(jobs.c.errors, bindparam("b_entry", entry, JSONType)),
            )
        ).rowcount
        if cancelled:
            return cancelled
    last = jobs.c.deps_pending <= 1
    return conn.execute(
        update(jobs)
        .where(waiting)
        .values(
            deps_pending=jobs.c.deps_pending - 1,
            status=case(
                (~last, literal(S.WAITING.value)),
                (jobs.c.scheduled_at > db_now(), literal(S.SCHEDULED.value)),
                else_=literal(S.QUEUED.value),
            ),
            scheduled_at=case(
                (or_(~last, jobs.c.scheduled_at > db_now()), jobs.c.scheduled_at),
                else_=db_now(),
            ),
            updated_at=db_now(),
        )
    ).rowcount


def _by_key(condition: Any) -> Any:
    """``condition`` on a job reached from an edge, as ``(…) IS TRUE``: not a qualifier the
    status index can serve, so the planner reads the job by its primary key from the edge
    (with few ``waiting`` rows in its statistics it scanned every waiting or cancelled job
    per edge instead; see migration 0011)."""
    return condition.is_(True)


def revive_dependents(conn: Connection, job_id: uuid.UUID) -> int:
    """After ``job_id`` was retried: the jobs it (and, downstream, they) cancelled as a
    dependency wait again, and ``run`` dependents still waiting count it as pending again.
    A job with another dependency that failed or was cancelled stays cancelled. Returns the
    jobs revived. A job cancelled by a dependency is told apart from one cancelled by an
    admin by ``cancel_requested_at`` (every admin cancel sets it; a dependency never does)."""
    revived = 0
    frontier = [job_id]
    while frontier:
        rows = conn.execute(
            select(deps.c.job_id, deps.c.depends_on, jobs.c.status)
            .select_from(deps.join(jobs, jobs.c.id == deps.c.job_id))
            .where(
                deps.c.depends_on.in_(frontier),
                deps.c.resolved.is_not(None),
                _by_key(
                    or_(
                        jobs.c.status == S.WAITING.value,
                        and_(
                            jobs.c.status == S.CANCELLED.value,
                            jobs.c.cancel_requested_at.is_(None),
                            deps.c.resolved.in_(_ENDED_BADLY),
                        ),
                    )
                ),
            )
        ).all()
        frontier = []
        for child, parent, status in rows:
            edge = and_(deps.c.job_id == child, deps.c.depends_on == parent)
            if status == S.WAITING.value:
                conn.execute(update(deps).where(edge).values(resolved=None))
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == child, jobs.c.status == S.WAITING.value)
                    .values(deps_pending=jobs.c.deps_pending + 1, updated_at=db_now())
                )
                continue
            # edges of ``child`` counted as failed/cancelled whose dependency ran again
            # since (retried): they are open again, as the one to ``parent``
            rerun = and_(
                deps.c.job_id == child,
                deps.c.resolved.in_(_ENDED_BADLY),
                deps.c.depends_on.in_(select(jobs.c.id).where(~jobs.c.status.in_(_ENDED_BADLY))),
            )
            still_ended = deps.c.depends_on.in_(
                select(jobs.c.id).where(jobs.c.status.in_(_ENDED_BADLY))
            )
            other_blocker = (
                select(deps.c.depends_on)
                .where(
                    deps.c.job_id == child,
                    deps.c.depends_on != parent,
                    deps.c.resolved.in_(_ENDED_BADLY),
                    still_ended,
                )
                .exists()
            )
            blocked = conn.execute(
                select(jobs.c.on_dependency_failure == "cancel").where(
                    jobs.c.id == child, other_blocker
                )
            ).scalar_one_or_none()
            if blocked:
                continue
            conn.execute(update(deps).where(or_(edge, rerun)).values(resolved=None))
            open_edges = (
                select(func.count())
                .select_from(deps)
                .where(deps.c.job_id == child, deps.c.resolved.is_(None))
                .scalar_subquery()
            )
            n = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == child,
                    guarded(Transition.REVIVE),
                    jobs.c.cancel_requested_at.is_(None),
                )
                .values(
                    status=S.WAITING.value,
                    deps_pending=open_edges,
                    finished_at=None,
                    updated_at=db_now(),
                )
            ).rowcount
            if n:
                revived += n
                frontier.append(child)
    return revived


def dependency_cancelled(conn: Connection, job_id: uuid.UUID) -> int:
    """How many jobs downstream of ``job_id`` a dependency cancelled (``job_id`` ending
    failed or cancelled, then each of them in turn): what a cancel reports."""
    e, d = deps.alias("e"), jobs.alias("d")
    down = (
        select(e.c.job_id.label("id"))
        .join(d, d.c.id == e.c.job_id)
        .where(
            e.c.depends_on == job_id,
            e.c.resolved.in_(_ENDED_BADLY),
            _by_key(and_(d.c.status == S.CANCELLED.value, d.c.cancel_requested_at.is_(None))),
        )
        .cte("down", recursive=True)
    )
    e2, d2 = deps.alias("e2"), jobs.alias("d2")
    down = down.union(
        select(e2.c.job_id)
        .join(d2, d2.c.id == e2.c.job_id)
        .join(down, e2.c.depends_on == down.c.id)
        .where(
            e2.c.resolved.in_(_ENDED_BADLY),
            _by_key(and_(d2.c.status == S.CANCELLED.value, d2.c.cancel_requested_at.is_(None))),
        )
    )
    return int(conn.execute(select(func.count()).select_from(down)).scalar_one())


def dependencies_of(conn: Connection, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The jobs ``job_id`` depends on: ``id``, ``type``, ``status``, and ``resolved`` (the
    status the edge was counted with, None while pending), in id order."""
    rows = conn.execute(
        select(deps.c.depends_on, jobs.c.type, jobs.c.status, deps.c.resolved)
        .select_from(deps.outerjoin(jobs, jobs.c.id == deps.c.depends_on))
        .where(deps.c.job_id == job_id)
        .order_by(deps.c.depends_on)
    )
    return [{"id": i, "type": t, "status": s, "resolved": r} for i, t, s, r in rows]


def dependents_of(conn: Connection, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The jobs that depend on ``job_id``: ``id``, ``type``, ``status``, ``resolved``."""
    rows = conn.execute(
        select(deps.c.job_id, jobs.c.type, jobs.c.status, deps.c.resolved)
        .select_from(deps.outerjoin(jobs, jobs.c.id == deps.c.job_id))
        .where(deps.c.depends_on == job_id)
        .order_by(deps.c.job_id)
    )
    return [{"id": i, "type": t, "status": s, "resolved": r} for i, t, s, r in rows]


def dependency_results(conn: Connection, job_id: uuid.UUID) -> dict[uuid.UUID, Any]:
    """``{dependency id: its result}`` for a job's handler (None for a dependency that did
    not complete)."""
    rows = conn.execute(
        select(deps.c.depends_on, jobs.c.result)
        .select_from(deps.join(jobs, jobs.c.id == deps.c.depends_on))
        .where(deps.c.job_id == job_id)
    )
    return {dep: result for dep, result in rows}
