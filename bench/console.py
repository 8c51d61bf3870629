"""Console first-render benchmark: every page, cold caches, against a large ledger.

    python -m bench console [--jobs 1000000] [--days 30] [--repeat 3] [--page NAME ...]
                            [--keep | --database URL]

1. Creates a fresh migrated database (``harness.fresh_ledger``) and COPYs ``jobs`` jobs
   created over the last ``days`` days, in creation order: 4 queues, 6 types (two of them
   periodic, with one tick row per tick), mostly completed, ~2.5 % failed (errors with
   tracebacks, four exception kinds), ~3 % completed after a failed attempt, a few cancelled,
   and a recent backlog of queued, scheduled and running jobs; payloads of a few fields. Adds
   ``days`` days of minute rollups for the 4 queues (``queue_metrics``) and per type
   (``queue_type_metrics``), 6 live workers, 2,000 audit entries and an admin user; then
   VACUUM ANALYZE.
2. For every page (and Jobs with filters, Metrics over 30 days) as an admin, with Streamlit's
   AppTest in this process: clears ``st.cache_data`` and ``st.cache_resource`` and times the
   page's first render (``at.run()`` for Overview, ``at.switch_page(page).run()`` for the
   others, after an untimed run of the entry page). One untimed warm-up pass (imports), then
   ``repeat`` passes; the median per page.

``--keep`` leaves the loaded database in place (its URL is printed) instead of dropping it;
``--database URL`` measures such a database again without loading (migrated to head first),
e.g. to compare code changes on the same data or to EXPLAIN the pages' queries.

The last line of the output is one JSON object: per-page medians (seconds), the max, and the
load figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from bench.harness import ADMIN_URL, ROOT, fresh_ledger, median
from bench.rollup import (
    JOB_COLUMNS,
    SERIES_COLUMNS,
    TRACEBACK,
    conninfo,
    copy_rows,
    series_rows,
    vacuum_analyze,
)
from metrics.rollup import HIST_COLUMNS, MEASURE_COLUMNS, rebuild_hours

APP = str(ROOT / "console" / "app.py")
ADMIN = {"name": "admin", "role": "admin"}
QUEUES = ("default", "reports", "notifications", "system")
#: non-periodic types: (queue, type, weight)
TYPES = (
    ("default", "demo.echo", 40),
    ("default", "demo.sleep", 15),
    ("reports", "edurise.course_progress_report", 15),
    ("notifications", "edurise.enrollment_notification", 30),
)
#: periodic types: (type, every)
PERIODIC = (
    ("system.metrics_rollup", timedelta(minutes=1)),
    ("system.prune_jobs", timedelta(minutes=5)),
)
QUEUE_TYPES = {
    "default": ("demo.echo", "demo.sleep"),
    "reports": ("edurise.course_progress_report",),
    "notifications": ("edurise.enrollment_notification",),
    "system": tuple(name for name, _ in PERIODIC),
}
COLUMNS = (*JOB_COLUMNS, "tick_key", "worker_id")
SEARCH = "user4242@example.edu"  # the payload search of the "Jobs, search" page
TYPE_COLUMNS = (
    "queue_name",
    "job_type",
    "timestamp",
    "created_at",
    *MEASURE_COLUMNS,
    *HIST_COLUMNS,
)
#: (name, page, session state set before the page's first render)
PAGES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Overview", "views/overview.py", {}),
    ("Jobs", "views/jobs.py", {}),
    (
        "Jobs (status + type)",
        "views/jobs.py",
        {"status": ["failed"], "type": "edurise.course_progress_report"},
    ),
    ("Jobs (payload search)", "views/jobs.py", {"q": SEARCH}),
    ("Submit", "views/submit.py", {}),
    ("Queues", "views/queues.py", {}),
    ("Workers", "views/workers.py", {}),
    ("Metrics", "views/metrics.py", {}),
    ("Metrics (30 days)", "views/metrics.py", {"metrics_range": "Last 30 days"}),
    ("Periodic", "views/periodic.py", {}),
    ("Errors", "views/errors.py", {}),
    ("Capacity", "views/capacity.py", {}),
    ("Audit", "views/audit.py", {}),
)
ERRORS = (  # (error line, traceback): four fingerprints
    ("JSONDecodeError: Expecting value: line 1 column 1 (char 0)", TRACEBACK),
    (
        "TimeoutError: SMTP server did not answer in 30 s",
        "Traceback (most recent call last):\n"
        '  File "/app/tasks/worker.py", line 97, in run\n    result = job_type.func(data, ctx)\n'
        '  File "/app/jobs/notify.py", line 63, in send_enrollment_mail\n'
        "    smtp.send(message)\n"
        '  File "/usr/lib/python3.11/smtplib.py", line 398, in getreply\n'
        "    raise TimeoutError\n"
        "TimeoutError: SMTP server did not answer in 30 s\n",
    ),
    (
        "KeyError: 'course_id'",
        "Traceback (most recent call last):\n"
        '  File "/app/tasks/worker.py", line 97, in run\n    result = job_type.func(data, ctx)\n'
        '  File "/app/jobs/reports.py", line 18, in build_report\n'
        '    course = data["course_id"]\n'
        "KeyError: 'course_id'\n",
    ),
    (
        "OperationalError: connection to server was lost",
        "Traceback (most recent call last):\n"
        '  File "/app/tasks/worker.py", line 97, in run\n    result = job_type.func(data, ctx)\n'
        '  File "/app/jobs/echo.py", line 9, in echo\n    db.ping()\n'
        '  File "/venv/lib/python3.11/site-packages/psycopg/connection.py", line 1, in ping\n'
        "    raise OperationalError\n"
        "psycopg.OperationalError: connection to server was lost\n",
    ),
)


# --- data ------------------------------------------------------------------------------------


def _error(at: datetime, attempt: int, kind_index: int) -> dict[str, Any]:
    error, tb = ERRORS[kind_index]
    return {
        "at": at.isoformat(),
        "attempt": attempt,
        "error": error,
        "traceback": tb,
        "worker": str(uuid.UUID(int=attempt)),
        "kind": "error",
    }


def _payload(rng: random.Random, job_type: str, i: int) -> dict[str, Any]:
    user = rng.randrange(100_000)
    if job_type == "demo.echo":
        return {"message": f"hello {i}", "n": i, "user_id": user}
    if job_type == "demo.sleep":
        return {"seconds": 0.05, "n": i}
    if job_type == "edurise.course_progress_report":
        return {"course_id": rng.randrange(5_000), "user_id": user, "format": "pdf", "n": i}
    return {
        "enrollment_id": i,
        "user_id": user,
        "email": f"user{user}@example.edu",
        "template": rng.choice(("welcome", "reminder", "completed")),
    }


def _job(
    rng: random.Random,
    job_type: str,
    queue: str,
    created: datetime,
    status: str,
    data: dict[str, Any],
    *,
    tick_key: str | None = None,
    worker: uuid.UUID | None = None,
) -> tuple:
    """One ``COLUMNS`` row; times follow from ``created`` and the status."""
    wait = timedelta(milliseconds=rng.expovariate(1 / 200))
    processing = timedelta(milliseconds=rng.lognormvariate(3.9, 1.0))
    scheduled = created
    started = completed = finished = None
    errors: list[dict[str, Any]] = []
    attempt, max_attempts = 0, 3
    kind = rng.choices(range(len(ERRORS)), (50, 25, 15, 10))[0]
    if status == "scheduled":
        scheduled = created + timedelta(minutes=rng.uniform(5, 600))
    elif status == "running":
        started, attempt = created + wait, 1
    elif status in ("completed", "failed"):
        attempt = 1
        if status == "failed":
            max_attempts = attempt = rng.choice((1, 2, 3))
        elif rng.random() < 0.03:  # one failed attempt, then completed
            attempt = 2
        for a in range(1, attempt):
            errors.append(_error(created + a * timedelta(seconds=2), a, kind))
        started = created + wait + (attempt - 1) * timedelta(seconds=2)
        finished = started + processing
        if status == "failed":
            errors.append(_error(finished, attempt, kind))
        else:
            completed = finished
    elif status == "cancelled":
        finished = created + wait
    return (
        uuid.uuid4(),
        job_type,
        queue,
        5,
        status,
        Jsonb(data),
        scheduled,
        started,
        completed,
        finished,
        created,
        finished or started or created,
        attempt,
        max_attempts,
        Jsonb(errors),
        errors[-1]["error"] if errors else None,
        tick_key,
        worker,
    )


def job_rows(
    rng: random.Random, now: datetime, total: int, days: int, workers: list[uuid.UUID]
) -> Iterator[tuple]:
    """``total`` jobs in creation order: periodic ticks and finished jobs over ``days`` days,
    then a backlog created in the last 20 minutes (queued, scheduled, running)."""
    start = now - timedelta(days=days)
    backlog = max(0, total // 200)  # 0.5 %: queued, scheduled and a few running
    ticks = [
        [start.replace(second=0, microsecond=0) + every, name, every] for name, every in PERIODIC
    ]
    tick_count = sum(int(timedelta(days=days) / every) for _, every in PERIODIC)
    regular = max(0, total - backlog - tick_count)
    finished_end = now - timedelta(minutes=20)
    step = (finished_end - start) / max(1, regular)
    types = [(q, t) for q, t, _ in TYPES]
    weights = [w for _, _, w in TYPES]
    n = 0
    for i in range(regular):
        created = start + step * (i + rng.random())
        for tick in ticks:  # periodic rows, in order
            while tick[0] <= created and n < total - backlog:
                name, at = tick[1], tick[0]
                yield _job(
                    rng, name, "system", at, "completed", {}, tick_key=f"{name}@{at.isoformat()}"
                )
                tick[0] += tick[2]
                n += 1
        queue, job_type = rng.choices(types, weights)[0]
        roll = rng.random()
        status = "failed" if roll < 0.025 else "cancelled" if roll < 0.03 else "completed"
        yield _job(rng, job_type, queue, created, status, _payload(rng, job_type, i))
        n += 1
    for i in range(total - n):
        created = finished_end + timedelta(minutes=20) * (i / max(1, backlog))
        queue, job_type = rng.choices(types, weights)[0]
        status = rng.choices(("queued", "scheduled", "running"), (70, 25, 5))[0]
        worker = rng.choice(workers) if status == "running" else None
        yield _job(rng, job_type, queue, created, status, _payload(rng, job_type, i), worker=worker)


def load_rollups(url: str, rng: random.Random, end: datetime, days: int) -> tuple[int, int]:
    """``days`` days of minute rollups per queue (``bench.rollup.series_rows``, renamed to the
    real queues) and, from each queue row, one row per type of the queue."""
    names = {f"queue{i}": q for i, q in enumerate(QUEUES)}
    n_queue = n_type = 0
    with (
        psycopg.connect(conninfo(url)) as qconn,
        psycopg.connect(conninfo(url)) as tconn,
        qconn.cursor() as qcur,
        tconn.cursor() as tcur,
        qcur.copy(f"COPY queue_metrics ({', '.join(SERIES_COLUMNS)}) FROM STDIN") as qcopy,
        tcur.copy(f"COPY queue_type_metrics ({', '.join(TYPE_COLUMNS)}) FROM STDIN") as tcopy,
    ):
        for row in series_rows(rng, end, days, len(QUEUES)):
            queue = names[row[0]]
            qcopy.write_row((queue, *row[1:]))
            n_queue += 1
            (jobs, _, mean, errors, ts, created, _, p50, p95, p99, w50, w95, w99) = row[1:14]
            retries, done, failed, busy = row[16:20]
            types = QUEUE_TYPES[queue]
            k = len(types)
            for t in types:
                tcopy.write_row(
                    (
                        queue,
                        t,
                        ts,
                        created,
                        jobs // k,
                        done // k,
                        failed // k,
                        errors // k,
                        retries // k,
                        mean,
                        p50,
                        p95,
                        p99,
                        w50,
                        w95,
                        w99,
                        busy / k,
                        row[21],
                        row[22],
                    )
                )
                n_type += 1
    # psycopg commits on leaving each connection block without an error
    from db.engine import engine_for

    rebuild_hours(engine_for(url), start=end - timedelta(days=days), end=end)  # hourly tables
    return n_queue, n_type


def audit_rows(rng: random.Random, now: datetime, count: int) -> Iterator[tuple]:
    actions = ("cancel", "retry", "bulk_retry", "submit", "pause", "resume", "retry_group")
    for i in range(count):
        at = now - timedelta(days=30) * (1 - i / count)
        action = rng.choice(actions)
        ids = [str(uuid.uuid4()) for _ in range(rng.choice((0, 1, 1, 3)))]
        yield (
            at,
            rng.choice(("admin", "carol", "dave")),
            "admin",
            action,
            ids[0] if ids else "default",
            Jsonb(ids),
            Jsonb({"reason": "bench"}),
            rng.choices(("ok", "error", "denied"), (90, 7, 3))[0],
            None,
        )


AUDIT_COLUMNS = (
    "at",
    "username",
    "role",
    "action",
    "target",
    "job_ids",
    "details",
    "outcome",
    "error",
)


def load(url: str, jobs: int, days: int) -> dict[str, Any]:
    from console import passwords
    from db import workers as worker_sql
    from db.engine import engine_for, write

    now = datetime.now(UTC)
    rng = random.Random(7)
    engine = engine_for(url)
    worker_ids = [uuid.uuid4() for _ in range(6)]
    with write(engine) as conn:
        for i, wid in enumerate(worker_ids):
            worker_sql.register(
                conn,
                worker_id=wid,
                name=f"worker-{i}",
                hostname=f"host-{i % 3}",
                pid=1000 + i,
                queues=[QUEUES[i % len(QUEUES)]],
                concurrency=4,
                worker_kind="thread",
            )
    os.environ[passwords.FAST_ENV] = "1"
    passwords.create_user(engine, ADMIN["name"], "bench-password", "admin")
    t0 = time.perf_counter()
    n_jobs = copy_rows(url, "queue_jobs", COLUMNS, job_rows(rng, now, jobs, days, worker_ids))
    jobs_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    end = now.replace(second=0, microsecond=0)
    n_queue, n_type = load_rollups(url, rng, end, days)
    rollups_s = time.perf_counter() - t0
    copy_rows(url, "audit_log", AUDIT_COLUMNS, audit_rows(rng, now, 2_000))
    t0 = time.perf_counter()
    vacuum_analyze(url, "queue_jobs", "queue_metrics", "queue_type_metrics", "audit_log")
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # write the load out now, not during the measures
    with psycopg.connect(conninfo(url)) as conn:
        counts = dict(
            conn.execute("SELECT status, count(*) FROM queue_jobs GROUP BY status").fetchall()
        )
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('queue_jobs'))")
        jobs_size = size.fetchone()[0]
    return {
        "jobs": n_jobs,
        "jobs_by_status": counts,
        "jobs_table_size": jobs_size,
        "queue_metrics_rows": n_queue,
        "queue_type_metrics_rows": n_type,
        "load_jobs_s": round(jobs_s, 1),
        "load_rollups_s": round(rollups_s, 1),
        "vacuum_analyze_s": round(time.perf_counter() - t0, 1),
    }


@contextmanager
def ledger(keep: bool, database: str | None) -> Iterator[tuple[str, bool]]:
    """``(url, needs_load)``: the given database (migrated to head), a new one that is kept, or
    ``harness.fresh_ledger`` (dropped afterwards)."""
    from db.engine import create_ledger_engine
    from db.migrate import upgrade

    if database is None and not keep:
        with fresh_ledger() as url:
            yield url, True
        return
    if database is not None:
        url, fresh = database, False
    else:
        name = f"edurise_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(ADMIN_URL).set(database=name).render_as_string(False)
        fresh = True
    engine = create_ledger_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url, fresh
    if keep:
        print(f"database kept: {url} (measure it again with --database {url})")


# --- measure ---------------------------------------------------------------------------------


def clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def first_render(page: str, state: dict[str, Any]) -> float:
    """Seconds of the page's first render with cold Streamlit caches."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["user"] = dict(ADMIN)
    if page == "views/overview.py":
        clear_caches()
        t0 = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - t0
    else:
        at.run()
        assert not at.exception, at.exception
        for key, value in state.items():
            at.session_state[key] = value
        clear_caches()
        t0 = time.perf_counter()
        at.switch_page(page).run()
        seconds = time.perf_counter() - t0
    assert not at.exception, (page, at.exception)
    errors = [e.value for e in at.error]
    assert not errors, (page, errors)
    for key, value in state.items():  # the filter really was applied
        assert at.get_by_key(key).value == value, (page, key)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--page", action="append", help="only these pages (by name)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", action="store_true", help="keep the loaded database")
    where.add_argument("--database", metavar="URL", help="measure this loaded database")
    args = parser.parse_args(argv)
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest's bare-mode warnings
    pages = [p for p in PAGES if not args.page or p[0] in args.page]

    figures: dict[str, Any] = {"load_before": os.getloadavg()[0], "repeat": args.repeat}
    with ledger(args.keep, args.database) as (url, needs_load):
        os.environ["DATABASE_URL"] = url
        os.environ.pop("QUEUE_JOB_MODULES", None)
        from db.settings import get_settings

        get_settings.cache_clear()
        if needs_load:
            data = load(url, args.jobs, args.days)
            print(json.dumps(data))
            figures["data"] = data
        times: dict[str, list[float]] = {name: [] for name, _, _ in pages}
        for rep in range(args.repeat + 1):  # pass 0: warm-up (imports), not counted
            for name, page, state in pages:
                seconds = first_render(page, state)
                if rep:
                    times[name].append(seconds)
            if rep:
                print(f"pass {rep}: " + ", ".join(f"{n} {t[-1]:.2f}" for n, t in times.items()))
        figures["load_after"] = os.getloadavg()[0]
        from db.engine import engine_for

        engine_for(url).dispose()
        engine_for.cache_clear()

    medians = {name: round(median(t), 3) for name, t in times.items()}
    print(f"\n{'page':<24} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, t in times.items():
        print(f"{name:<24} {statistics.median(t):>9.3f} {min(t):>7.3f} {max(t):>7.3f}")
    slowest = max(medians, key=lambda n: medians[n])
    figures.update(
        {
            "pages_median_s": medians,
            "max_median_s": medians[slowest],
            "slowest_page": slowest,
            "all_under_1s": medians[slowest] < 1.0,
        }
    )
    print(f"slowest: {slowest} {medians[slowest]:.3f} s; load {figures['load_after']:.2f}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
