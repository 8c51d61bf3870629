"""Single and bulk submit rates into the PostgreSQL ledger.

python -m bench submit [--seconds 3] [--bulk 20000] [--batch 5000] [--producers 4]

- ``single``: one thread calls ``submit_job`` in a loop (ledger only, no Redis configured).
- ``single_direct``: the same with Redis configured, so each job for the idle queue is also
  sent by its producer (direct dispatch: the insert, then a Redis push).
- ``single_producers``: ``--producers`` threads call ``submit_job`` at once (ledger only), as
  the request handlers of a web application do; PostgreSQL commits them in groups.
- ``bulk``: ``submit_jobs`` in batches of ``--batch``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from bench import harness
from db.settings import get_settings
from tasks import api


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench submit")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--producers", type=int, default=4)
    args = parser.parse_args(argv)
    with harness.fresh_ledger() as url:
        os.environ.update({"DATABASE_URL": url, "QUEUE_JOB_MODULES": "bench.jobs"})
        os.environ.pop("REDIS_URL", None)
        get_settings.cache_clear()
        api.submit_job("bench.noop", {})  # warm up: connection, registry, statement cache
        single = _single_rate(args.seconds, 1)
        producers = _single_rate(args.seconds, args.producers)
        harness.flush_redis()
        os.environ["REDIS_URL"] = harness.REDIS_URL
        get_settings.cache_clear()
        api.submit_job("bench.noop", {})
        # no worker drains Redis here: spread the jobs over 1,000 queues so that each
        # queue's window (200) keeps room and every job takes the direct path
        direct = _single_rate(args.seconds, 1, queues=1000)
        os.environ.pop("REDIS_URL")
        get_settings.cache_clear()
        items = [{"type": "bench.noop", "data": {"i": i}} for i in range(args.bulk)]
        start = time.perf_counter()
        for at in range(0, args.bulk, args.batch):
            api.submit_jobs(items[at : at + args.batch])
        bulk = args.bulk / (time.perf_counter() - start)
    harness.report(
        {
            "benchmark": "submit",
            "single_jobs_per_s": round(single, 1),
            "single_direct_jobs_per_s": round(direct, 1),
            "single_producers": args.producers,
            "single_producers_jobs_per_s": round(producers, 1),
            "bulk_jobs_per_s": round(bulk, 1),
            "bulk_batch": args.batch,
        }
    )
    return 0


def _single_rate(seconds: float, threads: int, queues: int = 0) -> float:
    """Jobs/s that ``threads`` threads submit one at a time with ``submit_job`` (to the
    type's queue, or round-robin over ``queues`` queues)."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def produce(slot: int) -> None:
        while time.perf_counter() < deadline:
            n = counts[slot]
            queue = f"q{n % queues}" if queues else None
            api.submit_job("bench.noop", {"i": n}, queue=queue)
            counts[slot] += 1

    start = time.perf_counter()
    pool = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)
