"""Periodic enqueuer: one job per tick of every ``@periodic_job``, under the type's policies.

- The tick key is unique in the ledger, and each tick is dealt with by whichever maintainer
  first moves the type's ``queue_periodic.last_tick`` past it (a guarded UPDATE in the same
  transaction as the insert), so any number of maintainers yields one row per tick and counts
  every skipped or missed tick once.
- ``last_tick`` survives restarts: the ticks between it and now were missed while no
  maintainer ran, and the ``catch_up`` policy says what happens to them.
- A paused type's ticks are dealt with (``last_tick`` moves on) but not enqueued.
- ``overlap="skip"``: a tick is not enqueued while a run of the type is unfinished; the skip
  is counted with the tick and the run that blocked it.

Listing, pausing and resuming periodic jobs is ``tasks.steering``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from db import periodic as store
from db.engine import read, transaction
from db.ledger import producer
from tasks import registry
from tasks.api import build_job

log = logging.getLogger(__name__)

#: a tick at most this old when the enqueuer sees it is on time (not missed): the crontab
#: minute, and the polling jitter of ``every=`` schedules
ON_TIME = timedelta(seconds=60)


@dataclass(frozen=True)
class PeriodicConfig:
    interval: float = 0.5


def tick_key(name: str, tick: datetime) -> str:
    return f"{name}@{tick.astimezone(UTC).isoformat()}"


def plan(
    job_type: registry.JobType, ticks: list[datetime], total: int, now: datetime
) -> tuple[list[datetime], int]:
    """Which of the due ``ticks`` (the newest ones, oldest first, of ``total`` due) to enqueue
    under the type's ``catch_up`` policy, and how many due ticks are dropped as missed."""
    if not ticks:
        return [], total
    if job_type.catch_up == "all":
        chosen = ticks
    elif job_type.catch_up == "latest" or now - ticks[-1] <= ON_TIME:
        chosen = ticks[-1:]
    else:  # "none" and the newest due tick is not on time
        chosen = []
    return chosen, total - len(chosen)


class PeriodicEnqueuer:
    name = "periodic"

    def __init__(self, engine: Engine, config: PeriodicConfig) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval
        #: per type: every tick up to this instant has been dealt with (by us or another
        #: maintainer); None until the first pass has read the ledger
        self._cursor: dict[str, datetime] | None = None

    def _lower(
        self, job_type: registry.JobType, last_tick: datetime | None, now: datetime
    ) -> datetime:
        """Ticks after this instant are due: after the newest one dealt with, within the
        catch-up window; a type the ledger has never seen starts with its on-time ticks."""
        if last_tick is None:
            return now - ON_TIME
        return max(last_tick, now - job_type.catch_up_window)

    def run_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        types = registry.periodic_types()
        if self._cursor is None:
            with read(self.engine) as conn:
                rows = store.states(conn, [t.name for t in types])
            self._cursor = {
                t.name: self._lower(t, (rows.get(t.name) or {}).get("last_tick"), now)
                for t in types
            }
        inserted = 0
        failed: list[Exception] = []
        for job_type in types:
            assert job_type.schedule is not None
            cursor = self._cursor.get(job_type.name) or self._lower(job_type, None, now)
            lower = max(cursor, now - job_type.catch_up_window)
            _, due = job_type.schedule.ticks_in(lower, now, newest=1)
            if due:
                try:
                    inserted += self._deal_with(job_type, now)
                except Exception as exc:  # the others still tick; this one is tried again
                    failed.append(exc)
                    continue
            self._cursor[job_type.name] = max(cursor, now)
        if inserted:
            log.info("enqueued %d periodic job(s)", inserted)
        if failed:
            if len(failed) > 1:
                log.warning("%d periodic job types failed this pass", len(failed))
            raise failed[0]  # the maintainer logs it (once per outage if the ledger is down)
        return inserted

    def _deal_with(self, job_type: registry.JobType, now: datetime) -> int:
        """Deal with the due ticks of one type in one transaction; returns jobs inserted."""
        assert job_type.schedule is not None
        name = job_type.name
        with transaction(self.engine) as conn:
            store.ensure_row(conn, name)
            state = store.lock_row(conn, name) or {}
            lower = self._lower(job_type, state.get("last_tick"), now)
            if self._cursor is not None and name in self._cursor:
                lower = max(lower, self._cursor[name])
            ticks, total = job_type.schedule.ticks_in(
                lower, now, newest=registry.MAX_CATCH_UP_TICKS
            )
            if not total:
                return 0
            if state.get("paused"):
                store.record_ticks(conn, name, store.TickOutcome(last_tick=ticks[-1]))
                return 0
            chosen, missed = plan(job_type, ticks, total, now)
            dropped = [t for t in ticks if t not in chosen]
            blocker = None
            if chosen and job_type.overlap == "skip":
                blocker = store.unfinished_run(conn, name)
            outcome = store.TickOutcome(
                last_tick=ticks[-1],
                enqueued_tick=None if blocker is not None or not chosen else chosen[-1],
                skipped=len(chosen) if blocker is not None else 0,
                skipped_tick=chosen[-1] if blocker is not None and chosen else None,
                skipped_for=blocker,
                missed=missed,
                missed_tick=dropped[-1] if dropped else None,
                caught_up=0 if blocker is not None else sum(1 for t in chosen if now - t > ON_TIME),
            )
            if not store.record_ticks(conn, name, outcome):
                return 0  # another maintainer dealt with these ticks first
            if blocker is not None:
                log.info(
                    "periodic %s: tick %s skipped, run %s is unfinished (overlap=skip)",
                    name,
                    chosen[-1].isoformat(),
                    blocker,
                )
                return 0
            if missed:
                log.warning(
                    "periodic %s: %d tick(s) missed: no maintainer dealt with them in time"
                    " (catch_up=%s)",
                    name,
                    missed,
                    job_type.catch_up,
                )
            if not chosen:
                return 0
            new_jobs = [
                build_job(name, dict(job_type.periodic_data), tick_key=tick_key(name, t))
                for t in chosen
            ]
            ids = producer.insert_jobs(conn, new_jobs)
        return sum(1 for new, got in zip(new_jobs, ids, strict=True) if new.id == got)
