"""Read models for the console and analysts: time series, error groups, capacity, periodic
health, success criteria and overview KPIs.

Charts read only the rollup tables (``queue_metrics``, ``queue_type_metrics``); hours and days
are resampled from minute rows, their percentiles from the merged histograms. ``error_groups``
reads failed and in-flight jobs (bounded by indexes and a LIMIT); the KPIs that describe the
present (waiting, running, live workers) are small indexed counts. Definitions of every field:
docs/metrics.md.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
)

from db import maintainers, queries, states
from db.engine import read, transaction
from db.models import Job, Metric, PeriodicState, TypeMetric, Worker
from db.states import JobStatus, sorted_values
from db.types import UTCDateTime
from metrics import hist
from metrics.queueing import erlang_c, servers_needed, wait_percentile
from metrics.rollup import (
    MEASURE_COLUMNS,
    MINUTE,
    current_depth,
    db_clock,
    floor_minute,
    live_workers,
)

__all__ = [
    "capacity",
    "capacity_measured",
    "credited_slots",
    "erlang_c",
    "error_groups",
    "maintainer_signal",
    "overview_kpis",
    "periodic_health",
    "queue_summary",
    "success_criteria",
    "time_series",
    "wait_percentile",
]

jobs = Job.__table__
workers = Worker.__table__
queue_metrics = Metric.__table__
type_metrics = TypeMetric.__table__

RESOLUTIONS = {"minute": MINUTE, "hour": timedelta(hours=1), "day": timedelta(days=1)}
WAITING_STATUSES = sorted_values(states.WAITING)
IN_FLIGHT = sorted_values(states.IN_FLIGHT)


def _stale_seconds() -> float:
    try:
        return float(os.environ.get("QUEUE_STALE_SECONDS", "10"))
    except ValueError:
        return 10.0


def _utc(value: datetime) -> datetime:
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


def _clamp01(value: float | None) -> float | None:
    return None if value is None else max(0.0, min(1.0, value))


# --- time series ---------------------------------------------------------------------------


_SERIES_COLUMNS = MEASURE_COLUMNS


def _floor(ts: datetime, step: timedelta) -> datetime:
    if step == MINUTE:
        return floor_minute(ts)
    if step == RESOLUTIONS["hour"]:
        return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def series_statement(
    *,
    start: datetime,
    end: datetime,
    resolution: str = "minute",
    by: str = "queue",
    queue: str | None = None,
    job_type: str | None = None,
) -> Select[Any]:
    """The one query behind :func:`time_series`: rollup rows only, by index range."""
    table = queue_metrics if by == "queue" else type_metrics
    columns = [table.c.timestamp, table.c.queue_name, *(table.c[c] for c in _SERIES_COLUMNS)]
    if by == "queue":  # positions _EXTRA.._EXTRA + 3
        columns += [table.c.depth, table.c.worker_count, table.c.worker_slots, table.c.utilization]
    else:
        columns.append(table.c.job_type)
    if resolution != "minute":  # always the last two
        columns += [table.c.processing_hist, table.c.wait_hist]
    stmt = select(*columns).where(table.c.timestamp >= start, table.c.timestamp < end)
    if queue is not None:
        stmt = stmt.where(table.c.queue_name == queue)
    if by == "type" and job_type is not None:
        stmt = stmt.where(table.c.job_type == job_type)
    order = [table.c.queue_name, table.c.timestamp] if queue is None else [table.c.timestamp]
    return stmt.order_by(*order)


def time_series(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    resolution: str = "minute",
    by: str = "queue",
    queue: str | None = None,
    job_type: str | None = None,
) -> list[dict[str, Any]]:
    """Rollup rows in [start, end), resampled to ``resolution`` (UTC buckets), per queue
    (``by="queue"``) or per queue and job type (``by="type"``), ordered by bucket, queue, type.

    Reads only ``queue_metrics`` / ``queue_type_metrics``. ``job_type`` filters only
    ``by="type"``. Minute rows carry the exact stored percentiles; hour and day percentiles
    come from the merged log histograms (within 5 %).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    if by not in ("queue", "type"):
        raise ValueError("by must be 'queue' or 'type'")
    start, end = _utc(start), _utc(end)
    with read(engine) as conn:
        if resolution == "minute":
            stmt = series_statement(start=start, end=end, by=by, queue=queue, job_type=job_type)
            out = [_minute_row(r, by) for r in conn.execute(stmt).all()]
        else:
            step = RESOLUTIONS[resolution]
            out = _resampled(engine, conn, start, end, step, by, queue, job_type)
    out.sort(key=lambda d: (d["bucket"], d["queue_name"], d["job_type"] or ""))
    return out


# column positions in the rows of series_statement()
_TS, _QUEUE, _JOBS, _DONE, _FAILED, _ERRORS, _RETRIES, _PMEAN = range(8)
_P50, _P95, _P99, _W50, _W95, _W99, _BUSY, _EXTRA = range(8, 16)  # _EXTRA: depth or job_type


