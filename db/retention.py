"""Retention: delete finished jobs once their minutes are rolled up, old rollup rows and old
audit entries.

A finished job may be deleted only when every number it contributes to is final. All of a
job's contributions (finish, start, busy time, error entries) fall in minutes up to its finish
minute, and the rollup recomputes the last ``recompute_minutes`` minutes on every run. So a
job is deleted only if

- it finished before the retention cutoff of its status, and
- its finish minute is older than the newest rolled-up minute minus the recompute window
  (the rollup will not touch that minute again), and
- a ``queue_metrics`` row exists for its queue and finish minute (the minute was rolled up
  at least once after it ended; a gap left by a stopped rollup is never pruned), unless the
  job never started (it contributes to no rollup number).

A job that a live (not finished) job still depends on is never deleted: the dependent
waits for it, and a retry of it revives what it cancelled. Each batch deletes the workflow
edges of the jobs it deleted in the same transaction (``queue_job_deps`` has no foreign keys,
so that finishing and deleting jobs without edges costs nothing).

Deletes go in batches of ``batch_size`` rows, one short statement each, so they never hold
locks for long. Jobs finished before the oldest rollup row are skipped without a look (they
can have no row; back-fill their minutes with ``metrics.rollup.rollup_range`` to prune them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Uuid,
    bindparam,
    column,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table

from db import job_logs, login_throttle
from db.driver import driver_for
from db.engine import read, transaction, write
from db.models import Job, JobDependency, Metric
from db.states import LIVE, JobStatus, sql_list
from db.types import UTCDateTime, utc_minute

BATCH_SIZE = 10_000
MAX_BATCHES = 100  # per call: at most 1,000,000 rows, the next run continues
#: a login-throttle row idle this long counts nothing (console.login_throttle.FORGET is 1 h)
THROTTLE_IDLE = timedelta(days=1)

queue_jobs = Job.__table__
queue_metrics = Metric.__table__
queue_job_deps = JobDependency.__table__

#: the jobs one batch deletes; ``{minute}``: the finish minute of ``j`` (``db.types.utc_minute``)
_PICK_PRUNED = """
    SELECT j.id FROM queue_jobs j
    WHERE j.finished_at < :cutoff AND j.finished_at >= :oldest
      AND j.status IN ({statuses})
      AND (j.started_at IS NULL OR EXISTS (
          SELECT 1 FROM queue_metrics m
          WHERE m.queue_name = j.queue AND m.timestamp = {minute}))
      AND (NOT j.has_dependents OR NOT EXISTS (
          SELECT 1 FROM queue_job_deps e JOIN queue_jobs d ON d.id = e.job_id
          WHERE e.depends_on = j.id AND d.status IN ({live})))
    LIMIT :batch
