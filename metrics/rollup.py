"""The metrics rollup: one ``queue_metrics`` row per queue per minute and one
``queue_type_metrics`` row per queue, job type and minute, recomputed idempotently.

Every run recomputes the last ``minutes`` complete minutes (default 5) from ``queue_jobs`` and
writes them with ``INSERT … ON CONFLICT DO UPDATE``: running it twice changes nothing, and a
job whose finish commits late still lands in its minute on the next run. The current,
unfinished minute is never written. Definitions (docs/metrics.md has the full text):

- ``job_count`` jobs whose ``finished_at`` is in the minute with status completed or failed
  (``completed_count`` + ``failed_count``); ``throughput`` = ``job_count / 60``.
- ``processing_time`` / ``processing_p50|p95|p99``: mean and percentiles in ms of
  ``finished_at - started_at`` (the last attempt) of those jobs.
- ``wait_p50|p95|p99``: ms of ``started_at - scheduled_at`` of the jobs *started* in the
  minute whose attempt is running or ended the job (an attempt that failed and awaits a
  retry has lost its due time: the retry moved ``scheduled_at``).
- ``error_count``: entries of ``queue_jobs.errors`` (kind error or rescued) whose ``at`` is in
  the minute; ``retries``: those of them after which the job ran again or waits to (a later
  attempt exists, or the job is not finished).
- ``busy_seconds``: the overlap of ``[started_at, finished_at or now]`` with the minute, summed
  over the latest attempt of every job (running ones included).
- ``depth``, ``worker_count``, ``worker_slots``: state, not history. They are measured when the
  rollup runs and written to the last complete minute; older minutes keep what was stored
  (a new row for a minute of the last ten gets the current value, older ones 0).
  ``utilization`` = ``busy_seconds / (worker_slots * 60)``, None without slots.

In the same transaction every run rewrites the hourly rows (``queue_metrics_hourly``,
``queue_type_metrics_hourly``) of the hours its window touches: the merged histograms of each
hour's minute rows, so that hour and day charts read one histogram per hour (:func:`_write_hours`).

Where the driver's ``sql_rollup`` says so (PostgreSQL) the database aggregates in SQL
(``percentile_cont``); otherwise (SQLite) the rollup fetches the rows and computes the same
numbers in Python (:func:`compute_python`, which runs on PostgreSQL too, for tests).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Result,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
)

from db import states
from db.clock import db_clock
from db.driver import driver_for
from db.engine import read, transaction
from db.locks import try_xact_lock
from db.models import HourlyMetric, HourlyTypeMetric, Job, Metric, TypeMetric, Worker
from db.queries import current_depth, live_workers
from db.states import JobStatus, sorted_values, sql_list
from db.types import UTCDateTime, json_array_length
from metrics import hist

log = logging.getLogger(__name__)

jobs = Job.__table__
workers = Worker.__table__
queue_metrics = Metric.__table__
type_metrics = TypeMetric.__table__
queue_hourly = HourlyMetric.__table__
type_hourly = HourlyTypeMetric.__table__

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
QUANTILES = (0.5, 0.95, 0.99)
FINISHED = sorted_values(states.FINISHED)
TERMINAL = sorted_values(states.TERMINAL)
IN_FLIGHT = sorted_values(states.IN_FLIGHT)
ERROR_KINDS = ("error", "rescued")
#: error entries carry the worker's clock; candidates are looked up this much earlier
CLOCK_SKEW = timedelta(seconds=60)
#: a new row for a minute this recent gets the current depth and workers (older ones get 0)
LIVE_STATE_MINUTES = 10
DEFAULT_MINUTES = 5
DEFAULT_STALE_SECONDS = 10.0
LOCK_NAME = "metrics_rollup"

Key = tuple[str, str | None, datetime]  # (queue, job type or None for the queue row, minute)


def floor_minute(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Agg:
    """The recomputable numbers of one (queue[, type], minute)."""

    job_count: int = 0
    completed_count: int = 0
    failed_count: int = 0
    processing_time: float | None = None
    processing: tuple[float | None, ...] = (None, None, None)
    wait: tuple[float | None, ...] = (None, None, None)
    error_count: int = 0
    retries: int = 0
    busy_seconds: float = 0.0
    processing_hist: dict[str, Any] | None = None
    wait_hist: dict[str, Any] | None = None


@dataclass
class RollupResult:
    window_start: datetime
    window_end: datetime
    queue_rows: int = 0
    type_rows: int = 0
    seconds: float = 0.0
    skipped: bool = False  # another rollup held the lock
    queues: list[str] = field(default_factory=list)


# --- shared helpers -----------------------------------------------------------------------

_AT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_INT = re.compile(r"^[0-9]+$")


def _entry_time(entry: Any) -> datetime | None:
    at = entry.get("at") if isinstance(entry, dict) else None
    if not isinstance(at, str) or not _AT.match(at):
        return None
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _entry_attempt(entry: dict[str, Any]) -> int | None:
    raw = entry.get("attempt")
    if raw is None or isinstance(raw, bool):
        return None
    text_value = str(raw)
    return int(text_value) if _INT.match(text_value) else None


def _is_error_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("kind") in (None, *ERROR_KINDS)


def _ms(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds() * 1000.0)


def _minutes_between(start: datetime, end: datetime) -> list[datetime]:
    out = []
    m = floor_minute(start)
    while m < end:
        out.append(m)
        m += MINUTE
    return out


def _keys(queue: str, job_type: str, minute: datetime) -> tuple[Key, Key]:
    return (queue, None, minute), (queue, job_type, minute)


def named_rows(result: Result[Any]) -> Iterator[dict[str, Any]]:
    """Each row of ``result`` as a dict by column name: for the loops over many rows, where
    a plain dict is several times faster to read than the row's attributes."""
    names = tuple(result.keys())
    for row in result:
        yield dict(zip(names, row, strict=True))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- the computation in Python (SQLite, and the reference for the SQL) ----------------------


