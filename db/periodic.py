"""SQL for ``queue_periodic``: the state of each periodic job type (pause switch, the newest
tick dealt with, skip / miss / catch-up counters). Every write is a guarded statement: a tick
is dealt with by exactly one maintainer, however many run (the one that moves ``last_tick``
forward first)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, or_, select, update

from db.driver import driver_for
from db.models import Job, PeriodicState
from db.states import JobStatus
from db.types import db_now

periodic = PeriodicState.__table__
jobs = Job.__table__

#: a run of a periodic type in one of these states is unfinished: the next tick of an
#: ``overlap="skip"`` type is skipped (``scheduled`` is not: a job submitted by hand for later
#: has not started and may be far in the future)
UNFINISHED = (
    JobStatus.QUEUED.value,
    JobStatus.DISPATCHED.value,
    JobStatus.RUNNING.value,
    JobStatus.RETRYING.value,
)


@dataclass(frozen=True)
class TickOutcome:
    """What one pass did with the due ticks of one periodic type."""

    last_tick: datetime  # the newest tick dealt with
    enqueued_tick: datetime | None = None
    skipped: int = 0
    skipped_tick: datetime | None = None
    skipped_for: uuid.UUID | None = None
    missed: int = 0
    missed_tick: datetime | None = None
    caught_up: int = 0


def ensure_row(conn: Connection, name: str) -> None:
    """Create the state row of ``name`` (not paused, no tick dealt with) unless it exists."""
    stmt = driver_for(conn).insert(periodic).values(name=name, paused=False, updated_at=db_now())
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[periodic.c.name]))


def lock_row(conn: Connection, name: str) -> dict[str, Any] | None:
    """The state row of ``name``, locked until the transaction ends (PostgreSQL; SQLite's
    write transaction holds the whole database already)."""
    row = conn.execute(select(periodic).where(periodic.c.name == name).with_for_update()).first()
    return None if row is None else dict(row._mapping)


def states(conn: Connection, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The state rows, by name (all of them, or those of ``names``)."""
    stmt = select(periodic)
    if names is not None:
        stmt = stmt.where(periodic.c.name.in_(list(names)))
    return {r.name: dict(r._mapping) for r in conn.execute(stmt)}


def unfinished_run(conn: Connection, name: str) -> uuid.UUID | None:
    """A job of type ``name`` that is waiting or running (``UNFINISHED``), if any."""
    stmt = select(jobs.c.id).where(jobs.c.type == name, jobs.c.status.in_(UNFINISHED)).limit(1)
    return conn.execute(stmt).scalar_one_or_none()


def _newer(column: Any, value: datetime | None) -> Any:
    """``value`` if it is newer than ``column`` (or the column is NULL), else the column."""
    if value is None:
        return column
    return case((or_(column.is_(None), column < value), value), else_=column)


def record_ticks(conn: Connection, name: str, outcome: TickOutcome) -> bool:
    """Move ``last_tick`` forward to ``outcome.last_tick`` and add the outcome's counters.
    Guarded: False (nothing written) when a tick that new was dealt with already."""
    values: dict[str, Any] = {
        "last_tick": outcome.last_tick,
        "last_enqueued_tick": _newer(periodic.c.last_enqueued_tick, outcome.enqueued_tick),
        "updated_at": db_now(),
    }
    if outcome.skipped:
        values["skipped_count"] = periodic.c.skipped_count + outcome.skipped
        values["last_skipped_tick"] = _newer(periodic.c.last_skipped_tick, outcome.skipped_tick)
        values["last_skipped_for"] = outcome.skipped_for
    if outcome.missed:
        values["missed_count"] = periodic.c.missed_count + outcome.missed
        values["last_missed_tick"] = _newer(periodic.c.last_missed_tick, outcome.missed_tick)
    if outcome.caught_up:
        values["caught_up_count"] = periodic.c.caught_up_count + outcome.caught_up
    stmt = (
        update(periodic)
        .where(
            periodic.c.name == name,
            or_(periodic.c.last_tick.is_(None), periodic.c.last_tick < outcome.last_tick),
        )
        .values(**values)
    )
    return conn.execute(stmt).rowcount == 1


def set_paused(conn: Connection, name: str, *, by: str | None, reason: str | None) -> bool:
    """Pause ``name`` (the row is created if needed). Returns False if it was paused already
    (then who paused it, when and why are kept)."""
    ensure_row(conn, name)
    stmt = (
        update(periodic)
        .where(periodic.c.name == name, periodic.c.paused.is_(False))
        .values(paused=True, paused_at=db_now(), paused_by=by, reason=reason, updated_at=db_now())
    )
    return conn.execute(stmt).rowcount == 1


def set_resumed(conn: Connection, name: str, *, now: datetime) -> bool:
    """Resume ``name``. Ticks due while it was paused are not caught up: ``last_tick`` moves
    to ``now`` if it is older. Returns False if it was not paused."""
    stmt = (
        update(periodic)
        .where(periodic.c.name == name, periodic.c.paused.is_(True))
        .values(
            paused=False,
            paused_at=None,
            paused_by=None,
            reason=None,
            last_tick=_newer(periodic.c.last_tick, now),
            updated_at=db_now(),
        )
    )
    return conn.execute(stmt).rowcount == 1


def paused_names(conn: Connection) -> set[str]:
    rows = conn.execute(select(periodic.c.name).where(periodic.c.paused.is_(True)))
    return set(rows.scalars())