def _minute_row(r: Sequence[Any], by: str) -> dict[str, Any]:
    by_queue = by == "queue"
    jobs_n, errors, retries = r[_JOBS], r[_ERRORS], r[_RETRIES]
    return {
        "bucket": r[_TS],
        "queue_name": r[_QUEUE],
        "job_type": None if by_queue else r[_EXTRA],
        "job_count": jobs_n,
        "completed_count": r[_DONE],
        "failed_count": r[_FAILED],
        "error_count": errors,
        "retries": retries,
        "throughput": jobs_n / 60.0,
        "processing_mean_ms": r[_PMEAN],
        "processing_p50": r[_P50],
        "processing_p95": r[_P95],
        "processing_p99": r[_P99],
        "wait_p50": r[_W50],
        "wait_p95": r[_W95],
        "wait_p99": r[_W99],
        "depth": r[_EXTRA] if by_queue else None,
        "utilization": _clamp01(r[_EXTRA + 3]) if by_queue else None,
        "worker_count": r[_EXTRA + 1] if by_queue else None,
        "error_rate": error_rate(errors, jobs_n, retries),
    }


HOUR = timedelta(hours=1)
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def _hour_of(conn: Connection, column: Any) -> Any:
    """The UTC hour of a minute column, in SQL."""
    if conn.dialect.name == "postgresql":
        expr = func.date_bin(literal_column("interval '1 hour'"), column, literal_column(_ORIGIN))
    else:  # the stored text 'YYYY-MM-DD HH:MM:SS.ffffff'
        expr = func.substr(column, 1, 13).op("||")(literal_column("':00:00.000000'"))
    return type_coerce(expr, UTCDateTime())


