"""Drain N pre-submitted no-op jobs through the full system and through plain Huey, with
threads and with processes.

    python -m bench throughput [--jobs 20000] [--threads 4] [--processes 2] [--runs 3]
                               [--kinds thread,process]

Ours: ledger (PostgreSQL) + maintainer + one worker command, ``--kind thread --concurrency
<threads>`` and ``--kind process --concurrency <processes>``. Plain: ``PriorityRedisHuey``'s
consumer with the same number of threads (``-k thread -w <threads>``) and of processes
(``-k process -w <processes>``), same Redis, same machine, alternating within each run.
The jobs are waiting before the consumer starts; the rate is measured from the first job done
to the last (so process start-up is not counted), polled every 100 ms.

The last line reports ``ratio_threads`` (ours / plain Huey, both with threads),
``ratio_processes`` (both with processes) and ``ratio``: our best configuration against plain
Huey's best (medians of the runs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import uuid

from bench import harness
from db.engine import create_ledger_engine

PLURAL = {"thread": "threads", "process": "processes"}


def run_ours(jobs: int, workers: int, kind: str) -> float:
    with harness.fresh_system("bench") as (url, env):
        harness.submit_many("bench.noop", {}, jobs)
        engine = create_ledger_engine(url)
        rate = harness.drain_ours(engine, env, jobs, workers, kind)
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
    parser.add_argument("--threads", type=int, default=4, help="threads per consumer")
    parser.add_argument("--processes", type=int, default=2, help="processes per consumer")
    parser.add_argument("--kinds", default="thread,process", help="thread, process or both")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in ("thread", "process") for k in kinds):
        parser.error("--kinds takes thread, process or thread,process")
    size = {"thread": args.threads, "process": args.processes}
    ours: dict[str, list[float]] = {k: [] for k in kinds}
    plain: dict[str, list[float]] = {k: [] for k in kinds}
    for run in range(args.runs):
        for kind in kinds:
            plain[kind].append(run_plain(args.jobs, size[kind], kind))
            ours[kind].append(run_ours(args.jobs, size[kind], kind))
            print(
                f"run {run + 1}, {size[kind]} {kind}(s): ours {ours[kind][-1]:.0f} jobs/s, "
                f"plain huey {plain[kind][-1]:.0f} jobs/s"
            )
    figures: dict[str, object] = {
        "benchmark": "throughput",
        "jobs": args.jobs,
        "threads": args.threads,
        "processes": args.processes,
    }
    for kind in kinds:
        name = PLURAL[kind]
        figures[f"ours_{name}_jobs_per_s"] = round(harness.median(ours[kind]), 1)
        figures[f"plain_{name}_jobs_per_s"] = round(harness.median(plain[kind]), 1)
        figures[f"ratio_{name}"] = round(
            harness.median(ours[kind]) / harness.median(plain[kind]), 3
        )
        figures[f"ours_{name}_runs"] = [round(x, 1) for x in ours[kind]]
        figures[f"plain_{name}_runs"] = [round(x, 1) for x in plain[kind]]
    best_ours = max(kinds, key=lambda k: harness.median(ours[k]))
    best_plain = max(kinds, key=lambda k: harness.median(plain[k]))
    figures["ours_best"] = f"{size[best_ours]} {PLURAL[best_ours]}"
    figures["plain_best"] = f"{size[best_plain]} {PLURAL[best_plain]}"
    figures["ratio"] = round(harness.median(ours[best_ours]) / harness.median(plain[best_plain]), 3)
    harness.report(figures)
    return 0