def _started_population(ws: datetime, we: datetime) -> Any:
    """Jobs whose latest attempt started in [ws, we) and is running or ended the job; bounded
    by the finished-time index and the running partial index."""
    return and_(
        jobs.c.started_at >= ws,
        jobs.c.started_at < we,
        or_(
            and_(jobs.c.finished_at >= ws, jobs.c.status.in_(TERMINAL)),
            jobs.c.status == JobStatus.RUNNING.value,
        ),
    )


def _busy_population(ws: datetime, we: datetime) -> Any:
    return and_(
        jobs.c.started_at.is_not(None),
        jobs.c.started_at < we,
        or_(
            and_(jobs.c.finished_at >= ws, jobs.c.status.in_(TERMINAL)),
            jobs.c.status == JobStatus.RUNNING.value,
        ),
    )


def _error_population(ws: datetime) -> Any:
    since = ws - CLOCK_SKEW
    return and_(
        json_array_length(jobs.c.errors) > 0,
        jobs.c.updated_at >= since,
        or_(jobs.c.finished_at >= since, jobs.c.status.in_(IN_FLIGHT)),
    )


def compute_python(conn: Connection, ws: datetime, we: datetime, now: datetime) -> dict[Key, Agg]:
    """Every recomputable number of the minutes in [ws, we), computed in Python."""
    aggs: dict[Key, Agg] = defaultdict(Agg)
    processing: dict[Key, list[float]] = defaultdict(list)
    waits: dict[Key, list[float]] = defaultdict(list)

    finished = conn.execute(
        select(
            jobs.c.queue, jobs.c.type, jobs.c.status, jobs.c.started_at, jobs.c.finished_at
        ).where(jobs.c.finished_at >= ws, jobs.c.finished_at < we, jobs.c.status.in_(FINISHED))
    )
    for done in named_rows(finished):
        for key in _keys(done["queue"], done["type"], floor_minute(done["finished_at"])):
            agg = aggs[key]
            agg.job_count += 1
            if done["status"] == JobStatus.COMPLETED:
                agg.completed_count += 1
            else:
                agg.failed_count += 1
            if done["started_at"] is not None:
                processing[key].append(_ms(done["finished_at"], done["started_at"]))

    started_rows = conn.execute(
        select(jobs.c.queue, jobs.c.type, jobs.c.started_at, jobs.c.scheduled_at).where(
            _started_population(ws, we)
        )
    )
    for begun in named_rows(started_rows):
        for key in _keys(begun["queue"], begun["type"], floor_minute(begun["started_at"])):
            waits[key].append(_ms(begun["started_at"], begun["scheduled_at"]))

    candidates = conn.execute(
        select(jobs.c.queue, jobs.c.type, jobs.c.status, jobs.c.attempt, jobs.c.errors).where(
            _error_population(ws)
        )
    )
    for failing in named_rows(candidates):
        for entry in failing["errors"] or []:
            if not _is_error_entry(entry):
                continue
            at = _entry_time(entry)
            if at is None or not ws <= at < we:
                continue
            entry_attempt = _entry_attempt(entry)
            retried = (entry_attempt is not None and entry_attempt < failing["attempt"]) or (
                failing["status"] not in TERMINAL
            )
            for key in _keys(failing["queue"], failing["type"], floor_minute(at)):
                aggs[key].error_count += 1
                if retried:
                    aggs[key].retries += 1

    busy_rows = conn.execute(
        select(jobs.c.queue, jobs.c.type, jobs.c.started_at, jobs.c.finished_at).where(
            _busy_population(ws, we)
        )
    )
    for busy in named_rows(busy_rows):
        started = busy["started_at"]
        end = busy["finished_at"] if busy["finished_at"] is not None else now
        for minute in _minutes_between(max(started, ws), min(end, we)):
            overlap = (min(end, minute + MINUTE) - max(started, minute)).total_seconds()
            if overlap <= 0:
                continue
            for key in _keys(busy["queue"], busy["type"], minute):
                aggs[key].busy_seconds += overlap

    for key, values in processing.items():
        agg = aggs[key]
        agg.processing_time = math.fsum(values) / len(values)
        agg.processing = tuple(hist.percentile_cont(values, q) for q in QUANTILES)
        agg.processing_hist = hist.from_values(values)
    for key, values in waits.items():
        agg = aggs[key]
        agg.wait = tuple(hist.percentile_cont(values, q) for q in QUANTILES)
        agg.wait_hist = hist.from_values(values)
    return dict(aggs)