def _is_last_minute(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.date_part("minute", func.timezone("UTC", column)) == 59
    return func.substr(column, 15, 2) == "59"


#: above this many hours the :59 rows are found by a filter on the minute (a scan of the range)
#: rather than by one index probe per hour
MAX_HOUR_PROBES = 10_000


def _full_hours(start: datetime, end: datetime) -> list[datetime]:
    """The hours that lie wholly inside [start, end) (UTC), in order."""
    first = _floor(start, HOUR)
    if first < start:
        first += HOUR
    count = max(0, int((end - first) / HOUR))
    return [first + i * HOUR for i in range(count)]


def _last_minute_of_full_hours(
    conn: Connection, column: Any, start: datetime, end: datetime
) -> Any:
    """The :59 minute rows of the hours wholly inside [start, end): only those carry an hour
    histogram the buckets can use. One index probe per hour (``ix_queue_metrics_timestamp``,
    ``ix_queue_type_metrics_timestamp``) instead of reading every minute row of the range."""
    hours = _full_hours(start, end)
    if len(hours) > MAX_HOUR_PROBES:
        return and_(column >= start, column < end, _is_last_minute(conn, column))
    return column.in_([h + 59 * MINUTE for h in hours])


def _key_filter(table: Any, by: str, queue: str | None, job_type: str | None) -> list[Any]:
    where = []
    if queue is not None:
        where.append(table.c.queue_name == queue)
    if by == "type" and job_type is not None:
        where.append(table.c.job_type == job_type)
    return where


def _series_filter(
    table: Any, start: datetime, end: datetime, by: str, queue: str | None, job_type: str | None
) -> list[Any]:
    return [
        table.c.timestamp >= start,
        table.c.timestamp < end,
        *_key_filter(table, by, queue, job_type),
    ]


def hourly_statements(
    conn: Connection,
    *,
    start: datetime,
    end: datetime,
    by: str = "queue",
    queue: str | None = None,
    job_type: str | None = None,
) -> tuple[Any, Any]:
    """The two queries behind hour and day buckets: sums per hour (with the depth of the
    hour's last row) and the hour histograms ``"h"`` of the :59 rows of the hours wholly in
    the range."""
    by_queue = by == "queue"
    table = queue_metrics if by_queue else type_metrics
    keys = [table.c.queue_name] if by_queue else [table.c.queue_name, table.c.job_type]
    where = _series_filter(table, start, end, by, queue, job_type)
    ts = table.c.timestamp
    measured = table.c.processing_time.is_not(None)
    cols: list[Any] = [
        _hour_of(conn, ts).label("hour"),
        *keys,
        func.sum(table.c.job_count).label("job_count"),
        func.sum(table.c.completed_count).label("completed_count"),
        func.sum(table.c.failed_count).label("failed_count"),
        func.sum(table.c.error_count).label("error_count"),
        func.sum(table.c.retries).label("retries"),
        func.sum(case((measured, table.c.processing_time * table.c.job_count), else_=0.0)).label(
            "weighted"
        ),
        func.sum(case((measured, table.c.job_count), else_=0)).label("weight"),
        (func.count(table.c.processing_p50) + func.count(table.c.wait_p50)).label("measured"),
        func.max(ts).label("last_ts"),
    ]
    if by_queue:
        has_slots = table.c.worker_slots > 0
        cols += [
            func.sum(case((has_slots, table.c.busy_seconds), else_=0.0)).label("busy"),
            (func.sum(table.c.worker_slots) * 60).label("slot_seconds"),  # no numeric sums
            func.max(table.c.worker_count).label("workers"),
        ]
    hourly = select(*cols).where(*where).group_by(*cols[: len(keys) + 1]).subquery()
    if by_queue:  # the depth of each hour's last row: one index probe per hour
        last = table.alias("last_row")
        depth = (
            select(last.c.depth)
            .where(last.c.queue_name == hourly.c.queue_name, last.c.timestamp == hourly.c.last_ts)
            .scalar_subquery()
            .label("depth")
        )
        stmt: Any = select(hourly, depth)
    else:
        stmt = select(hourly)
    last_minutes = select(ts, *keys, table.c.processing_hist["h"], table.c.wait_hist["h"]).where(
        *_key_filter(table, by, queue, job_type), _last_minute_of_full_hours(conn, ts, start, end)
    )
    return stmt, last_minutes


@dataclass
class _Hour:
    """The aggregates of one (hour, queue[, type]) from the hourly GROUP BY."""

    hour: datetime
    key: tuple[Any, ...]
    job_count: int
    completed_count: int
    failed_count: int
    error_count: int
    retries: int
    processing_weighted: float
    processing_weight: int
    measured_minutes: int
    last_ts: datetime
    busy_for_slots: float = 0.0
    slot_seconds: float = 0.0
    worker_count: int = 0
    depth: int | None = None


#: memory for the hourly GROUP BY (PostgreSQL): its group count is estimated from the minute
#: column (tens of thousands instead of one per hour and queue), so with the default 4 MB it
#: sorts on disk; with this it hashes the few real groups in memory
HOURLY_WORK_MEM = "32MB"


def _hour_sums(engine: Engine, stmt: Any) -> list[Any]:
    """The rows of the hourly GROUP BY, on a connection of their own (PostgreSQL)."""
    with transaction(engine) as conn:
        conn.execute(select(func.set_config("work_mem", HOURLY_WORK_MEM, True)))
        return list(conn.execute(stmt).all())


def _resampled(
    engine: Engine,
    conn: Connection,
    start: datetime,
    end: datetime,
    step: timedelta,
    by: str,
    queue: str | None,
    job_type: str | None,
) -> list[dict[str, Any]]:
    """Hour and day buckets: SQL sums per hour, then one histogram per hour (the ``"h"`` of
    its :59 row; minutes only for partial hours at the range's edges or hours without one).

    On PostgreSQL the sums per hour (a scan of the range, done by the database) are read on a
    second connection while this one reads and merges the hour histograms (JSON decoding,
    done here): the two take about as long, so a 30-day chart waits for the longer one only."""
    by_queue = by == "queue"
    table = queue_metrics if by_queue else type_metrics
    keys = [table.c.queue_name] if by_queue else [table.c.queue_name, table.c.job_type]
    ts = table.c.timestamp
    where = _series_filter(table, start, end, by, queue, job_type)
    stmt, last_minutes = hourly_statements(
        conn, start=start, end=end, by=by, queue=queue, job_type=job_type
    )
    # per (bucket, key): its hours and the merged processing and wait counts
    buckets: dict[tuple[datetime, tuple[Any, ...]], dict[str, Any]] = {}

    def bucket_of(hour: datetime, key: tuple[Any, ...]) -> dict[str, Any]:
        bkey = (_floor(hour, step), key)
        b = buckets.get(bkey)
        if b is None:
            b = buckets[bkey] = {"hours": [], "p": {}, "w": {}}
        return b

    with ExitStack() as stack:
        sums = None
        if conn.dialect.name == "postgresql":
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            sums = pool.submit(_hour_sums, engine, stmt)
        # one histogram per hour: the "h" of its :59 row when the whole hour is in the range
        with_hist: set[tuple[datetime, tuple[Any, ...]]] = set()
        for r in conn.execute(last_minutes).all():
            hour = r[0] - timedelta(minutes=59)
            if hour >= start and hour + HOUR <= end and (r[-2] is not None or r[-1] is not None):
                key = tuple(r[1:-2])
                with_hist.add((hour, key))
                b = bucket_of(hour, key)
                hist.merge_counts(b["p"], r[-2])
                hist.merge_counts(b["w"], r[-1])
        hour_rows = sums.result() if sums is not None else conn.execute(stmt).all()

    hours: list[_Hour] = []
    for r in hour_rows:
        m = r._mapping
        h = _Hour(
            hour=m["hour"],
            key=(m["queue_name"],) if by_queue else (m["queue_name"], m["job_type"]),
            job_count=int(m["job_count"] or 0),
            completed_count=int(m["completed_count"] or 0),
            failed_count=int(m["failed_count"] or 0),
            error_count=int(m["error_count"] or 0),
            retries=int(m["retries"] or 0),
            processing_weighted=float(m["weighted"] or 0.0),
            processing_weight=int(m["weight"] or 0),
            measured_minutes=int(m["measured"] or 0),
            last_ts=m["last_ts"],
        )
        if by_queue:
            h.busy_for_slots = float(m["busy"] or 0.0)
            h.slot_seconds = float(m["slot_seconds"] or 0.0)
            h.worker_count = int(m["workers"] or 0)
            h.depth = int(m["depth"])
        hours.append(h)
        bucket_of(h.hour, h.key)["hours"].append(h)

    # hours without an hour histogram: merge their minute histograms
    missing = sorted(
        {h.hour for h in hours if h.measured_minutes and (h.hour, h.key) not in with_hist}
    )
    if missing:
        if len(missing) > 48:
            ranges = [and_(ts >= start, ts < end)]
        else:
            ranges = [and_(ts >= max(h, start), ts < min(h + HOUR, end)) for h in missing]
        need = {(h.hour, h.key) for h in hours if (h.hour, h.key) not in with_hist}
        minute_rows = conn.execute(
            select(ts, *keys, table.c.processing_hist, table.c.wait_hist).where(
                *where, or_(*ranges)
            )
        ).all()
        for r in minute_rows:
            hour, key = _floor(r[0], HOUR), tuple(r[1:-2])
            if (hour, key) in need:
                b = bucket_of(hour, key)
                hist.merge_raw(b["p"], r[-2])
                hist.merge_raw(b["w"], r[-1])

    # roll the hours up into the buckets
    newest = max((h.last_ts for h in hours), default=None)
    covered_end = min(end, newest + MINUTE) if newest is not None else end
    out = []
    for (bucket, key), b in buckets.items():
        group: list[_Hour] = b["hours"]
        if not group:  # (a :59 row always has its hour; nothing to show without one)
            continue
        job_count = sum(h.job_count for h in group)
        error_count = sum(h.error_count for h in group)
        retries = sum(h.retries for h in group)
        weight = sum(h.processing_weight for h in group)
        slot_seconds = sum(h.slot_seconds for h in group)
        seconds = (min(bucket + step, covered_end) - max(bucket, start)).total_seconds()
        pc, wc = hist.int_keys(b["p"]), hist.int_keys(b["w"])
        last = max(group, key=lambda h: h.last_ts)
        out.append(
            {
                "bucket": bucket,
                "queue_name": key[0],
                "job_type": None if by_queue else key[1],
                "job_count": job_count,
                "completed_count": sum(h.completed_count for h in group),
                "failed_count": sum(h.failed_count for h in group),
                "error_count": error_count,
                "retries": retries,
                "throughput": job_count / seconds if seconds > 0 else None,
                "processing_mean_ms": (
                    sum(h.processing_weighted for h in group) / weight if weight else None
                ),
                "processing_p50": hist.quantile(pc, 0.5),
                "processing_p95": hist.quantile(pc, 0.95),
                "processing_p99": hist.quantile(pc, 0.99),
                "wait_p50": hist.quantile(wc, 0.5),
                "wait_p95": hist.quantile(wc, 0.95),
                "wait_p99": hist.quantile(wc, 0.99),
                "depth": last.depth if by_queue else None,
                "utilization": (
                    _clamp01(sum(h.busy_for_slots for h in group) / slot_seconds)
                    if by_queue and slot_seconds
                    else None
                ),
                "worker_count": max(h.worker_count for h in group) if by_queue else None,
                "error_rate": error_rate(error_count, job_count, retries),
            }
        )
    return out


# --- window totals from the rollups -----------------------------------------------------------


@dataclass
class _Totals:
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


def _totals(
    conn: Connection, since: datetime, until: datetime, queue: str | None = None, hists: bool = True
) -> _Totals:
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
    t = _Totals()
    seen: set[datetime] = set()
    depth_by_minute: dict[datetime, int] = {}
    processing_acc: dict[str, int] = {}
    wait_acc: dict[str, int] = {}
    for r in conn.execute(stmt).all():
        (ts, jobs_n, done, failed, errors, retries, mean, busy, slots, depth) = r[:10]
        seen.add(ts)
        t.first = ts if t.first is None else t.first
        t.job_count += jobs_n
        t.completed_count += done
        t.failed_count += failed
        t.error_count += errors
        t.retries += retries
        if mean is not None and jobs_n:
            t.processing_weighted += mean * jobs_n
            t.processing_weight += jobs_n
        if slots:
            t.busy_for_slots += busy
            t.slot_seconds += slots * 60.0
        depth_by_minute[ts] = depth_by_minute.get(ts, 0) + depth
        if hists:
            hist.merge_raw(processing_acc, r[10])
            hist.merge_raw(wait_acc, r[11])
    t.processing_counts = hist.int_keys(processing_acc)
    t.wait_counts = hist.int_keys(wait_acc)
    t.minutes = len(seen)
    if depth_by_minute:
        ordered = sorted(depth_by_minute)
        t.depth_first, t.depth_last = depth_by_minute[ordered[0]], depth_by_minute[ordered[-1]]
    return t


# --- capacity ----------------------------------------------------------------------------------


def capacity(
    engine: Engine,
    *,
    queue: str,
    window_minutes: int = 60,
    target_p95_wait_seconds: float = 5.0,
    load_factor: float = 1.0,
) -> dict[str, Any]:
    """Erlang C (M/M/c) view of one queue over the last ``window_minutes`` rolled-up minutes.

    ``arrival_rate`` = (finished jobs + retried attempts + growth of the depth) / seconds since
    the window's first row; ``mean_service_seconds`` = mean processing time; ``live_slots`` =
    the slots of the live workers serving the queue credited to it (:func:`credited_slots`:
    a worker serving several queues shares its slots between them), rounded for the model
    (at least 1 when any). ``utilization`` = arrival * service * load_factor / credited slots;
    ``p95_wait_seconds`` = the M/M/c 95th percentile wait with the live slots at the scaled
    load (None when unstable or unknown); ``workers_needed`` = the fewest slots meeting
    ``target_p95_wait_seconds`` at the scaled load (in slots, i.e. worker concurrency).
    """
    if window_minutes < 1:
        raise ValueError("window_minutes must be at least 1")
    if load_factor < 0:
        raise ValueError("load_factor must be >= 0")
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        t = _totals(conn, until - window_minutes * MINUTE, until, queue, hists=False)
        credited = credited_slots(conn, now, until - window_minutes * MINUTE, until).get(queue)
    credited_n = credited.credited if credited is not None else 0.0
    slots = 0 if credited_n <= 0 else max(1, round(credited_n))
    seconds = (until - t.first).total_seconds() if t.first is not None else 0.0
    growth = max(0, (t.depth_last or 0) - (t.depth_first or 0))
    arrival = (t.job_count + t.retries + growth) / seconds if seconds > 0 else 0.0
    mean_ms = t.processing_mean_ms
    service = mean_ms / 1000.0 if mean_ms is not None else None
    scaled = arrival * load_factor
    offered = scaled * service if service is not None else None
    p95 = None
    needed: int | None = None
    if service is not None and service > 0:
        rate = 1.0 / service
        if slots > 0:
            w = wait_percentile(slots, scaled, rate, 0.95)
            p95 = None if math.isinf(w) else w
        needed = servers_needed(scaled, rate, 0.95, target_p95_wait_seconds)
    elif scaled == 0:
        needed = 0
    return {
        "queue": queue,
        "arrival_rate": arrival,
        "mean_service_seconds": service,
        "live_slots": slots,
        "utilization": (offered / credited_n) if (offered is not None and credited_n) else None,
        "p95_wait_seconds": p95,
        "workers_needed": needed,
        "load_factor": load_factor,
    }


@dataclass
class QueueSlots:
    """The live worker slots of one queue: ``serving`` (every slot of every live worker that
    serves it, shared ones included) and ``credited`` (its share of them)."""

    workers: int = 0
    serving: int = 0
    credited: float = 0.0


def credited_slots(
    conn: Connection, now: datetime, since: datetime, until: datetime
) -> dict[str, QueueSlots]:
    """Per queue, the slots of the live workers that serve it, and the share credited to it.

    A worker serving one queue gives it all its slots. A worker serving several shares its
    slots between them in proportion to the handler time each used in [since, until) (the
    rollups' ``busy_seconds``), equally when none was used; so the credited slots of all
    queues add up to the live slots, never more."""
    rows = conn.execute(
        select(workers.c.queues, workers.c.concurrency).where(
            workers.c.status == "running",
            workers.c.last_heartbeat >= now - timedelta(seconds=_stale_seconds()),
        )
    ).all()
    busy: dict[str, float] = {}
    if any(len(queues or []) > 1 for queues, _ in rows):
        busy = {
            name: float(total or 0.0)
            for name, total in conn.execute(
                select(queue_metrics.c.queue_name, func.sum(queue_metrics.c.busy_seconds))
                .where(queue_metrics.c.timestamp >= since, queue_metrics.c.timestamp < until)
                .group_by(queue_metrics.c.queue_name)
            )
        }
    out: dict[str, QueueSlots] = {}
    for queues, concurrency in rows:
        served = list(dict.fromkeys(queues or []))
        if not served:
            continue
        weights = [max(0.0, busy.get(q, 0.0)) for q in served]
        total = sum(weights)
        for q, weight in zip(served, weights, strict=True):
            share = weight / total if total > 0 else 1.0 / len(served)
            entry = out.setdefault(q, QueueSlots())
            entry.workers += 1
            entry.serving += int(concurrency)
            entry.credited += int(concurrency) * share
    return out


#: fewer finished jobs than this in the window: the page says "not enough data"
MIN_JOBS_FOR_CAPACITY = 20


def capacity_measured(engine: Engine, *, queue: str, window_minutes: int = 60) -> dict[str, Any]:
    """What the rollups measured for one queue over the window, next to :func:`capacity`'s
    model: ``finished_jobs``, ``measured_p95_wait_seconds`` (from the wait histograms; None
    without data), the live slots ``serving`` it and ``credited`` to it, and ``enough_data``
    (at least ``MIN_JOBS_FOR_CAPACITY`` jobs finished with a measured processing time)."""
    if window_minutes < 1:
        raise ValueError("window_minutes must be at least 1")
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        since = until - window_minutes * MINUTE
        t = _totals(conn, since, until, queue)
        slots = credited_slots(conn, now, since, until).get(queue, QueueSlots())
    p95_ms = hist.quantile(t.wait_counts, 0.95)
    return {
        "queue": queue,
        "finished_jobs": t.job_count,
        "measured_p95_wait_seconds": None if p95_ms is None else p95_ms / 1000.0,
        "serving_workers": slots.workers,
        "serving_slots": slots.serving,
        "credited_slots": slots.credited,
        "enough_data": t.job_count >= MIN_JOBS_FOR_CAPACITY and t.processing_weight > 0,
    }


# --- success criteria and KPIs -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One success criterion: the measured value must be ``comparison`` ``threshold``."""

    key: str
    label: str
    unit: str
    comparison: str  # "<" or ">"
    default: float
    env: str  # the setting that overrides ``default``


#: the mission's five targets, in its order; each configurable by its environment variable
TARGETS = (
    Target(
        "p95_processing",
        "Job processing time (p95)",
        "ms",
        "<",
        1000.0,
        "QUEUE_TARGET_PROCESSING_MS",
    ),
    Target("p95_wait", "Queue latency (p95 wait)", "ms", "<", 100.0, "QUEUE_TARGET_LATENCY_MS"),
    Target("utilization", "Worker utilization", "%", ">", 80.0, "QUEUE_TARGET_UTILIZATION_PCT"),
    Target("error_rate", "Error rate", "%", "<", 0.1, "QUEUE_TARGET_ERROR_RATE_PCT"),
    Target("completion_rate", "Completion rate", "%", ">", 99.9, "QUEUE_TARGET_COMPLETION_PCT"),
)


def target_threshold(target: Target) -> float:
    """The threshold of ``target``: its environment variable, else the mission's default.
    A percentage must lie in [0, 100], a time be positive; anything else raises ValueError
    naming the variable."""
    text = os.environ.get(target.env, "").strip()
    if not text:
        return target.default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    valid = 0 <= value <= 100 if target.unit == "%" else value > 0
    if not (math.isfinite(value) and valid):
        bounds = "a percentage from 0 to 100" if target.unit == "%" else "a time in ms above 0"
        raise ValueError(f"{target.env} must be {bounds}, got {text!r}")
    return value


def success_criteria(engine: Engine, *, window_minutes: int = 60) -> list[dict[str, Any]]:
    """The mission's success criteria (``TARGETS``) over the last ``window_minutes``
    rolled-up minutes of all queues: each with its measured ``value`` (None: no data),
    ``threshold``, ``comparison`` and ``ok`` (True met, False missed, None no data). Rates and
    utilization are in percent, times in milliseconds."""
    thresholds = {t.key: target_threshold(t) for t in TARGETS}
    with read(engine) as conn:
        until = floor_minute(db_clock(conn))
        t = _totals(conn, until - window_minutes * MINUTE, until)
    finished = t.completed_count + t.failed_count
    rate = error_rate(t.error_count, t.job_count, t.retries)
    utilization = t.utilization
    measured = {
        "p95_processing": hist.quantile(t.processing_counts, 0.95),
        "p95_wait": hist.quantile(t.wait_counts, 0.95),
        "utilization": None if utilization is None else 100.0 * min(1.0, utilization),
        "error_rate": None if rate is None else 100.0 * rate,
        "completion_rate": 100.0 * t.completed_count / finished if finished else None,
    }
    out = []
    for target in TARGETS:
        value, threshold = measured[target.key], thresholds[target.key]
        ok = None
        if value is not None:
            ok = value < threshold if target.comparison == "<" else value > threshold
        out.append(
            {
                "key": target.key,
                "label": target.label,
                "value": value,
                "unit": target.unit,
                "threshold": threshold,
                "comparison": target.comparison,
                "ok": ok,
            }
        )
    return out


def overview_kpis(engine: Engine) -> dict[str, Any]:
    """Headline numbers: waiting/running/live workers now (indexed counts), the rest from the
    rollups (throughput: last 5 minutes; p95 wait: last 15; failures and error rate: last 60)."""
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        waiting = sum(current_depth(conn, now).values())
        running = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
        ).scalar_one()
        live = conn.execute(
            select(func.count())
            .select_from(workers)
            .where(
                workers.c.status == "running",
                workers.c.last_heartbeat >= now - timedelta(seconds=_stale_seconds()),
            )
        ).scalar_one()
        hour = _totals(conn, until - 60 * MINUTE, until, hists=False)
        recent = _totals(conn, until - 5 * MINUTE, until, hists=False)
        quarter = _totals(conn, until - 15 * MINUTE, until)
    return {
        "waiting": int(waiting),
        "running": int(running),
        "failed_last_hour": hour.failed_count,
        "throughput_per_s": recent.job_count / 300.0 if recent.minutes else None,
        "p95_wait_ms": hist.quantile(quarter.wait_counts, 0.95),
        "error_rate": error_rate(hour.error_count, hour.job_count, hour.retries),
        "live_workers": int(live),
    }


