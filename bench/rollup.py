"""Rollup and chart-query benchmark on PostgreSQL.

    python -m bench rollup [--rate 1000] [--minutes 6] [--history 30] [--backlog 20000]
                           [--repeat 5] [--series-days 30] [--queues 4] [--keep] [--no-prune]

1. Creates a fresh database (``BENCH_DATABASE_URL``, default the test server), migrates it.
2. COPYs ``history + minutes`` minutes of finished jobs at ``rate`` jobs/s (4 queues, 5 types,
   1 % failed, 3 % retried once with a traceback) plus a backlog of queued jobs, then
   VACUUM ANALYZE (default 36 minutes: 2.16 million jobs).
3. Times the rollup of the newest minute alone (``rate * 60`` jobs) and of the default
   5-minute recompute window, each ``repeat`` times (median and best), plus each query alone.
4. Fills ``series-days`` days of minute rollups for ``queues`` queues, times ``time_series``
   over the whole range (minute/hour/day) and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of its query.
5. Times ``prune_jobs`` (10,000-row batches) on the loaded jobs.

The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from db.engine import create_ledger_engine, read
from db.migrate import upgrade
from db.retention import prune_jobs
from metrics import hist
from metrics.read.series import hourly_statements, series_statement, time_series
from metrics.rollup import (
    _Q_BUSY,
    _Q_ERRORS,
    _Q_FINISHED,
    _Q_STARTED,
    CLOCK_SKEW,
    MINUTE,
    rebuild_hours,
    rollup,
)

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"),
)
QUEUES = ("default", "reports", "notifications", "system")
TYPES = (
    ("default", "demo.echo"),
    ("default", "demo.sleep"),
    ("reports", "edurise.course_progress_report"),
    ("notifications", "edurise.enrollment_notification"),
    ("system", "system.metrics_rollup"),
)
WEIGHTS = (40, 20, 15, 20, 5)
JOB_COLUMNS = (
    "id",
    "type",
    "queue",
    "priority",
    "status",
    "data",
    "scheduled_at",
    "started_at",
    "completed_at",
    "finished_at",
    "created_at",
    "updated_at",
    "attempt",
    "max_attempts",
    "errors",
    "last_error",
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/tasks/worker.py", line 97, in run\n    result = job_type.func(data, ctx)\n'
    '  File "/app/jobs/reports.py", line 41, in build_report\n    rows = fetch(course)\n'
    '  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads\n'
    "    return _default_decoder.decode(s)\n"
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
)


def conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


@contextmanager
def fresh_database(keep: bool) -> Iterator[str]:
    name = f"edurise_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(False)
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def job_rows(rng: random.Random, start: datetime, minutes: int, rate: int) -> Iterator[tuple]:
    """Finished jobs at ``rate`` per second from ``start``: finish times evenly spread."""
    total = minutes * 60 * rate
    for i in range(total):
        finished = start + timedelta(seconds=i / rate)
        queue, job_type = rng.choices(TYPES, WEIGHTS)[0]
        processing = timedelta(milliseconds=rng.lognormvariate(3.9, 1.0))  # median ~50 ms
        started = finished - processing
        scheduled = started - timedelta(milliseconds=rng.expovariate(1 / 200))
        roll = rng.random()
        errors: list[dict[str, Any]] = []
        attempt = 1
        status = "completed"
        if roll < 0.04:  # 3 % retried once then completed, 1 % failed for good
            attempt = 2
            status = "failed" if roll < 0.01 else "completed"
            first = scheduled - timedelta(seconds=2)
            errors.append(error_entry(first, 1))
            if status == "failed":
                errors.append(error_entry(finished, 2))
        yield (
            uuid.uuid4(),
            job_type,
            queue,
            5,
            status,
            Jsonb({"n": i}),
            scheduled,
            started,
            finished if status == "completed" else None,
            finished,
            scheduled - timedelta(seconds=1),
            finished,
            attempt,
            2 if status == "failed" else 3,
            Jsonb(errors),
            errors[-1]["error"] if errors else None,
        )


def error_entry(at: datetime, attempt: int) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "attempt": attempt,
        "error": "JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        "traceback": TRACEBACK,
        "worker": str(uuid.UUID(int=attempt)),
        "kind": "error",
    }


def backlog_rows(rng: random.Random, now: datetime, count: int) -> Iterator[tuple]:
    for i in range(count):
        queue, job_type = rng.choices(TYPES, WEIGHTS)[0]
        due = now - timedelta(seconds=rng.uniform(0, 600))
        retried = rng.random() < 0.01
        errors = [error_entry(due - timedelta(seconds=5), 1)] if retried else []
        yield (
            uuid.uuid4(),
            job_type,
            queue,
            5,
            "queued",
            Jsonb({"n": i}),
            due,
            due - timedelta(seconds=4) if retried else None,
            None,
            None,
            due - timedelta(seconds=10),
            due,
            1 if retried else 0,
            3,
            Jsonb(errors),
            None,
        )


def copy_rows(url: str, table: str, columns: tuple[str, ...], rows: Iterator[tuple]) -> int:
    n = 0
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
        conn.commit()
    return n


def vacuum_analyze(url: str, *tables: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM ANALYZE {table}")


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "best_s": min(times), "runs": repeat}


def bench_rollup(engine: Engine, end: datetime, rate: int, repeat: int) -> dict[str, Any]:
    now = end + timedelta(seconds=5)
    out: dict[str, Any] = {}
    res = rollup(engine, now=now, minutes=1)
    assert res.queue_rows >= 1
    out["one_minute"] = timed(lambda: rollup(engine, now=now, minutes=1), repeat)
    out["one_minute"]["jobs"] = rate * 60
    out["five_minutes"] = timed(lambda: rollup(engine, now=now, minutes=5), repeat)
    out["five_minutes"]["jobs"] = rate * 300
    ws, we = end - MINUTE, end
    params = {
        "finished": (_Q_FINISHED, {"ws": ws, "we": we}),
        "started": (_Q_STARTED, {"ws": ws, "we": we}),
        "errors": (_Q_ERRORS, {"ws": ws, "we": we, "since": ws - CLOCK_SKEW}),
        "busy": (_Q_BUSY, {"ws": ws, "we": we, "now": now}),
    }
    queries = {}
    for name, (query, bind) in params.items():

        def run(query: Any = query, bind: dict[str, Any] = bind) -> None:
            with read(engine) as conn:
                conn.exec_driver_sql("SET LOCAL jit = off")
                list(conn.execute(query, bind))

        queries[name] = timed(run, repeat)
    out["queries_one_minute"] = queries
    with read(engine) as conn:
        check = conn.execute(
            text("SELECT sum(job_count) FROM queue_metrics WHERE timestamp = :m"), {"m": ws}
        ).scalar_one()
    out["rolled_up_jobs_in_minute"] = int(check or 0)
    return out


def series_rows(rng: random.Random, end: datetime, days: int, queues: int) -> Iterator[tuple]:
    """Minute rollups as the rollup writes them, with per-minute histograms (the hourly rows
    are made from them afterwards: ``metrics.rollup.rebuild_hours``)."""
    minutes = days * 24 * 60
    start = end - minutes * MINUTE
    for q in (f"queue{i}" for i in range(queues)):
        for i in range(minutes):
            ts = start + i * MINUTE
            jobs = rng.randint(200, 1200)
            p_counts: dict[int, int] = {}
            w_counts: dict[int, int] = {}
            for _ in range(40):  # 40 samples, scaled to the minute's job count
                pi = hist.bucket_index(rng.lognormvariate(3.9, 1.0))
                wi = hist.bucket_index(rng.expovariate(1 / 200))
                p_counts[pi] = p_counts.get(pi, 0) + jobs // 40
                w_counts[wi] = w_counts.get(wi, 0) + jobs // 40
            p_hist = hist.from_counts(p_counts)
            w_hist = hist.from_counts(w_counts)
            assert p_hist is not None and w_hist is not None
            p = sorted(rng.lognormvariate(3.9, 1.0) for _ in range(20))
            w = sorted(rng.expovariate(1 / 200) for _ in range(20))
            yield (
                q,
                jobs,
                4,
                statistics.fmean(p),
                jobs // 100,
                ts,
                end,
                jobs / 60,
                p[10],
                p[18],
                p[19],
                w[10],
                w[18],
                w[19],
                rng.randint(0, 50),
                0.4,
                jobs // 50,
                jobs - jobs // 100,
                jobs // 100,
                96.0,
                4,
                Jsonb(p_hist),
                Jsonb(w_hist),
            )


SERIES_COLUMNS = (
    "queue_name",
    "job_count",
    "worker_count",
    "processing_time",
    "error_count",
    "timestamp",
    "created_at",
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


def bench_series(url: str, engine: Engine, days: int, queues: int, repeat: int) -> dict[str, Any]:
    with read(engine) as conn:
        conn.execute(text("SELECT 1"))
    end = datetime(2030, 1, 1, tzinfo=UTC)  # after the job data: no overlap
    t0 = time.perf_counter()
    n = copy_rows(
        url, "queue_metrics", SERIES_COLUMNS, series_rows(random.Random(3), end, days, queues)
    )
    rebuild_hours(engine, start=end - timedelta(days=days), end=end)
    vacuum_analyze(url, "queue_metrics", "queue_metrics_hourly")
    load_s = time.perf_counter() - t0
    start = end - timedelta(days=days)
    out: dict[str, Any] = {"rows": n, "rows_per_queue": n // queues, "load_s": round(load_s, 2)}
    for resolution in ("minute", "hour", "day"):

        def one(resolution: str = resolution) -> None:
            rows = time_series(engine, start=start, end=end, resolution=resolution, queue="queue0")
            assert rows

        out[f"one_queue_{resolution}"] = timed(one, repeat)

    def all_hour() -> None:
        assert time_series(engine, start=start, end=end, resolution="hour")

    out["all_queues_hour"] = timed(all_hour, repeat)
    plans = {}
    with read(engine) as conn:
        conn.exec_driver_sql("SET LOCAL jit = off")  # as the read models do
        minute = series_statement(start=start, end=end, queue="queue0")
        hourly, hour_hists = hourly_statements(conn, start=start, end=end, queue="queue0")
        for name, stmt in (("minute", minute), ("hourly", hourly), ("hour_hists", hour_hists)):
            compiled = stmt.compile(engine)
            sql = str(compiled)
            plan = (
                conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, compiled.params)
                .scalars()
                .all()
            )
            shown = sql % {k: repr(str(v)) for k, v in compiled.params.items()}
            plans[name] = {"sql": shown, "plan": plan}
    out["explain"] = plans
    return out


def bench_prune(engine: Engine, end: datetime) -> dict[str, Any]:
    rollup(engine, now=end + timedelta(minutes=10), minutes=15)  # everything rolled up
    t0 = time.perf_counter()
    result = prune_jobs(
        engine, completed_before=end, failed_before=end, recompute_minutes=5, max_batches=1000
    )
    seconds = time.perf_counter() - t0
    return {
        "deleted": result.deleted,
        "seconds": round(seconds, 3),
        "rows_per_s": round(result.deleted / seconds) if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rollup", description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="finished jobs per second")
    parser.add_argument("--minutes", type=int, default=6, help="minutes of finished jobs")
    parser.add_argument("--backlog", type=int, default=20_000, help="queued jobs waiting")
    parser.add_argument(
        "--history", type=int, default=30, help="older minutes of finished jobs (table size)"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--series-days", type=int, default=30)
    parser.add_argument("--queues", type=int, default=4, help="queues in the series data")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--no-prune", action="store_true", help="skip the prune timing")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {
        "rate": args.rate,
        "minutes": args.minutes,
        "history_minutes": args.history,
        "backlog": args.backlog,
    }
    with fresh_database(args.keep) as url:
        engine = create_ledger_engine(url)
        upgrade(engine)
        with psycopg.connect(conninfo(url)) as conn:
            figures["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
        start = end - (args.minutes + args.history) * MINUTE
        rng = random.Random(1)
        t0 = time.perf_counter()
        total_minutes = args.minutes + args.history
        n = copy_rows(
            url, "queue_jobs", JOB_COLUMNS, job_rows(rng, start, total_minutes, args.rate)
        )
        n += copy_rows(url, "queue_jobs", JOB_COLUMNS, backlog_rows(rng, end, args.backlog))
        vacuum_analyze(url, "queue_jobs")
        figures["jobs_loaded"] = n
        figures["load_s"] = round(time.perf_counter() - t0, 2)
        print(f"loaded {n} jobs in {figures['load_s']} s")

        figures["rollup"] = bench_rollup(engine, end, args.rate, args.repeat)
        r = figures["rollup"]
        print(
            f"rollup of one minute ({r['one_minute']['jobs']} jobs): "
            f"median {r['one_minute']['median_s'] * 1000:.0f} ms, "
            f"best {r['one_minute']['best_s'] * 1000:.0f} ms"
        )
        print(
            f"rollup of the 5-minute window ({r['five_minutes']['jobs']} jobs): "
            f"median {r['five_minutes']['median_s'] * 1000:.0f} ms, "
            f"best {r['five_minutes']['best_s'] * 1000:.0f} ms"
        )
        for name, q in r["queries_one_minute"].items():
            print(f"  query {name:9} (one minute): median {q['median_s'] * 1000:.0f} ms")
        print(f"  jobs counted in the minute: {r['rolled_up_jobs_in_minute']}")

        if args.series_days > 0:
            s = bench_series(url, engine, args.series_days, args.queues, args.repeat)
            figures["series"] = s
            print(
                f"time_series over {args.series_days} days "
                f"({s['rows_per_queue']} rows per queue, {args.queues} queues):"
            )
            for key in ("one_queue_minute", "one_queue_hour", "one_queue_day", "all_queues_hour"):
                print(f"  {key:17} median {s[key]['median_s'] * 1000:.0f} ms")
            for name, e in s["explain"].items():
                print(f"EXPLAIN (ANALYZE, BUFFERS) [{name}]")
                print(e["sql"])
                for line in e["plan"]:
                    print("  " + line)

        if not args.no_prune:
            figures["prune"] = bench_prune(engine, end)
            p = figures["prune"]
            print(f"prune_jobs: deleted {p['deleted']} jobs in {p['seconds']} s")
        engine.dispose()
    print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
