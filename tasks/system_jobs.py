"""Built-in periodic system jobs: the metrics rollup and retention (docs/metrics.md).

They run like any periodic job (one ledger row per tick, on the ``system`` queue, which a
worker started without ``--queues`` serves) and are safe to run twice: the rollup is an
idempotent upsert, and pruning deletes only what is final.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import lru_cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from db.engine import engine_for, read
from db.retention import prune_jobs, prune_metrics
from db.settings import get_settings
from metrics.rollup import db_clock, rollup
from tasks.registry import JobContext, periodic_job

log = logging.getLogger(__name__)

SYSTEM_QUEUE = "system"
SYSTEM_PRIORITY = 9


class MetricsSettings(BaseSettings):
    """Retention and rollup knobs, from the environment."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    queue_retention_completed_hours: float = Field(default=24.0, gt=0)
    queue_retention_failed_days: float = Field(default=7.0, gt=0)
    queue_metrics_retention_days: float = Field(default=90.0, gt=0)
    queue_metrics_recompute_minutes: int = Field(default=5, ge=1, le=60)


@lru_cache(maxsize=1)
def metrics_settings() -> MetricsSettings:
    settings = MetricsSettings()
    kept = timedelta(days=settings.queue_metrics_retention_days)
    if kept < max(
        timedelta(hours=settings.queue_retention_completed_hours),
        timedelta(days=settings.queue_retention_failed_days),
    ):
        log.warning(
            "QUEUE_METRICS_RETENTION_DAYS is shorter than the job retention: jobs older than "
            "the oldest rollup row are never pruned"
        )
    return settings


def _engine() -> Engine:
    return engine_for(get_settings().ledger_url)


@periodic_job(
    "system.metrics_rollup",
    every=timedelta(minutes=1),
    queue=SYSTEM_QUEUE,
    priority=SYSTEM_PRIORITY,
    timeout=50,
)
def metrics_rollup(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Every minute: roll the last minutes of every queue up into queue_metrics."""
    result = rollup(
        _engine(),
        minutes=metrics_settings().queue_metrics_recompute_minutes,
        stale_seconds=get_settings().queue_stale_seconds,
    )
    return {
        "window_start": result.window_start.isoformat(),
        "window_end": result.window_end.isoformat(),
        "queue_rows": result.queue_rows,
        "type_rows": result.type_rows,
        "seconds": round(result.seconds, 3),
        "skipped": result.skipped,
    }


@periodic_job(
    "system.prune_jobs",
    every=timedelta(minutes=5),
    queue=SYSTEM_QUEUE,
    priority=SYSTEM_PRIORITY,
    timeout=600,
)
def prune_finished_jobs(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Every 5 minutes: delete finished jobs past their retention, once rolled up."""
    settings = metrics_settings()
    engine = _engine()
    with read(engine) as conn:
        now = db_clock(conn)
    result = prune_jobs(
        engine,
        completed_before=now - timedelta(hours=settings.queue_retention_completed_hours),
        failed_before=now - timedelta(days=settings.queue_retention_failed_days),
        recompute_minutes=settings.queue_metrics_recompute_minutes,
    )
    return {
        "deleted": result.deleted,
        "rolled_up_before": result.cutoff.isoformat() if result.cutoff else None,
    }


@periodic_job(
    "system.prune_metrics",
    crontab="17 * * * *",
    queue=SYSTEM_QUEUE,
    priority=SYSTEM_PRIORITY,
    timeout=600,
)
def prune_old_metrics(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Hourly: delete rollup rows older than the metrics retention."""
    engine = _engine()
    with read(engine) as conn:
        now = db_clock(conn)
    before = now - timedelta(days=metrics_settings().queue_metrics_retention_days)
    return {"deleted": prune_metrics(engine, before=before), "before": before.isoformat()}
