"""Built-in periodic system jobs: the metrics rollup and retention of jobs, rollups and the
audit log (docs/metrics.md, docs/security.md).

They run like any periodic job (one ledger row per tick, on the ``system`` queue, which a
worker started without ``--queues`` serves) and are safe to run twice: the rollup is an
idempotent upsert, and pruning deletes only what is final.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, select

from db.clock import db_clock
from db.engine import engine_for, read
from db.models import Job
from db.retention import prune_audit, prune_jobs, prune_metrics
from db.settings import Settings, get_settings
from db.states import JobStatus
from metrics.rollup import oldest_finish, rollup, rollup_holes
from tasks.registry import JobContext, periodic_job

log = logging.getLogger(__name__)

SYSTEM_QUEUE = "system"
SYSTEM_PRIORITY = 9
ROLLUP = "system.metrics_rollup"
jobs = Job.__table__


@lru_cache(maxsize=1)
def metrics_settings() -> Settings:
    """The retention and rollup settings, checked once (re-read after ``cache_clear()``)."""
    get_settings.cache_clear()
    settings = get_settings()
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


#: minutes of never-rolled-up history a rollup run back-fills besides its recent window
CATCH_UP_MINUTES = 30


def _previous_coverage(engine: Engine) -> datetime | None:
    """Everything before this minute was rolled up, says the newest finished rollup job."""
    with read(engine) as conn:
        result = conn.execute(
            select(jobs.c.result)
            .where(jobs.c.type == ROLLUP, jobs.c.status == JobStatus.COMPLETED.value)
            .order_by(jobs.c.created_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    value = result.get("covered_to") if isinstance(result, dict) else None
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@periodic_job(
    ROLLUP,
    every=timedelta(minutes=1),
    queue=SYSTEM_QUEUE,
    priority=SYSTEM_PRIORITY,
    timeout=50,
)
def metrics_rollup(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Every minute: roll the last minutes of every queue up into queue_metrics."""
    engine = _engine()
    stale = get_settings().queue_stale_seconds
    result = rollup(
        engine, minutes=metrics_settings().queue_metrics_recompute_minutes, stale_seconds=stale
    )
    # catch up, a chunk per run, on minutes never rolled up (maintainer down, first start)
    covered_to = result.window_end
    back_filled = 0
    cursor = _previous_coverage(engine) or oldest_finish(engine)
    if cursor is not None and cursor < result.window_start:
        chunk_end = min(cursor + timedelta(minutes=CATCH_UP_MINUTES), result.window_start)
        back_filled = rollup_holes(engine, start=cursor, end=chunk_end, stale_seconds=stale)
        if chunk_end < result.window_start:
            covered_to = chunk_end
    return {
        "window_start": result.window_start.isoformat(),
        "window_end": result.window_end.isoformat(),
        "queue_rows": result.queue_rows,
        "type_rows": result.type_rows,
        "seconds": round(result.seconds, 3),
        "skipped": result.skipped,
        "back_filled_minutes": back_filled,
        "covered_to": covered_to.isoformat(),
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
    """Hourly: delete rollup rows older than the metrics retention and audit entries older
    than the audit retention (``QUEUE_AUDIT_RETENTION_DAYS``)."""
    engine = _engine()
    settings = metrics_settings()
    with read(engine) as conn:
        now = db_clock(conn)
    before = now - timedelta(days=settings.queue_metrics_retention_days)
    audit_before = now - timedelta(days=settings.queue_audit_retention_days)
    return {
        "deleted": prune_metrics(engine, before=before),
        "before": before.isoformat(),
        "audit_deleted": prune_audit(engine, before=audit_before),
        "audit_before": audit_before.isoformat(),
    }