# --- the computation in SQL (PostgreSQL) -----------------------------------------------------

_MINUTE_OF = "date_bin('1 minute', {col}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
# statuses inline (rendered from db.states at import, never from input), as the partial
# indexes' predicates are written: a generic plan can use an index only on a literal
_TERMINAL_SQL = f"({sql_list(states.TERMINAL)})"
_IN_FLIGHT_SQL = f"({sql_list(states.IN_FLIGHT)})"
_FINISHED_SQL = f"({sql_list(states.FINISHED)})"
_RUNNING = sql_list([JobStatus.RUNNING])
_COMPLETED = sql_list([JobStatus.COMPLETED])
_FAILED = sql_list([JobStatus.FAILED])


def _percentile_query(population: str, extra_columns: str, extra_aggregates: str) -> str:
    """Aggregates per (queue, minute) and (queue, type, minute) of a population of ``ms``
    values, with exact percentiles and the log-bucket histogram of each group."""
    bucket = hist.SQL_BUCKET.format(v="ms")
    return f"""
WITH pop AS MATERIALIZED ({population}),
agg AS (
    SELECT queue, type, GROUPING(type) AS by_queue, m{extra_aggregates},
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS p
    FROM pop GROUP BY GROUPING SETS ((queue, m), (queue, type, m))
),
hb AS (
    SELECT queue, type, m, {bucket} AS b, count(*) AS n
    FROM pop WHERE ms IS NOT NULL GROUP BY queue, type, m, b
),
ht AS (
    SELECT queue, type, m, jsonb_object_agg(b::text, n ORDER BY b) AS h
    FROM hb GROUP BY queue, type, m
),
hq AS (
    SELECT queue, m, jsonb_object_agg(b::text, n ORDER BY b) AS h
    FROM (SELECT queue, m, b, sum(n)::bigint AS n FROM hb GROUP BY queue, m, b) s
    GROUP BY queue, m
)
SELECT agg.queue, agg.type, agg.m{extra_columns}, agg.p,
       CASE WHEN agg.by_queue = 1 THEN hq.h ELSE ht.h END AS h
FROM agg
LEFT JOIN ht ON agg.by_queue = 0 AND ht.queue = agg.queue AND ht.type = agg.type AND ht.m = agg.m
LEFT JOIN hq ON agg.by_queue = 1 AND hq.queue = agg.queue AND hq.m = agg.m
"""


