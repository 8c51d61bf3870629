"""Drain N pre-submitted no-op jobs through the full system and through plain Huey.

    python -m bench throughput [--jobs 20000] [--workers 4] [--kind thread] [--runs 3]

Ours: ledger (PostgreSQL) + maintainer + one worker process with ``--workers`` threads.
Plain: ``PriorityRedisHuey`` with the same consumer configuration, same Redis, same machine.
Both: the jobs are waiting before the consumer starts; the rate is measured from the first
job done to the last (so process start-up is not counted), polled every 100 ms.
"""

from __future__ import annotations

import argparse
import importlib
import os
import uuid

from sqlalchemy import func, select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job
from db.settings import get_settings
from tasks import api


def run_ours(jobs: int, workers: int, kind: str) -> float:
    with harness.fresh_ledger() as url:
        harness.flush_redis()
        env = harness.ledger_env(url, f"bench{uuid.uuid4().hex[:6]}")
        os.environ.update(env)
        get_settings.cache_clear()
        for start in range(0, jobs, 5000):
            api.submit_jobs([{"type": "bench.noop", "data": {}}] * min(5000, jobs - start))
        engine = create_ledger_engine(url)

        def remaining() -> int:
            with read(engine) as conn:
                stmt = select(func.count()).where(Job.status != "completed")
                return int(conn.execute(stmt).scalar_one())

        with harness.Procs(env) as procs:
            procs.queuectl("maintainer")
            procs.queuectl("worker", "--concurrency", str(workers), "--kind", kind)
            rate = harness.drain_rate(remaining, jobs)
        engine.dispose()
        return rate


def run_plain(jobs: int, workers: int, kind: str) -> float:
    client = harness.flush_redis()
    name = f"plain{uuid.uuid4().hex[:6]}"
    os.environ.update(harness.plain_env(name))
    plain = importlib.reload(importlib.import_module("bench.plain_app"))
    for _ in range(jobs):
        plain.noop()
    key = plain.huey.storage.queue_key

    def remaining() -> int:
        return int(client.zcard(key))

    with harness.Procs(harness.plain_env(name)) as procs:
        harness.huey_consumer(procs, workers, kind)
        return harness.drain_rate(remaining, jobs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    ours, plain = [], []
    for run in range(args.runs):
        plain.append(run_plain(args.jobs, args.workers, args.kind))
        ours.append(run_ours(args.jobs, args.workers, args.kind))
        print(f"run {run + 1}: ours {ours[-1]:.0f} jobs/s, plain huey {plain[-1]:.0f} jobs/s")
    figures = {
        "benchmark": "throughput",
        "jobs": args.jobs,
        "workers": args.workers,
        "kind": args.kind,
        "ours_jobs_per_s": round(harness.median(ours), 1),
        "plain_jobs_per_s": round(harness.median(plain), 1),
        "ratio": round(harness.median(ours) / harness.median(plain), 3),
        "ours_runs": [round(x, 1) for x in ours],
        "plain_runs": [round(x, 1) for x in plain],
    }
    harness.report(figures)
    return 0
