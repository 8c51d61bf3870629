"""What the read models of several console pages share: argument checks, the error rate,
and the totals of a window of ``queue_metrics`` minute rows (the Overview's KPIs and success
criteria, the Capacity page)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from db.models import Metric
from metrics import hist

queue_metrics = Metric.__table__


def stale_seconds() -> float:
    """``QUEUE_STALE_SECONDS``: a worker or maintainer with an older heartbeat is not live."""
    try:
        return float(os.environ.get("QUEUE_STALE_SECONDS", "10"))
    except ValueError:
        return 10.0


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused."""
    if value.tzinfo is None:
        raise ValueError("give an aware datetime (UTC)")
    return value.astimezone(UTC)


def error_rate(error_count: int, job_count: int, retries: int) -> float | None:
    """Share of the attempts that ended in the period which ended in an error:
    ``error_count / (job_count + retries)`` (finished jobs plus retried attempts), at most 1;
    None when nothing ended."""
    attempts = job_count + retries
    if attempts <= 0:
        return None if error_count == 0 else 1.0
    return min(1.0, error_count / attempts)


def clamp01(value: float | None) -> float | None:
    return None if value is None else max(0.0, min(1.0, value))


# --- window totals from the rollups -----------------------------------------------------------


@dataclass
class Totals:
    """Sums over the minute rows of a window (all queues, or one)."""

    minutes: int = 0
    first: datetime | None = None
    job_count: int = 0
    completed_count: int = 0
    failed_count: int = 0
    error_count: int = 0
    retries: int = 0
    processing_weighted: float = 0.0
    processing_weight: int = 0
    busy_for_slots: float = 0.0
    slot_seconds: float = 0.0
    depth_first: int | None = None
    depth_last: int | None = None
    processing_counts: dict[int, int] = field(default_factory=dict)
    wait_counts: dict[int, int] = field(default_factory=dict)

    @property
    def processing_mean_ms(self) -> float | None:
        return self.processing_weighted / self.processing_weight if self.processing_weight else None

    @property
    def utilization(self) -> float | None:
        return self.busy_for_slots / self.slot_seconds if self.slot_seconds else None


def window_totals(
    conn: Connection, since: datetime, until: datetime, queue: str | None = None, hists: bool = True
) -> Totals:
    """Sums of the ``queue_metrics`` minutes in [since, until) (one queue or all), with the
    merged histograms unless ``hists`` is False."""
    cols = [
        queue_metrics.c.timestamp,
        queue_metrics.c.job_count,
        queue_metrics.c.completed_count,
        queue_metrics.c.failed_count,
        queue_metrics.c.error_count,
        queue_metrics.c.retries,
        queue_metrics.c.processing_time,
        queue_metrics.c.busy_seconds,
        queue_metrics.c.worker_slots,
        queue_metrics.c.depth,
    ]
    if hists:
        cols += [queue_metrics.c.processing_hist, queue_metrics.c.wait_hist]
    stmt = select(*cols).where(
        queue_metrics.c.timestamp >= since, queue_metrics.c.timestamp < until
    )
    if queue is not None:
        stmt = stmt.where(queue_metrics.c.queue_name == queue)
    stmt = stmt.order_by(queue_metrics.c.timestamp)
    t = Totals()
    seen: set[datetime] = set()
    depth_by_minute: dict[datetime, int] = {}
    processing_acc: dict[str, int] = {}
    wait_acc: dict[str, int] = {}
    for r in conn.execute(stmt):
        ts, jobs_n = r.timestamp, r.job_count
        seen.add(ts)
        t.first = ts if t.first is None else t.first
        t.job_count += jobs_n
        t.completed_count += r.completed_count
        t.failed_count += r.failed_count
        t.error_count += r.error_count
        t.retries += r.retries
        if r.processing_time is not None and jobs_n:
            t.processing_weighted += r.processing_time * jobs_n
            t.processing_weight += jobs_n
        if r.worker_slots:
            t.busy_for_slots += r.busy_seconds
            t.slot_seconds += r.worker_slots * 60.0
        depth_by_minute[ts] = depth_by_minute.get(ts, 0) + r.depth
        if hists:
            hist.merge_raw(processing_acc, r.processing_hist)
            hist.merge_raw(wait_acc, r.wait_hist)
    t.processing_counts = hist.int_keys(processing_acc)
    t.wait_counts = hist.int_keys(wait_acc)
    t.minutes = len(seen)
    if depth_by_minute:
        ordered = sorted(depth_by_minute)
        t.depth_first, t.depth_last = depth_by_minute[ordered[0]], depth_by_minute[ordered[-1]]
    return t
