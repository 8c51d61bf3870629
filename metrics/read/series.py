"""Read model of the charts: :func:`time_series`, drawn by the Metrics page (every range and
resolution) and by the Overview's last-hour chart.

Charts read only the rollup tables. Minutes are the stored ``queue_metrics`` /
``queue_type_metrics`` rows. Hours and days are resampled: the sums per hour come from the
minute rows (one GROUP BY), the percentiles from merged histograms, one per hour from the hourly
tables (``queue_metrics_hourly`` / ``queue_type_metrics_hourly``) for every hour wholly inside
the range, and the minute histograms for the partial hours at its edges.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Table,
    and_,
    case,
    func,
    or_,
    select,
)

from db.driver import driver_for
from db.engine import read, transaction
from db.models import HourlyMetric, HourlyTypeMetric, Metric, TypeMetric
from db.types import utc_hour
from metrics import hist
from metrics.read.common import aware_utc, clamp01, error_rate
from metrics.rollup import HOUR, MEASURE_COLUMNS, MINUTE, floor_hour, floor_minute, named_rows

queue_metrics = Metric.__table__
type_metrics = TypeMetric.__table__
queue_hourly = HourlyMetric.__table__
type_hourly = HourlyTypeMetric.__table__

RESOLUTIONS = {"minute": MINUTE, "hour": HOUR, "day": timedelta(days=1)}
LAST_MINUTE = timedelta(minutes=59)  # of an hour

HourKey = tuple[datetime, tuple[str, ...]]  # (hour, queue[, type])


def _tables(by: str) -> tuple[Table, Table]:
    """The minute table and the hourly table of ``by``."""
    return (queue_metrics, queue_hourly) if by == "queue" else (type_metrics, type_hourly)


def _key_of(row: Row[Any], by: str) -> tuple[str, ...]:
    return (row.queue_name,) if by == "queue" else (row.queue_name, row.job_type)


def _floor(ts: datetime, step: timedelta) -> datetime:
    if step == MINUTE:
        return floor_minute(ts)
    if step == HOUR:
        return floor_hour(ts)
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
    table, _ = _tables(by)
    columns = [table.c.timestamp, table.c.queue_name, *(table.c[c] for c in MEASURE_COLUMNS)]
    if by == "queue":
        columns += [table.c.depth, table.c.worker_count, table.c.worker_slots, table.c.utilization]
    else:
        columns.append(table.c.job_type)
    if resolution != "minute":
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

    Reads only the rollup tables. ``job_type`` filters only ``by="type"``. Minute rows carry
    the exact stored percentiles; hour and day percentiles come from the merged log
    histograms (within 9.1 %, ``metrics.hist``).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    if by not in ("queue", "type"):
        raise ValueError("by must be 'queue' or 'type'")
    start, end = aware_utc(start), aware_utc(end)
    with read(engine) as conn:
        if resolution == "minute":
            stmt = series_statement(start=start, end=end, by=by, queue=queue, job_type=job_type)
            out = [_minute_row(r, by) for r in named_rows(conn.execute(stmt))]
        else:
            step = RESOLUTIONS[resolution]
            out = _resampled(engine, conn, start, end, step, by, queue, job_type)
    out.sort(key=lambda d: (d["bucket"], d["queue_name"], d["job_type"] or ""))
    return out


def _minute_row(r: dict[str, Any], by: str) -> dict[str, Any]:
    by_queue = by == "queue"
    jobs_n, errors, retries = r["job_count"], r["error_count"], r["retries"]
    return {
        "bucket": r["timestamp"],
        "queue_name": r["queue_name"],
        "job_type": None if by_queue else r["job_type"],
        "job_count": jobs_n,
        "completed_count": r["completed_count"],
        "failed_count": r["failed_count"],
        "error_count": errors,
        "retries": retries,
        "throughput": jobs_n / 60.0,
        "processing_mean_ms": r["processing_time"],
        "processing_p50": r["processing_p50"],
        "processing_p95": r["processing_p95"],
        "processing_p99": r["processing_p99"],
        "wait_p50": r["wait_p50"],
        "wait_p95": r["wait_p95"],
        "wait_p99": r["wait_p99"],
        "depth": r["depth"] if by_queue else None,
        "utilization": clamp01(r["utilization"]) if by_queue else None,
        "worker_count": r["worker_count"] if by_queue else None,
        "error_rate": error_rate(errors, jobs_n, retries),
    }


def _full_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[first, last): the hours that lie wholly inside [start, end) (UTC); empty when
    ``first >= last``."""
    first = floor_hour(start)
    if first < start:
        first += HOUR
    return first, max(first, floor_hour(end))


def _key_filter(table: Table, by: str, queue: str | None, job_type: str | None) -> list[Any]:
    where = []
    if queue is not None:
        where.append(table.c.queue_name == queue)
    if by == "type" and job_type is not None:
        where.append(table.c.job_type == job_type)
    return where


