"""A backlog of short jobs: the share of worker-slot time spent inside handlers.

    python -m bench utilization [--jobs 4000] [--ms 10] [--workers 4]

Utilization = jobs x ms / (drain time x worker slots). The drain time runs from the first
job finished to the last (ledger clock), so process start-up is not counted.
"""

from __future__ import annotations

import argparse
import os
import uuid

from sqlalchemy import func, select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job
from db.settings import get_settings
from tasks import api


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench utilization")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--ms", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    with harness.fresh_ledger() as url:
        harness.flush_redis()
        env = harness.ledger_env(url, f"bench{uuid.uuid4().hex[:6]}")
        os.environ.update(env)
        get_settings.cache_clear()
        for start in range(0, args.jobs, 5000):
            chunk = min(5000, args.jobs - start)
            api.submit_jobs([{"type": "bench.sleep", "data": {"ms": args.ms}}] * chunk)
        engine = create_ledger_engine(url)

        def remaining() -> int:
            with read(engine) as conn:
                stmt = select(func.count()).where(Job.status != "completed")
                return int(conn.execute(stmt).scalar_one())

        with harness.Procs(env) as procs:
            procs.queuectl("maintainer")
            procs.queuectl("worker", "--concurrency", str(args.workers))
            harness.drain_rate(remaining, args.jobs)
        with read(engine) as conn:
            first, last = conn.execute(
                select(func.min(Job.started_at), func.max(Job.finished_at))
            ).one()
        engine.dispose()
    wall = (last - first).total_seconds()
    busy = args.jobs * args.ms / 1000
    figures = {
        "benchmark": "utilization",
        "jobs": args.jobs,
        "job_ms": args.ms,
        "workers": args.workers,
        "drain_seconds": round(wall, 3),
        "utilization": round(busy / (wall * args.workers), 4),
    }
    harness.report(figures)
    return 0
