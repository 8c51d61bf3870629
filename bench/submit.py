"""Single and bulk submit rates into the PostgreSQL ledger.

python -m bench submit [--seconds 3] [--bulk 20000] [--batch 5000] [--producers 4,16]

- ``single``: one thread calls ``submit_job`` in a loop (ledger only, no Redis configured).
- ``single_direct``: the same with Redis configured, so each job for the idle queue is also
  sent by its producer (direct dispatch: the insert, then a Redis push).
- ``producers``: for each count in ``--producers``, that many threads call ``submit_job`` at
  once (ledger only), as the request handlers of a web application do; concurrent calls are
  group-committed (``tasks.transport.group_commit``). ``direct_producers``: the same with Redis.
- ``bulk``: ``submit_jobs`` in batches of ``--batch``.
- ``mean_batch``: jobs per group commit in each of those runs.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import harness
from db.settings import get_settings
from tasks import api
from tasks.transport.group_commit import GroupCommit


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench submit")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--producers", default="4,16", help="thread counts, comma-separated")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.producers.split(",") if n]
    with harness.fresh_ledger() as url:
        os.environ.update({"DATABASE_URL": url, "QUEUE_JOB_MODULES": "bench.jobs"})
        os.environ.pop("REDIS_URL", None)
        get_settings.cache_clear()
        api.submit_job("bench.noop", {})  # warm up: connection, registry, statement cache
        plain = _PlainGroup()
        single = _single_rate(args.seconds, 1)
        producers, plain_batches = {}, {}
        for n in counts:
            producers[n], plain_batches[n] = plain.measure(
                lambda n=n: _single_rate(args.seconds, n)
            )
        harness.flush_redis()
        os.environ["REDIS_URL"] = harness.REDIS_URL
        os.environ["QUEUE_QUEUES"] = ",".join(f"q{i}" for i in range(1000))  # declared
        get_settings.cache_clear()
        api.submit_job("bench.noop", {})
        # no worker drains Redis here: spread the jobs over 1,000 queues so that each
        # queue's window (200) keeps room and every job takes the direct path
        direct = _single_rate(args.seconds, 1, queues=1000)
        direct_group = _DirectGroup()
        direct_producers, direct_batches = {}, {}
        for n in counts:
            direct_producers[n], direct_batches[n] = direct_group.measure(
                lambda n=n: _single_rate(args.seconds, n, queues=1000)
            )
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
            "producers_jobs_per_s": {str(n): round(r, 1) for n, r in producers.items()},
            "producers_mean_batch": {str(n): b for n, b in plain_batches.items()},
            "direct_producers_jobs_per_s": {
                str(n): round(r, 1) for n, r in direct_producers.items()
            },
            "direct_producers_mean_batch": {str(n): b for n, b in direct_batches.items()},
            "bulk_jobs_per_s": round(bulk, 1),
            "bulk_batch": args.batch,
        }
    )
    return 0


class _Group:
    """Counts the group commits of one run of a rate measurement."""

    def group(self) -> GroupCommit[Any]:
        raise NotImplementedError

    def measure(self, run: Callable[[], float]) -> tuple[float, float]:
        group = self.group()
        batches, items = group.batches, group.items
        rate = run()
        done = group.batches - batches
        return rate, round((group.items - items) / done, 2) if done else 0.0


class _PlainGroup(_Group):
    def group(self) -> GroupCommit[Any]:
        return api.plain_inserts()


class _DirectGroup(_Group):
    def group(self) -> GroupCommit[Any]:
        return api.direct_inserts()


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