# --- error groups --------------------------------------------------------------------------------

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+?)\s*$')
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
_FRAMEWORK = re.compile(
    r"(site-packages|dist-packages|/lib/python\d+(\.\d+)?/|<frozen |/huey/|tasks/worker\.py$)"
)
MAX_GROUP_JOB_IDS = 1000
MAX_CANDIDATE_JOBS = 20_000


@dataclass(frozen=True)
class Fingerprint:
    fingerprint: str
    exception_type: str
    location: str | None


@lru_cache(maxsize=4096)
def _top_frame(frames_text: str) -> tuple[str, str, str] | None:
    """The handler's frame in the frame lines of a traceback (cached: one code path fails
    the same way many times)."""
    frames = [m for m in map(_FRAME.match, frames_text.splitlines()) if m]
    own = [f for f in frames if not _FRAMEWORK.search(f["file"])]
    chosen = own[-1] if own else (frames[-1] if frames else None)
    return None if chosen is None else (chosen["file"], chosen["line"], chosen["func"])


def fingerprint(entry: dict[str, Any]) -> Fingerprint:
    """Exception type + the handler's top frame (the last frame outside the standard library,
    site-packages, Huey and the worker runtime); line numbers are not part of the hash, so a
    group survives edits above the failing line."""
    error = str(entry.get("error") or "")
    tb = entry.get("traceback")
    if entry.get("kind") == "rescued" or (not tb and error.startswith("Rescued:")):
        reason = error.removeprefix("Rescued:").strip() or "rescued"
        digest = hashlib.sha1(f"Rescued|{reason}".encode()).hexdigest()[:16]
        return Fingerprint(digest, "Rescued", f"rescuer: {reason}")
    exc_type = None
    frame = None
    if isinstance(tb, str) and tb:
        lines = tb.rstrip().splitlines()
        # the exception line(s) come after the last frame; they carry the varying message
        last_frame = max((i for i, line in enumerate(lines) if _FRAME.match(line)), default=-1)
        frame = _top_frame("\n".join(lines[: last_frame + 1]))
        for line in reversed(lines[last_frame + 1 :]):
            if line and not line[0].isspace():
                m = _EXC_LINE.match(line.strip())
                if m:
                    exc_type = m["type"]
                    break
    if exc_type is None:
        m = _EXC_LINE.match(error.split("\n", 1)[0])
        exc_type = m["type"] if m and m["msg"] is not None else "Error"
    location = f"{frame[0]}:{frame[1]} in {frame[2]}" if frame else None
    key = f"{exc_type}|{frame[0]}|{frame[2]}" if frame else f"{exc_type}|"
    return Fingerprint(hashlib.sha1(key.encode()).hexdigest()[:16], exc_type, location)