_FINISHED_POP = f"""
    SELECT queue, type, status, {_MINUTE_OF.format(col="finished_at")} AS m,
           CASE WHEN started_at IS NULL THEN NULL
                ELSE greatest(0, extract(epoch FROM finished_at - started_at) * 1000)::float8
           END AS ms
    FROM queue_jobs
    WHERE finished_at >= :ws AND finished_at < :we AND status IN {_FINISHED_SQL}"""

_STARTED_POP = f"""
    SELECT queue, type, {_MINUTE_OF.format(col="started_at")} AS m,
           greatest(0, extract(epoch FROM started_at - scheduled_at) * 1000)::float8 AS ms
    FROM queue_jobs
    WHERE started_at >= :ws AND started_at < :we
      AND ((finished_at >= :ws AND status IN {_TERMINAL_SQL}) OR status = {_RUNNING})"""

SQL_FINISHED = _percentile_query(
    _FINISHED_POP,
    ", agg.n, agg.completed, agg.failed, agg.mean_ms",
    f""", count(*) AS n,
           count(*) FILTER (WHERE status = {_COMPLETED}) AS completed,
           count(*) FILTER (WHERE status = {_FAILED}) AS failed,
           avg(ms) AS mean_ms""",
)
SQL_STARTED = _percentile_query(_STARTED_POP, "", "")

SQL_ERRORS = f"""
WITH e AS (
    SELECT j.queue, j.type, j.status, j.attempt,
           CASE WHEN x.entry->>'at' ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}[T ]\\d{{2}}:\\d{{2}}'
                THEN (x.entry->>'at')::timestamptz END AS at,
           CASE WHEN x.entry->>'attempt' ~ '^[0-9]+$'
                THEN (x.entry->>'attempt')::int END AS entry_attempt
    FROM queue_jobs j CROSS JOIN LATERAL jsonb_array_elements(j.errors) AS x(entry)
    WHERE jsonb_array_length(j.errors) > 0
      AND j.updated_at >= :since
      AND (j.finished_at >= :since OR j.status IN {_IN_FLIGHT_SQL})
      AND jsonb_typeof(x.entry) = 'object'
      AND coalesce(x.entry->>'kind', 'error') IN ('error', 'rescued')
)
SELECT queue, type, {_MINUTE_OF.format(col="at")} AS m, count(*) AS errors,
       count(*) FILTER (WHERE entry_attempt < attempt OR status NOT IN {_TERMINAL_SQL})
           AS retries
FROM e WHERE at >= :ws AND at < :we
GROUP BY GROUPING SETS ((queue, m), (queue, type, m))
"""

SQL_BUSY = f"""
SELECT j.queue, j.type, s.m,
       sum(greatest(0, extract(epoch FROM
           least(coalesce(j.finished_at, :now), s.m + interval '1 minute')
           - greatest(j.started_at, s.m)))::float8) AS busy
FROM queue_jobs j
CROSS JOIN LATERAL generate_series(
    {_MINUTE_OF.format(col="greatest(j.started_at, :ws)")},
    least(coalesce(j.finished_at, :now), :we) - interval '1 microsecond',
    interval '1 minute') AS s(m)
WHERE j.started_at IS NOT NULL AND j.started_at < :we
  AND ((j.finished_at >= :ws AND j.status IN {_TERMINAL_SQL}) OR j.status = {_RUNNING})
GROUP BY GROUPING SETS ((j.queue, s.m), (j.queue, j.type, s.m))
"""


