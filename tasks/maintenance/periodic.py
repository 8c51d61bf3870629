"""Periodic enqueuer: one job per tick of every ``@periodic_job``. The tick key is unique
in the ledger, so any number of maintainers yields exactly one row per tick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from db import ledger
from db.engine import write
from tasks import registry
from tasks.api import build_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicConfig:
    interval: float = 0.5


def tick_key(name: str, tick: datetime) -> str:
    return f"{name}@{tick.astimezone(UTC).isoformat()}"


class PeriodicEnqueuer:
    name = "periodic"

    def __init__(self, engine: Engine, config: PeriodicConfig) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval
        self._last: dict[str, datetime] = {}

    def run_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        due = []
        for job_type in registry.periodic_types():
            assert job_type.schedule is not None
            tick = job_type.schedule.latest_tick(now)
            if tick is None or self._last.get(job_type.name) == tick:
                continue
            due.append((job_type, tick))
        if not due:
            return 0
        new_jobs = [
            build_job(
                jt.name, dict(jt.periodic_data), tick_key=tick_key(jt.name, tick), schedule=None
            )
            for jt, tick in due
        ]
        with write(self.engine) as conn:
            ids = ledger.insert_jobs(conn, new_jobs)
        inserted = sum(1 for new, got in zip(new_jobs, ids, strict=True) if new.id == got)
        for jt, tick in due:
            self._last[jt.name] = tick
        if inserted:
            log.info("enqueued %d periodic job(s)", inserted)
        return inserted
