"""Plain Huey for comparison: PriorityRedisHuey with the same kinds of tasks, no ledger.

Run by ``huey_consumer bench.plain_app.huey -w N -k thread``. ``BENCH_REDIS_URL`` and
``BENCH_HUEY_NAME`` pick the Redis database and key prefix.
"""

from __future__ import annotations

import os
import time

from huey import PriorityRedisHuey

huey = PriorityRedisHuey(
    os.environ.get("BENCH_HUEY_NAME", "bench_plain"),
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    results=False,
)


@huey.task()
def noop() -> None:
    """Does nothing."""


@huey.task()
def sleep_ms(ms: float, submitted: float) -> None:
    """Sleeps; records (submitted, started, finished) wall-clock times for the latency bench."""
    started = time.time()
    time.sleep(ms / 1000)
    huey.storage.conn.rpush(f"{huey.name}:timings", f"{submitted} {started} {time.time()}".encode())