def _sql(statement: str, *names: str) -> Any:
    return text(statement).bindparams(*(bindparam(n, type_=UTCDateTime()) for n in names))


_Q_FINISHED = _sql(SQL_FINISHED, "ws", "we")
_Q_STARTED = _sql(SQL_STARTED, "ws", "we")
_Q_ERRORS = _sql(SQL_ERRORS, "ws", "we", "since")
_Q_BUSY = _sql(SQL_BUSY, "ws", "we", "now")


def _hist_from_sql(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    counts = json.loads(value) if isinstance(value, str) else value
    return hist.from_counts({int(k): int(v) for k, v in counts.items()})


def _percentiles(p: Sequence[float] | None) -> tuple[float | None, ...]:
    if p is None:
        return (None, None, None)
    return tuple(None if v is None else float(v) for v in p)


def compute_postgresql(
    conn: Connection, ws: datetime, we: datetime, now: datetime
) -> dict[Key, Agg]:
    """The same numbers as :func:`compute_python`, aggregated by PostgreSQL."""
    aggs: dict[Key, Agg] = defaultdict(Agg)
    window = {"ws": ws, "we": we}
    for r in conn.execute(_Q_FINISHED, window):
        agg = aggs[(r.queue, r.type, _utc(r.m))]
        agg.job_count = int(r.n)
        agg.completed_count = int(r.completed)
        agg.failed_count = int(r.failed)
        agg.processing_time = None if r.mean_ms is None else float(r.mean_ms)
        agg.processing = _percentiles(r.p)
        agg.processing_hist = _hist_from_sql(r.h)
    for r in conn.execute(_Q_STARTED, window):
        agg = aggs[(r.queue, r.type, _utc(r.m))]
        agg.wait = _percentiles(r.p)
        agg.wait_hist = _hist_from_sql(r.h)
    for r in conn.execute(_Q_ERRORS, {**window, "since": ws - CLOCK_SKEW}):
        agg = aggs[(r.queue, r.type, _utc(r.m))]
        agg.error_count = int(r.errors)
        agg.retries = int(r.retries)
    for r in conn.execute(_Q_BUSY, {**window, "now": now}):
        busy = float(r.busy or 0.0)
        if busy > 0:
            aggs[(r.queue, r.type, _utc(r.m))].busy_seconds = busy
    return dict(aggs)


# --- writing -----------------------------------------------------------------------------------


_QUEUE_UPDATED = (
    "job_count",
    "worker_count",
    "processing_time",
    "error_count",
    "throughput",
    "processing_p50",
    "processing_p95",
    "processing_p99",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "depth",
    "utilization",
    "retries",
    "completed_count",
    "failed_count",
    "busy_seconds",
    "worker_slots",
    "processing_hist",
    "wait_hist",
)
#: the measures of one minute that both rollup tables keep (per queue and per type), in the
#: order the chart read models and the benchmark loaders use
MEASURE_COLUMNS = (
    "job_count",
    "completed_count",
    "failed_count",
    "error_count",
    "retries",
    "processing_time",
    "processing_p50",
    "processing_p95",
    "processing_p99",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "busy_seconds",
)
HIST_COLUMNS = ("processing_hist", "wait_hist")
_TYPE_UPDATED = (*MEASURE_COLUMNS, *HIST_COLUMNS)


def _upsert(
    conn: Connection,
    table: Any,
    rows: list[dict[str, Any]],
    keys: Sequence[str],
    cols: Sequence[str],
) -> None:
    if not rows:
        return
    stmt = driver_for(conn).insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in cols}
    )
    conn.execute(stmt, rows)