def _series_filter(
    table: Table, start: datetime, end: datetime, by: str, queue: str | None, job_type: str | None
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
) -> tuple[Select[Any], Select[Any]]:
    """The two queries behind hour and day buckets: sums per hour of the minute rows (with
    the depth of the hour's last row) and the hourly histograms of the hours wholly in the
    range (one index range of the hourly table)."""
    by_queue = by == "queue"
    table, hourly_table = _tables(by)
    keys = [table.c.queue_name] if by_queue else [table.c.queue_name, table.c.job_type]
    where = _series_filter(table, start, end, by, queue, job_type)
    ts = table.c.timestamp
    measured = table.c.processing_time.is_not(None)
    cols: list[Any] = [
        utc_hour(ts).label("hour"),
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
        stmt: Select[Any] = select(hourly, depth)
    else:
        stmt = select(hourly)
    first, last_hour = _full_hours(start, end)
    hour = hourly_table.c.hour
    hour_hists = select(
        hour,
        *(hourly_table.c[k.name] for k in keys),
        hourly_table.c.processing_hist,
        hourly_table.c.wait_hist,
    ).where(*_key_filter(hourly_table, by, queue, job_type), hour >= first, hour < last_hour)
    return stmt, hour_hists


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


def _newest_minute(conn: Connection) -> datetime | None:
    """The newest rolled-up minute (of any queue): one probe of ``ix_queue_metrics_timestamp``."""
    newest: datetime | None = conn.execute(select(func.max(queue_metrics.c.timestamp))).scalar()
    return newest


def _hour_sums(engine: Engine, stmt: Select[Any]) -> list[Row[Any]]:
    """The rows of the hourly GROUP BY, on a connection of their own (``server_process``:
    PostgreSQL, whose per-operation memory ``work_mem`` this transaction raises)."""
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
    """Hour and day buckets: SQL sums per hour, then one histogram per hour (its hourly row;
    minute rows only for partial hours at the range's edges or hours without one).

    Where the database is a server process (the driver's ``server_process``: PostgreSQL) the
    sums per hour (a scan of the range, done by the database) are read on a second connection
    while this one reads and merges the hour histograms (JSON decoding, done here): the two
    take about as long, so a 30-day chart waits for the longer one only."""
    by_queue = by == "queue"
    table, _ = _tables(by)
    keys = [table.c.queue_name] if by_queue else [table.c.queue_name, table.c.job_type]
    ts = table.c.timestamp
    where = _series_filter(table, start, end, by, queue, job_type)
    stmt, hour_hists = hourly_statements(
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
        if driver_for(conn).server_process:  # the server sums while this thread decodes
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            sums = pool.submit(_hour_sums, engine, stmt)
        # one histogram per hour wholly in the range: its hourly row
        with_hist: set[HourKey] = set()
        for r in conn.execute(hour_hists):
            if r.processing_hist is None and r.wait_hist is None:
                continue
            key = _key_of(r, by)
            with_hist.add((r.hour, key))
            b = bucket_of(r.hour, key)
            hist.merge_raw(b["p"], r.processing_hist)
            hist.merge_raw(b["w"], r.wait_hist)
        hour_rows = sums.result() if sums is not None else conn.execute(stmt).all()
        rolled_up = _newest_minute(conn) if with_hist else None

    hours: list[_Hour] = []
    for r in hour_rows:
        h = _Hour(
            hour=r.hour,
            key=_key_of(r, by),
            job_count=int(r.job_count or 0),
            completed_count=int(r.completed_count or 0),
            failed_count=int(r.failed_count or 0),
            error_count=int(r.error_count or 0),
            retries=int(r.retries or 0),
            processing_weighted=float(r.weighted or 0.0),
            processing_weight=int(r.weight or 0),
            measured_minutes=int(r.measured or 0),
            last_ts=r.last_ts,
        )
        if by_queue:
            h.busy_for_slots = float(r.busy or 0.0)
            h.slot_seconds = float(r.slot_seconds or 0.0)
            h.worker_count = int(r.workers or 0)
            h.depth = int(r.depth)
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
            hour, key = floor_hour(r.timestamp), _key_of(r, by)
            if (hour, key) in need:
                b = bucket_of(hour, key)
                hist.merge_raw(b["p"], r.processing_hist)
                hist.merge_raw(b["w"], r.wait_hist)

    # roll the hours up into the buckets; the data is covered up to the newest minute of the
    # rows read, and to the end of every hour read whose last minute is rolled up
    newest = max((h.last_ts for h in hours), default=None)
    if rolled_up is not None:
        ended = [h + LAST_MINUTE for h, _ in with_hist if h + LAST_MINUTE <= rolled_up]
        newest = max([*ended, *([newest] if newest is not None else [])], default=None)
    covered_end = min(end, newest + MINUTE) if newest is not None else end
    out = []
    for (bucket, key), b in buckets.items():
        group: list[_Hour] = b["hours"]
        if not group:  # an hourly row whose minute rows are gone: nothing to show
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
                    clamp01(sum(h.busy_for_slots for h in group) / slot_seconds)
                    if by_queue and slot_seconds
                    else None
                ),
                "worker_count": max(h.worker_count for h in group) if by_queue else None,
                "error_rate": error_rate(error_count, job_count, retries),
            }
        )
    return out
