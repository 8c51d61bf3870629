"""Rescuer: ``running`` attempts whose worker is dead (stale heartbeat) or that ran past
their timeout end as ``retrying`` (attempts left), ``failed`` or ``cancelled``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from db import workers as worker_sql
from db.engine import read, write
from db.ledger import attempts, core, maintainer
from tasks import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RescuerConfig:
    interval: float = 1.0
    stale_seconds: float = 10.0  # heartbeat older than this = dead worker
    deadline_grace_seconds: float = 10.0  # past timeout_seconds + this = hung attempt
    forget_workers_after: float = 3600.0  # mark long-dead worker rows stopped
    forget_every: float = 60.0  # ... looked for this often (an hour's threshold needs no more)


class Rescuer:
    name = "rescuer"

    def __init__(self, engine: Engine, config: RescuerConfig) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval
        self._forgot_at: float | None = None  # monotonic time of the last look for dead workers

    def run_once(self) -> int:
        with read(self.engine) as conn:
            orphans = maintainer.orphaned_running(
                conn, self.config.stale_seconds, self.config.deadline_grace_seconds
            )
        rescued = 0
        for job in orphans:
            delay = registry.retry_delay(job.type, job.attempt)
            entry = core.error_entry(
                job.attempt,
                f"Rescued: {job.reason}",
                traceback=None,
                worker=str(job.worker_id) if job.worker_id else None,
                kind="rescued",
            )
            with write(self.engine) as conn:
                status = attempts.fail_attempt(conn, job.id, job.lease, entry, delay)
            if status is not None:
                rescued += 1
                log.warning("rescued job %s attempt %d -> %s", job.id, job.attempt, status)
        now = time.monotonic()
        if self._forgot_at is None or now - self._forgot_at >= self.config.forget_every:
            with write(self.engine) as conn:
                worker_sql.mark_dead(conn, self.config.forget_workers_after)
            self._forgot_at = now
        return rescued