"""


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    cutoff: datetime | None  # the effective cutoff (None: nothing rolled up yet)


def rollup_horizon(conn: Connection, recompute_minutes: int) -> tuple[datetime, datetime] | None:
    """(oldest rolled-up minute, first minute that may still be recomputed), or None."""
    oldest, newest = conn.execute(
        select(func.min(queue_metrics.c.timestamp), func.max(queue_metrics.c.timestamp))
    ).one()
    if newest is None:
        return None
    return oldest, newest + timedelta(minutes=1) - timedelta(minutes=recompute_minutes)


def _text_of(expression: ColumnElement[Any], dialect: Dialect) -> str:
    """``expression`` (constants only, no bound parameters) compiled for ``dialect``, to go
    into a ``text()`` statement: its colons escaped, so that none reads as a parameter."""
    return str(expression.compile(dialect=dialect)).replace(":", "\\:")


def _prune_statement(engine: Engine, statuses: tuple[str, ...]) -> Any:
    """DELETE the picked jobs, the pick evaluated once (``Driver.in_picked``: PostgreSQL's
    ``id = ANY(ARRAY(...))`` keeps the plan an index lookup, see notes/ledger.md)."""
    picked = (
        text(
            _PICK_PRUNED.format(
                statuses=", ".join(f"'{s}'" for s in statuses),
                minute=_text_of(utc_minute(literal_column("j.finished_at")), engine.dialect),
                live=sql_list(LIVE),
            )
        )
        .bindparams(
            bindparam("cutoff", type_=UTCDateTime()), bindparam("oldest", type_=UTCDateTime())
        )
        .columns(column("id", Uuid()))
    )
    return (
        delete(queue_jobs)
        .where(driver_for(engine).in_picked(queue_jobs.c.id, picked))
        .returning(
            queue_jobs.c.id,
            or_(queue_jobs.c.has_dependents, queue_jobs.c.on_dependency_failure.is_not(None)).label(
                "in_workflow"
            ),
        )
    )


def prune_jobs(
    engine: Engine,
    *,
    completed_before: datetime,
    failed_before: datetime,
    recompute_minutes: int = 5,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> PruneResult:
    """Delete completed and cancelled jobs finished before ``completed_before`` and failed
    jobs finished before ``failed_before``, only where their minutes are rolled up for good."""
    with read(engine) as conn:
        horizon = rollup_horizon(conn, recompute_minutes)
    if horizon is None:
        return PruneResult(0, None)
    oldest, final_before = horizon
    deleted = 0
    batches = 0
    effective = min(completed_before, final_before)
    passes = (
        ((JobStatus.CANCELLED.value, JobStatus.COMPLETED.value), completed_before),
        ((JobStatus.FAILED.value,), failed_before),
    )
    for statuses, before in passes:
        cutoff = min(before, final_before)
        prune = _prune_statement(engine, statuses)
        while batches < max_batches:
            with transaction(engine) as conn:
                rows = conn.execute(
                    prune,
                    {"cutoff": cutoff, "oldest": oldest, "batch": batch_size},
                ).all()
                in_workflows = [r[0] for r in rows if r[1]]
                if in_workflows:  # their edges, both ways
                    conn.execute(
                        delete(queue_job_deps).where(
                            or_(
                                queue_job_deps.c.job_id.in_(in_workflows),
                                queue_job_deps.c.depends_on.in_(in_workflows),
                            )
                        )
                    )
                # the lines their handlers logged (``queue_job_logs`` has no foreign key)
                job_logs.delete_of_jobs(conn, [r[0] for r in rows])
            n = len(rows)
            batches += 1
            deleted += n
            if n < batch_size:
                break
    return PruneResult(deleted, effective)


def _delete_before(
    engine: Engine,
    table: str,
    column: str,
    before: datetime,
    batch_size: int,
    max_batches: int,
) -> tuple[int, int]:
    """Delete the rows of ``table`` whose ``column`` is before ``before``, a batch per
    transaction, at most ``max_batches``; returns (rows deleted, batches run). ``table`` and
    ``column`` are constants of this module, never input."""
    picked = (
        text(f"SELECT id FROM {table} WHERE {column} < :before LIMIT :batch")
        .bindparams(bindparam("before", type_=UTCDateTime()))
        .columns(sql_column("id"))
    )
    rows = sql_table(table, sql_column("id"))
    stmt = delete(rows).where(driver_for(engine).in_picked(rows.c.id, picked))
    deleted = batches = 0
    while batches < max_batches:
        with write(engine) as conn:
            n = conn.execute(stmt, {"before": before, "batch": batch_size}).rowcount
        batches += 1
        deleted += n
        if n < batch_size:
            break
    return deleted, batches


#: the rollup tables and their time column; an hour goes with its last minute
ROLLUP_TABLES = (
    ("queue_type_metrics", "timestamp", timedelta(0)),
    ("queue_metrics", "timestamp", timedelta(0)),
    ("queue_type_metrics_hourly", "hour", timedelta(minutes=59)),
    ("queue_metrics_hourly", "hour", timedelta(minutes=59)),
)


def prune_metrics(
    engine: Engine,
    *,
    before: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete rollup rows of minutes before ``before`` (both minute tables) and the hourly
    rows of hours whose last minute (:59) is before ``before``."""
    deleted = 0
    for table, time_column, last_minute in ROLLUP_TABLES:
        n, batches = _delete_before(
            engine, table, time_column, before - last_minute, batch_size, max_batches
        )
        deleted += n
        max_batches -= batches
    return deleted


def prune_audit(
    engine: Engine,
    *,
    before: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete audit entries older than ``before`` (``QUEUE_AUDIT_RETENTION_DAYS``), and the
    login-throttle rows that count nothing any more."""
    deleted, _ = _delete_before(engine, "audit_log", "at", before, batch_size, max_batches)
    now = datetime.now(UTC)
    with write(engine) as conn:
        login_throttle.prune(conn, idle_before=now - THROTTLE_IDLE, now=now)
    return deleted