def _common(agg: Agg) -> dict[str, Any]:
    return {
        "job_count": agg.job_count,
        "completed_count": agg.completed_count,
        "failed_count": agg.failed_count,
        "error_count": agg.error_count,
        "retries": agg.retries,
        "processing_time": agg.processing_time,
        "processing_p50": agg.processing[0],
        "processing_p95": agg.processing[1],
        "processing_p99": agg.processing[2],
        "wait_p50": agg.wait[0],
        "wait_p95": agg.wait[1],
        "wait_p99": agg.wait[2],
        "busy_seconds": round(agg.busy_seconds, 6),
        "processing_hist": agg.processing_hist,
        "wait_hist": agg.wait_hist,
    }


def rollup(
    engine: Engine,
    *,
    now: datetime | None = None,
    minutes: int = DEFAULT_MINUTES,
    stale_seconds: float = DEFAULT_STALE_SECONDS,
) -> RollupResult:
    """Recompute the last ``minutes`` complete minutes (before ``now``, default the database
    clock) of every queue and job type."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    return rollup_range(
        engine, start=None, end=None, now=now, minutes=minutes, stale_seconds=stale_seconds
    )


def rollup_range(
    engine: Engine,
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime | None = None,
    minutes: int = DEFAULT_MINUTES,
    stale_seconds: float = DEFAULT_STALE_SECONDS,
) -> RollupResult:
    """Recompute the minutes in [start, end) (both rounded down to the minute; default: the
    last ``minutes`` complete minutes before ``now``). Exact only while the jobs of those
    minutes are still in ``queue_jobs``: retention deletes them once their minutes are rolled
    up (``db.retention``), so back-fill old ranges with :func:`rollup_holes`, which computes
    only the minutes that were never rolled up."""
    t0 = time.perf_counter()
    with transaction(engine) as conn:
        clock = _utc(now) if now is not None else db_clock(conn)
        current = floor_minute(clock)
        we = min(floor_minute(end), current) if end is not None else current
        ws = floor_minute(start) if start is not None else we - minutes * MINUTE
        result = RollupResult(window_start=ws, window_end=we)
        if ws >= we:
            return result
        if not try_xact_lock(conn, LOCK_NAME):
            result.skipped = True
            return result
        compute = compute_postgresql if driver_for(conn).sql_rollup else compute_python
        aggs = compute(conn, ws, we, clock)
        depth = current_depth(conn, clock)
        live = live_workers(conn, clock, stale_seconds)
        queue_count, type_count, queues = _write(conn, aggs, depth, live, ws, we, clock)
    result.queue_rows, result.type_rows, result.queues = queue_count, type_count, queues
    result.seconds = time.perf_counter() - t0
    log.debug(
        "rolled up %s..%s: %d queue rows, %d type rows in %.3fs",
        ws.isoformat(),
        we.isoformat(),
        queue_count,
        type_count,
        result.seconds,
    )
    return result


def _write(
    conn: Connection,
    aggs: dict[Key, Agg],
    depth: dict[str, int],
    live: dict[str, tuple[int, int]],
    ws: datetime,
    we: datetime,
    clock: datetime,
) -> tuple[int, int, list[str]]:
    stored = {
        (r.queue_name, _utc(r.timestamp)): r
        for r in conn.execute(
            select(
                queue_metrics.c.queue_name,
                queue_metrics.c.timestamp,
                queue_metrics.c.depth,
                queue_metrics.c.worker_count,
                queue_metrics.c.worker_slots,
            ).where(queue_metrics.c.timestamp >= ws, queue_metrics.c.timestamp < we)
        )
    }
    stored_types = {
        (r.queue_name, r.job_type, _utc(r.timestamp))
        for r in conn.execute(
            select(
                type_metrics.c.queue_name, type_metrics.c.job_type, type_metrics.c.timestamp
            ).where(type_metrics.c.timestamp >= ws, type_metrics.c.timestamp < we)
        )
    }
    minutes = _minutes_between(ws, we)
    live_minute = floor_minute(clock) - MINUTE  # the minute that just ended
    recent = floor_minute(clock) - LIVE_STATE_MINUTES * MINUTE

    def queue_row(key: tuple[str, ...], minute: datetime) -> dict[str, Any]:
        (queue,) = key
        agg = aggs.get((queue, None, minute)) or Agg()
        before = stored.get((queue, minute))
        if minute == live_minute or (before is None and minute >= recent):
            workers_now, slots = live.get(queue, (0, 0))
            state = (depth.get(queue, 0), workers_now, slots)
        elif before is not None:
            state = (before.depth, before.worker_count, before.worker_slots)
        else:
            state = (0, 0, 0)
        slots = state[2]
        return {
            **_common(agg),
            "queue_name": queue,
            "timestamp": minute,
            "created_at": clock,
            "throughput": agg.job_count / 60.0,
            "depth": state[0],
            "worker_count": state[1],
            "worker_slots": slots,
            "utilization": (agg.busy_seconds / (slots * 60.0)) if slots else None,
        }

    def type_row(key: tuple[str, ...], minute: datetime) -> dict[str, Any]:
        queue, job_type = key
        return {
            **_common(aggs.get((queue, job_type, minute)) or Agg()),
            "queue_name": queue,
            "job_type": job_type,
            "timestamp": minute,
            "created_at": clock,
        }

    queues = sorted(
        {k[0] for k in aggs}
        | {q for q, _ in stored}
        | {q for q, n in depth.items() if n}
        | set(live)
    )
    queue_rows = {(q, m): queue_row((q,), m) for q in queues for m in minutes}
    type_keys = {(q, t, m) for q, t, m in aggs if t is not None} | stored_types
    type_rows = {(q, t, m): type_row((q, t), m) for q, t, m in sorted(type_keys)}
    _upsert(
        conn, queue_metrics, list(queue_rows.values()), ("queue_name", "timestamp"), _QUEUE_UPDATED
    )
    _upsert(
        conn,
        type_metrics,
        list(type_rows.values()),
        ("queue_name", "job_type", "timestamp"),
        _TYPE_UPDATED,
    )
    first, last = floor_hour(ws), floor_hour(we - MINUTE) + HOUR
    _write_hours(conn, QUEUE_TABLES, first, last, (ws, we), queue_rows)
    _write_hours(conn, TYPE_TABLES, first, last, (ws, we), type_rows)
    return len(queue_rows), len(type_rows), queues


@dataclass(frozen=True)
class RollupTables:
    """A minute rollup table, its hourly table and the key columns they share."""

    minute: Table
    hourly: Table
    keys: tuple[str, ...]


QUEUE_TABLES = RollupTables(queue_metrics, queue_hourly, ("queue_name",))
TYPE_TABLES = RollupTables(type_metrics, type_hourly, ("queue_name", "job_type"))

HourKey = tuple[datetime, tuple[str, ...]]  # (hour, key)


def _hour_hist(counts: dict[str, int]) -> dict[str, Any] | None:
    """The merged bucket counts of an hour as a stored histogram; None when empty."""
    if not counts:
        return None
    return {"g": hist.GAMMA, "b": {k: counts[k] for k in sorted(counts, key=int)}}


def _write_hours(
    conn: Connection,
    tables: RollupTables,
    first: datetime,
    last: datetime,
    window: tuple[datetime, datetime],
    rows: dict[tuple[Any, ...], dict[str, Any]],
) -> int:
    """Recompute the hourly rows of the hours in [first, last) from their minute rows: the
    stored ones outside ``window`` and ``rows`` (the window's rows as just written, keyed
    ``(*key, minute)``). Upserts the hours with values and deletes the hourly rows of hours
    left without any; returns how many hours were written.

    So an hourly row always holds the merge of its hour's minute rows, also for the hour in
    progress, and hours and days read one histogram per hour instead of 60."""
    minute, keys = tables.minute, tables.keys
    ws, we = window
    stored = conn.execute(
        select(
            *(minute.c[k] for k in keys),
            minute.c.timestamp,
            minute.c.processing_hist,
            minute.c.wait_hist,
        ).where(
            minute.c.timestamp >= first,
            minute.c.timestamp < last,
            or_(minute.c.timestamp < ws, minute.c.timestamp >= we),
        )
    )
    acc: dict[HourKey, tuple[dict[str, int], dict[str, int]]] = {}

    def add(hour: datetime, key: tuple[str, ...], p: Any, w: Any) -> None:
        p_acc, w_acc = acc.setdefault((hour, key), ({}, {}))
        hist.merge_raw(p_acc, p)
        hist.merge_raw(w_acc, w)

    for r in stored:
        key = tuple(r._mapping[k] for k in keys)
        add(floor_hour(_utc(r.timestamp)), key, r.processing_hist, r.wait_hist)
    for full_key, row in rows.items():
        add(
            floor_hour(full_key[-1]), tuple(full_key[:-1]), row["processing_hist"], row["wait_hist"]
        )
    written: list[dict[str, Any]] = []
    emptied: list[dict[str, Any]] = []
    for (hour, key), (p_acc, w_acc) in sorted(acc.items()):
        named = dict(zip(keys, key, strict=True))
        if p_acc or w_acc:
            written.append(
                {
                    **named,
                    "hour": hour,
                    "processing_hist": _hour_hist(p_acc),
                    "wait_hist": _hour_hist(w_acc),
                }
            )
        else:
            emptied.append({**{f"k_{k}": v for k, v in named.items()}, "k_hour": hour})
    _upsert(conn, tables.hourly, written, (*keys, "hour"), HIST_COLUMNS)
    if emptied:
        hourly = tables.hourly
        conn.execute(
            delete(hourly).where(
                *(hourly.c[k] == bindparam(f"k_{k}") for k in keys),
                hourly.c.hour == bindparam("k_hour"),
            ),
            emptied,
        )
    return len(written)


def rebuild_hours(engine: Engine, *, start: datetime, end: datetime) -> int:
    """Recompute the hourly rows of every hour that [start, end) touches from the stored
    minute rows (both tables), a day per transaction; returns the hours written. The rollup
    keeps them itself: this is for minute rows loaded or repaired some other way."""
    first = floor_hour(start)
    written = 0
    while first < end:
        last = min(first + timedelta(days=1), floor_hour(end - MINUTE) + HOUR)
        with transaction(engine) as conn:
            for tables in (QUEUE_TABLES, TYPE_TABLES):
                written += _write_hours(conn, tables, first, last, (first, first), {})
        first = last
    return written


def unrolled_minutes(conn: Connection, start: datetime, end: datetime) -> list[datetime]:
    """Minutes in [start, end) without any ``queue_metrics`` row: never rolled up (or idle)."""
    start, end = floor_minute(start), floor_minute(end)
    done = {
        _utc(ts)
        for ts in conn.execute(
            select(queue_metrics.c.timestamp)
            .where(queue_metrics.c.timestamp >= start, queue_metrics.c.timestamp < end)
            .distinct()
        ).scalars()
    }
    return [m for m in _minutes_between(start, end) if m not in done]


def rollup_holes(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    stale_seconds: float = DEFAULT_STALE_SECONDS,
) -> int:
    """Roll up only the minutes of [start, end) that have no row yet; returns how many.

    The safe back-fill: a minute without rows lost no job to retention (jobs are pruned only
    where their minute has a row), so computing it gives exact numbers, while recomputing an
    old minute whose jobs were pruned would undercount it.
    """
    with read(engine) as conn:
        holes = unrolled_minutes(conn, start, end)
    runs: list[tuple[datetime, datetime]] = []
    for minute in holes:
        if runs and runs[-1][1] == minute:
            runs[-1] = (runs[-1][0], minute + MINUTE)
        else:
            runs.append((minute, minute + MINUTE))
    for run_start, run_end in runs:
        rollup_range(engine, start=run_start, end=run_end, now=now, stale_seconds=stale_seconds)
    return len(holes)


def oldest_finish(engine: Engine) -> datetime | None:
    """The earliest ``finished_at`` in the ledger (an index lookup)."""
    with read(engine) as conn:
        value = conn.execute(select(func.min(jobs.c.finished_at))).scalar_one()
    return None if value is None else floor_minute(value)