def _entry_at(entry: dict[str, Any]) -> datetime | None:
    at = entry.get("at")
    if not isinstance(at, str):
        return None
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def error_groups(
    engine: Engine,
    *,
    since: datetime,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Error entries since ``since`` grouped by fingerprint, most frequent first.

    Reads the jobs that failed since ``since`` and the jobs in flight that carry errors (at
    most 20,000 jobs, newest first); entries of jobs that later completed are not included
    (they are counted in the rollups' ``error_count``). ``job_ids`` are the jobs currently
    ``failed`` whose last error is in the group (at most 1,000), for a bulk retry.
    """
    since = _utc(since)
    nonempty = (
        func.jsonb_array_length(jobs.c.errors) > 0
        if engine.dialect.name == "postgresql"
        else func.json_array_length(jobs.c.errors) > 0
    )
    stmt = (
        select(jobs.c.id, jobs.c.status, jobs.c.errors)
        .where(
            or_(
                and_(jobs.c.status == JobStatus.FAILED.value, jobs.c.finished_at >= since),
                and_(jobs.c.status.in_(IN_FLIGHT), jobs.c.updated_at >= since),
            ),
            nonempty,
        )
        .order_by(jobs.c.updated_at.desc())
        .limit(MAX_CANDIDATE_JOBS)
    )
    if queue is not None:
        stmt = stmt.where(jobs.c.queue == queue)
    if job_type is not None:
        stmt = stmt.where(jobs.c.type == job_type)
    with read(engine) as conn:
        rows = conn.execute(stmt).all()
    groups: dict[str, dict[str, Any]] = {}
    for job_id, status, errors in rows:
        last_group = None
        for entry in errors or []:
            if not isinstance(entry, dict) or entry.get("kind") not in (None, "error", "rescued"):
                continue
            fp = fingerprint(entry)
            last_group = fp.fingerprint
            at = _entry_at(entry)
            if at is None or at < since:
                continue
            g = groups.get(fp.fingerprint)
            if g is None:
                g = groups[fp.fingerprint] = {
                    "fingerprint": fp.fingerprint,
                    "exception_type": fp.exception_type,
                    "location": fp.location,
                    "message_sample": str(entry.get("error") or "")[:500],
                    "count": 0,
                    "first_seen": at,
                    "last_seen": at,
                    "example_job_id": job_id,
                    "job_ids": [],
                }
            g["count"] += 1
            g["first_seen"] = min(g["first_seen"], at)
            if at > g["last_seen"]:  # the newest occurrence is the sample
                g["last_seen"] = at
                g["message_sample"] = str(entry.get("error") or "")[:500]
                g["example_job_id"] = job_id
                g["location"] = fp.location
        if status == JobStatus.FAILED and last_group in groups:
            ids = groups[last_group]["job_ids"]
            if len(ids) < MAX_GROUP_JOB_IDS:
                ids.append(job_id)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_seen"].timestamp()))
    return ordered[: max(0, limit)]


# --- periodic health -----------------------------------------------------------------------------


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
        clock = _utc(now) if now is not None else db_clock(conn)
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
            if paused and state.paused_at is not None:
                due = [t for t in due if t < _utc(state.paused_at)]
            skipped = state.last_skipped_tick if state is not None else None
            skipped = _utc(skipped) if skipped is not None else None
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


# --- the Queues page ---------------------------------------------------------------------------


@dataclass
class QueueCount:
    """Jobs of one queue in some statuses: ``n``, exact or (``exact`` False) a lower bound."""

    n: int = 0
    exact: bool = True

    def add(self, n: int, exact: bool) -> None:
        self.n += n
        self.exact = self.exact and exact


#: statuses held back by workflow dependencies, where the ledger has them (``states.BLOCKED``)
BLOCKED_STATUSES = sorted_values(getattr(states, "BLOCKED", frozenset()))
#: the live counts of a Queues row
QUEUE_COUNT_KINDS = ("waiting", "scheduled", "running", *(("blocked",) if BLOCKED_STATUSES else ()))


def _live_counts(
    conn: Connection, cap: int, queues: Iterable[str]
) -> dict[str, dict[str, QueueCount]]:
    """Per queue: ``waiting`` (queued or dispatched), ``scheduled`` (scheduled or retrying:
    waiting for their due time), ``running`` and, with workflows, ``blocked`` (held back by
    dependencies), each exact up to ``cap`` jobs of a status."""
    groups = {
        JobStatus.QUEUED.value: "waiting",
        JobStatus.DISPATCHED.value: "waiting",
        JobStatus.SCHEDULED.value: "scheduled",
        JobStatus.RETRYING.value: "scheduled",
        JobStatus.RUNNING.value: "running",
        **dict.fromkeys(BLOCKED_STATUSES, "blocked"),
    }
    counted = queries.queue_status_counts(conn, cap, tuple(groups))
    queued, queued_exact = counted[JobStatus.QUEUED.value]
    if not queued_exact:  # more than ``cap`` queued jobs: count each queue on its own
        exact = queries.queued_per_queue(conn, sorted(set(queued) | set(queues)), cap)
        counted[JobStatus.QUEUED.value] = (exact, True)
        capped = {q for q, n in exact.items() if n > cap}
    else:
        capped = set()
    out: dict[str, dict[str, QueueCount]] = {}
    for status, (by_queue, exact_counts) in counted.items():
        for queue, n in by_queue.items():
            if n == 0:
                continue
            row = out.setdefault(queue, {name: QueueCount() for name in QUEUE_COUNT_KINDS})
            over = status == JobStatus.QUEUED.value and queue in capped
            row[groups[status]].add(min(n, cap) if over else n, exact_counts and not over)
    return out


def queue_summary(
    engine: Engine, *, queues: Iterable[str] = (), cap: int = 10_000
) -> list[dict[str, Any]]:
    """One row per queue (``queues`` and every queue that has live jobs or live workers):
    live counts, the last hour's failures, p95 wait (last 15 minutes), throughput (last 5
    minutes) and the live workers serving it with their slots.

    The counts read at most ``cap + 1`` index entries per status (exact up to ``cap``, then a
    lower bound: ``*_exact`` False); the rest comes from the rollups and the workers table, so
    the cost does not grow with the number of jobs."""
    queues = list(queues)
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        serving = live_workers(conn, now, _stale_seconds())
        counts = _live_counts(conn, cap, [*queues, *serving])
        rows = conn.execute(
            select(
                queue_metrics.c.queue_name,
                queue_metrics.c.timestamp,
                queue_metrics.c.job_count,
                queue_metrics.c.failed_count,
                queue_metrics.c.wait_hist,
            ).where(
                queue_metrics.c.timestamp >= until - 60 * MINUTE,
                queue_metrics.c.timestamp < until,
            )
        ).all()
    failed: dict[str, int] = {}
    recent: dict[str, int] = {}
    waits: dict[str, dict[str, int]] = {}
    any_recent = False
    for name, ts, job_count, failed_count, wait_hist in rows:
        failed[name] = failed.get(name, 0) + int(failed_count or 0)
        if ts >= until - 5 * MINUTE:
            any_recent = True
            recent[name] = recent.get(name, 0) + int(job_count or 0)
        if wait_hist is not None and ts >= until - 15 * MINUTE:
            hist.merge_raw(waits.setdefault(name, {}), wait_hist)
    names = sorted(set(queues) | set(counts) | set(serving))
    out = []
    for name in names:
        live = counts.get(name, {})
        workers_n, slots = serving.get(name, (0, 0))
        row: dict[str, Any] = {"queue": name}
        for kind in QUEUE_COUNT_KINDS:
            c = live.get(kind, QueueCount())
            row[kind], row[f"{kind}_exact"] = c.n, c.exact
        row.update(
            failed_last_hour=failed.get(name, 0) if rows else None,
            p95_wait_ms=hist.quantile(hist.int_keys(waits.get(name, {})), 0.95),
            throughput_per_s=recent.get(name, 0) / 300.0 if any_recent else None,
            workers=workers_n,
            slots=slots,
        )
        out.append(row)
    return out


# --- is a maintainer alive? ---------------------------------------------------------------------


def maintainer_signal(engine: Engine) -> dict[str, Any]:
    """Whether a maintainer runs: the heartbeats in ``queue_maintainers`` (each maintainer
    writes its own every ``QUEUE_HEARTBEAT_SECONDS``). ``live``: maintainers whose heartbeat
    is younger than ``QUEUE_STALE_SECONDS`` and that did not stop; ``alive``: at least one;
    ``last_seen``/``age_seconds``: the newest heartbeat of any (None: none ever ran here)."""
    with read(engine) as conn:
        now = db_clock(conn)
        found = maintainers.newest(conn, _stale_seconds())
    last = found["last_seen"]
    age = None if last is None else max(0.0, (now - last).total_seconds())
    return {
        "live": found["live"],
        "last_seen": last,
        "age_seconds": age,
        "alive": found["live"] > 0,
    }
