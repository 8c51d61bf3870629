"""A backlog of short jobs: the share of worker-slot time spent inside handlers.

    python -m bench utilization [--jobs 4000] [--ms 10] [--workers 4] [--kind thread|process]

Utilization = time spent inside handlers / (drain time x worker slots). The drain time runs
from the first job started to the last finished, so process start-up is not counted; the
time inside a handler is its measured duration (a 10 ms sleep takes a little longer).
Both systems are timed the same way: each task records its own start and finish (ours: the
``bench.sleep`` handler returns them as its result). Plain Huey (same consumer configuration,
same machine, same run, same kind: threads or processes) gives the ceiling that Huey's own
loop leaves.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import uuid

from sqlalchemy import select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job


def run_ours(jobs: int, ms: float, workers: int, kind: str = "thread") -> tuple[float, float]:
    """(seconds inside handlers, seconds from the first start to the last finish)."""
    with harness.fresh_system("bench") as (url, env):
        harness.submit_many("bench.sleep", {"ms": ms}, jobs)
        engine = create_ledger_engine(url)
        harness.drain_ours(engine, env, jobs, workers, kind)
        with read(engine) as conn:
            mine = Job.type == "bench.sleep"  # not the periodic system jobs
            results = conn.execute(select(Job.result).where(mine)).scalars().all()
        engine.dispose()
    rows = [(r["started"], r["finished"]) for r in results]
    inside = sum(f - s for s, f in rows)
    return inside, max(f for _, f in rows) - min(s for s, _ in rows)


def run_plain(jobs: int, ms: float, workers: int, kind: str = "thread") -> tuple[float, float]:
    client = harness.flush_redis()
    name = f"plain{uuid.uuid4().hex[:6]}"
    os.environ.update(harness.plain_env(name))
    plain = importlib.reload(importlib.import_module("bench.plain_app"))
    for _ in range(jobs):
        plain.sleep_ms(ms, time.time())
    key = f"{plain.huey.name}:timings"
    with harness.Procs(harness.plain_env(name)) as procs:
        harness.huey_consumer(procs, workers, kind)
        deadline = time.monotonic() + 600
        while client.llen(key) < jobs and time.monotonic() < deadline:
            time.sleep(0.1)
    rows = [tuple(map(float, r.split())) for r in client.lrange(key, 0, -1)]
    if len(rows) < jobs:
        raise TimeoutError(f"plain Huey ran {len(rows)} of {jobs} jobs")
    inside = sum(f - s for _, s, f in rows)
    return inside, max(f for _, _, f in rows) - min(s for _, s, _ in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench utilization")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--ms", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    args = parser.parse_args(argv)
    plain_inside, plain_wall = run_plain(args.jobs, args.ms, args.workers, args.kind)
    inside, wall = run_ours(args.jobs, args.ms, args.workers, args.kind)
    figures = {
        "benchmark": "utilization",
        "jobs": args.jobs,
        "job_ms": args.ms,
        "workers": args.workers,
        "ours": f"queuectl worker --kind {args.kind} --concurrency {args.workers}",
        "compared_with": f"plain Huey consumer, -k {args.kind} -w {args.workers}",
        "drain_seconds": round(wall, 3),
        "handler_ms_mean": round(inside / args.jobs * 1000, 3),
        "utilization": round(inside / (wall * args.workers), 4),
        "plain_drain_seconds": round(plain_wall, 3),
        "plain_handler_ms_mean": round(plain_inside / args.jobs * 1000, 3),
        "plain_utilization": round(plain_inside / (plain_wall * args.workers), 4),
    }
    figures["ratio"] = round(figures["utilization"] / figures["plain_utilization"], 3)
    harness.report(figures)
    return 0
