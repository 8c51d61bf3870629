"""Submit at a steady rate to idle workers; percentiles of submit->start and submit->complete.

    python -m bench latency [--rate 100] [--jobs 1000] [--ms 10] [--workers 4]
                            [--kind thread|process]

Both systems are timed the same way, on this host's wall clock: the submit time is read just
before the submit call, and the task records its own start and finish.
Ours: each job is a ``bench.sleep`` of ``--ms`` submitted with ``submit_job`` (direct
dispatch to the idle queue, unless ``QUEUE_DIRECT_DISPATCH=false``); the handler returns its
start and finish. ``ours_ledger_*`` are the same intervals from the ledger's own timestamps
(``created_at``, ``started_at``, ``finished_at``; the worker writes its start and finish as
"so many seconds before this statement", so they run late by the time the write takes to
reach PostgreSQL).
``ours_submit_call_*`` and ``ours_after_submit_start_*`` split submit -> start at the return
of ``submit_job``: the producer's part (insert, commit, push) and the worker's.
Plain Huey: ``sleep_ms.delay(ms, time.time())``; the task records its own start and finish.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import uuid

from sqlalchemy import func, select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job
from tasks import api


def _paced(rate: float, jobs: int, submit) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for i in range(jobs):
        target = start + i / rate
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        submit()


def run_ours(
    rate: float, jobs: int, ms: float, workers: int, kind: str = "thread"
) -> dict[str, float]:
    with harness.fresh_system("bench") as (url, env):
        engine = create_ledger_engine(url)
        with harness.Procs(env) as procs:
            procs.queuectl("maintainer")
            procs.queuectl("worker", "--concurrency", str(workers), "--kind", kind)

            def remaining() -> int:
                with read(engine) as conn:
                    stmt = select(func.count()).where(Job.status != "completed")
                    return int(conn.execute(stmt).scalar_one())

            # both processes up and idle before the first timed submit: a warm-up job ran
            warm_up = api.submit_job("bench.sleep", {"ms": 0})
            harness.wait_until(lambda: remaining() == 0, "the warm-up job to complete")
            submitted: dict[uuid.UUID, float] = {}
            returned: dict[uuid.UUID, float] = {}

            def submit() -> None:
                at = time.time()
                job_id = api.submit_job("bench.sleep", {"ms": ms})
                submitted[job_id], returned[job_id] = at, time.time()

            _paced(rate, jobs, submit)
            harness.drain_rate(remaining, jobs)
        with read(engine) as conn:
            columns = (Job.id, Job.created_at, Job.started_at, Job.finished_at, Job.result)
            mine = (Job.type == "bench.sleep", Job.id != warm_up)  # not the periodic system jobs
            rows = conn.execute(select(*columns).where(*mine)).all()
        engine.dispose()
    start = [(r.result["started"] - submitted[r.id]) * 1000 for r in rows]
    done = [(r.result["finished"] - submitted[r.id]) * 1000 for r in rows]
    figures = _percentiles(start, done)
    ledger_start = [(r.started_at - r.created_at).total_seconds() * 1000 for r in rows]
    ledger_done = [(r.finished_at - r.created_at).total_seconds() * 1000 for r in rows]
    figures.update({f"ledger_{k}": v for k, v in _percentiles(ledger_start, ledger_done).items()})
    # the two halves of submit -> start: the submit call (insert, commit, push to Redis), and
    # from its return to the handler's start (the worker's pop, lease read and hand-over)
    call = [(returned[r.id] - submitted[r.id]) * 1000 for r in rows]
    after = [(r.result["started"] - returned[r.id]) * 1000 for r in rows]
    for label, values in (("submit_call", call), ("after_submit_start", after)):
        for q in (0.5, 0.99):
            figures[f"{label}_p{int(q * 100)}_ms"] = round(harness.percentile(values, q), 2)
    return figures


def run_plain(
    rate: float, jobs: int, ms: float, workers: int, kind: str = "thread"
) -> dict[str, float]:
    client = harness.flush_redis()
    name = f"plain{uuid.uuid4().hex[:6]}"
    os.environ.update(harness.plain_env(name))
    plain = importlib.reload(importlib.import_module("bench.plain_app"))
    with harness.Procs(harness.plain_env(name)) as procs:
        harness.huey_consumer(procs, workers, kind)
        key = f"{plain.huey.name}:timings"
        plain.sleep_ms(0, time.time())  # warm-up: the consumer is up and idle
        harness.wait_until(lambda: client.llen(key) == 1, "the warm-up task to run")
        client.delete(key)
        _paced(rate, jobs, lambda: plain.sleep_ms(ms, time.time()))
        deadline = time.monotonic() + 120
        while client.llen(key) < jobs and time.monotonic() < deadline:
            time.sleep(0.1)
    rows = [tuple(map(float, r.split())) for r in client.lrange(key, 0, -1)]
    start = [(s - c) * 1000 for c, s, _ in rows]
    done = [(f - c) * 1000 for c, _, f in rows]
    return _percentiles(start, done)


def _percentiles(start: list[float], done: list[float]) -> dict[str, float]:
    out = {}
    for label, values in (("start", start), ("complete", done)):
        for q in (0.5, 0.95, 0.99):
            out[f"{label}_p{int(q * 100)}_ms"] = round(harness.percentile(values, q), 2)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ms", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    args = parser.parse_args(argv)
    plain = run_plain(args.rate, args.jobs, args.ms, args.workers, args.kind)
    ours = run_ours(args.rate, args.jobs, args.ms, args.workers, args.kind)
    figures: dict[str, object] = {"benchmark": "latency", "rate": args.rate, "jobs": args.jobs}
    figures["compared_with"] = f"plain Huey consumer, -k {args.kind} -w {args.workers}"
    figures["ours"] = f"queuectl worker --kind {args.kind} --concurrency {args.workers}"
    figures.update({f"ours_{k}": v for k, v in ours.items()})
    figures.update({f"plain_{k}": v for k, v in plain.items()})
    harness.report(figures)
    return 0
