"""Read model of the Periodic page: each periodic job's newest tick, its missed ticks of
the last 24 hours and whether it is late (also read by the alert rules)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, select

from db import states
from db.clock import db_clock
from db.engine import read
from db.models import Job, PeriodicState
from db.states import sorted_values
from metrics.read.common import aware_utc

jobs = Job.__table__
WAITING_STATUSES = sorted_values(states.WAITING)


class ScheduleLike(Protocol):
    def latest_tick(self, now: datetime) -> datetime | None: ...

    def next_tick(self, now: datetime) -> datetime: ...

    def describe(self) -> str: ...


LOOKBACK = timedelta(hours=24)
MAX_TICKS = 200_000


def _tick_of(tick_key: str) -> datetime | None:
    _, _, when = tick_key.rpartition("@")
    try:
        parsed = datetime.fromisoformat(when)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _expected_ticks(schedule: ScheduleLike, start: datetime, end: datetime) -> list[datetime]:
    """Ticks in [start, end]."""
    every = getattr(schedule, "every", None)
    if isinstance(every, timedelta) and every.total_seconds() > 0:
        step = every.total_seconds()
        first = math.ceil(start.timestamp() / step) * step
        count = int((end.timestamp() - first) // step) + 1
        count = max(0, min(count, MAX_TICKS))
        return [datetime.fromtimestamp(first + i * step, tz=UTC) for i in range(count)]
    ticks: list[datetime] = []
    latest = schedule.latest_tick(start)
    tick = latest if latest is not None and latest >= start else schedule.next_tick(start)
    while tick <= end and len(ticks) < MAX_TICKS:
        ticks.append(tick)
        tick = schedule.next_tick(tick)
    return ticks


def _interval_seconds(schedule: ScheduleLike, ticks: Sequence[datetime], now: datetime) -> float:
    every = getattr(schedule, "every", None)
    if isinstance(every, timedelta):
        return every.total_seconds()
    if len(ticks) >= 2:
        return min((b - a).total_seconds() for a, b in itertools.pairwise(ticks))
    nxt = schedule.next_tick(now)
    return max(60.0, (schedule.next_tick(nxt) - nxt).total_seconds())


def periodic_health(
    engine: Engine,
    *,
    now: datetime | None = None,
    schedules: Iterable[tuple[str, ScheduleLike, str]] | None = None,
) -> list[dict[str, Any]]:
    """For each periodic job ``(name, schedule, queue)``: its newest tick row, the ticks of the
    last 24 h (or since its first row) that have no row, and whether it is late.

    A tick is *late* when the newest expected tick older than the grace period (2 minutes, or
    2 intervals when the interval is shorter) has no row, or its job is still waiting. A job
    with no row at all is reported with ``last_tick`` None, 0 missed ticks and not late.

    Steering (``queue_periodic``) is taken into account: a paused job is never late and the
    ticks due since it was paused are not missed; the tick the enqueuer skipped because the
    previous run was unfinished (``overlap="skip"``, its newest skip) is not missed either.
    """
    entries = list(schedules or [])
    if not entries:
        return []
    names = sorted({name for name, _, _ in entries})
    with read(engine) as conn:
        clock = aware_utc(now) if now is not None else db_clock(conn)
        window_rows = conn.execute(
            select(
                jobs.c.type,
                jobs.c.tick_key,
                jobs.c.status,
                jobs.c.finished_at,
                jobs.c.created_at,
            ).where(
                jobs.c.type.in_(names),
                jobs.c.tick_key.is_not(None),
                jobs.c.created_at >= clock - LOOKBACK - timedelta(hours=1),
            )
        )
        by_type: dict[str, dict[datetime, Any]] = {n: {} for n in names}
        for r in window_rows:
            tick = _tick_of(r.tick_key)
            if tick is not None:
                by_type[r.type][tick] = r
        steering = {
            r.name: r
            for r in conn.execute(
                select(
                    PeriodicState.name,
                    PeriodicState.paused,
                    PeriodicState.paused_at,
                    PeriodicState.last_skipped_tick,
                ).where(PeriodicState.name.in_(names))
            )
        }
        for name in names:
            if by_type[name]:
                continue
            newest = conn.execute(
                select(jobs.c.type, jobs.c.tick_key, jobs.c.status, jobs.c.finished_at)
                .where(jobs.c.type == name, jobs.c.tick_key.is_not(None))
                .order_by(jobs.c.created_at.desc())
                .limit(1)
            ).first()
            if newest is not None and (tick := _tick_of(newest.tick_key)) is not None:
                by_type[name][tick] = newest
    out = []
    for name, schedule, queue in entries:
        rows = by_type.get(name, {})
        last_tick = max(rows) if rows else None
        last = rows[last_tick] if last_tick is not None else None
        missed = 0
        late = False
        state = steering.get(name)
        paused = bool(state is not None and state.paused)
        if rows:
            window_start = max(clock - LOOKBACK, min(rows))
            ticks = _expected_ticks(schedule, window_start, clock)
            grace = timedelta(seconds=min(120.0, 2 * _interval_seconds(schedule, ticks, clock)))
            due = [t for t in ticks if t <= clock - grace]
            if state is not None and state.paused and state.paused_at is not None:
                due = [t for t in due if t < aware_utc(state.paused_at)]
            skipped = state.last_skipped_tick if state is not None else None
            skipped = aware_utc(skipped) if skipped is not None else None
            missed = sum(1 for t in due if t not in rows and t != skipped)
            if due and not paused:
                newest_due = rows.get(due[-1])
                if newest_due is None:
                    late = due[-1] != skipped
                else:
                    late = newest_due.status in WAITING_STATUSES
        out.append(
            {
                "name": name,
                "schedule": schedule.describe(),
                "queue": queue,
                "last_tick": last_tick,
                "last_status": last.status if last is not None else None,
                "last_finished_at": last.finished_at if last is not None else None,
                "next_tick": schedule.next_tick(clock),
                "missed_ticks": missed,
                "late": late,
                "paused": paused,
            }
        )
    return out
