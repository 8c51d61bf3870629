"""Does a job that logs a lot slow the others? Drain N no-op jobs alone, then again with
chatty jobs (each logging ``--lines`` lines through ``ctx.log``) among them.

    python -m bench job_logs [--jobs 10000] [--chatty 4] [--lines 10000] [--workers 4]
                             [--kind thread|process] [--runs 3]

Both drains run the same worker command; the chatty jobs are submitted first, so they run
while the no-op jobs drain. Reported: the no-op jobs' drain rate (first no-op job done to
the last) in each case, their ratio, and how many log rows the chatty jobs left (an attempt
keeps at most 1,000 lines and says how many it dropped).
"""

from __future__ import annotations

import argparse

from sqlalchemy import func, select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job, JobLogLine
from tasks import api


def drain(jobs: int, chatty: int, lines: int, workers: int, kind: str) -> tuple[float, int]:
    with harness.fresh_system("bench") as (url, env):
        if chatty:
            api.submit_jobs([{"type": "bench.chatty", "data": {"lines": lines}}] * chatty)
        harness.submit_many("bench.noop", {}, jobs)
        engine = create_ledger_engine(url)

        def remaining() -> int:
            with read(engine) as conn:
                stmt = select(func.count()).where(
                    Job.type == "bench.noop", Job.status != "completed"
                )
                return int(conn.execute(stmt).scalar_one())

        with harness.Procs(env) as procs:
            procs.queuectl("maintainer")
            procs.queuectl("worker", "--concurrency", str(workers), "--kind", kind)
            rate = harness.drain_rate(remaining, jobs)
        with read(engine) as conn:
            rows = int(conn.execute(select(func.count()).select_from(JobLogLine)).scalar_one())
        engine.dispose()
        return rate, rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench job_logs")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--chatty", type=int, default=4)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    quiet, noisy, rows = [], [], 0
    for run in range(args.runs):
        quiet.append(drain(args.jobs, 0, 0, args.workers, args.kind)[0])
        rate, rows = drain(args.jobs, args.chatty, args.lines, args.workers, args.kind)
        noisy.append(rate)
        print(f"run {run + 1}: alone {quiet[-1]:.0f} jobs/s, beside chatty jobs {rate:.0f}")
    harness.report(
        {
            "benchmark": "job_logs",
            "jobs": args.jobs,
            "chatty_jobs": args.chatty,
            "lines_each": args.lines,
            "kind": args.kind,
            "workers": args.workers,
            "alone_jobs_per_s": round(harness.median(quiet), 1),
            "beside_chatty_jobs_per_s": round(harness.median(noisy), 1),
            "ratio": round(harness.median(noisy) / harness.median(quiet), 3),
            "log_rows": rows,
            "alone_runs": [round(x, 1) for x in quiet],
            "beside_chatty_runs": [round(x, 1) for x in noisy],
        }
    )
    return 0
