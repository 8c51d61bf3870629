"""Single and bulk submit rates into the PostgreSQL ledger.

python -m bench submit [--seconds 3] [--bulk 20000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import os
import time

from bench import harness
from db.settings import get_settings
from tasks import api


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench submit")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args(argv)
    with harness.fresh_ledger() as url:
        os.environ.update({"DATABASE_URL": url, "QUEUE_JOB_MODULES": "bench.jobs"})
        get_settings.cache_clear()
        api.submit_job("bench.noop", {})  # warm up: connection, registry, statement cache
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            api.submit_job("bench.noop", {"i": n})
            n += 1
        single = n / (time.perf_counter() - start)
        items = [{"type": "bench.noop", "data": {"i": i}} for i in range(args.bulk)]
        start = time.perf_counter()
        for at in range(0, args.bulk, args.batch):
            api.submit_jobs(items[at : at + args.batch])
        bulk = args.bulk / (time.perf_counter() - start)
    harness.report(
        {
            "benchmark": "submit",
            "single_jobs_per_s": round(single, 1),
            "bulk_jobs_per_s": round(bulk, 1),
            "bulk_batch": args.batch,
        }
    )
    return 0
