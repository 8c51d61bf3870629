"""What one round trip to PostgreSQL and to Redis costs on this machine, back to back and
after the processes sat idle: the price of each hop between processes on a job's path.

    python -m bench roundtrips [--calls 500] [--idle-ms 10]

A ``SELECT 1`` on an autocommit psycopg connection and a Redis ``PING``, ``--calls`` times
each, once back to back and once with ``--idle-ms`` of sleep before every call (as a queue
at 100 jobs/s is between jobs). On a virtual machine whose idle cores sleep, a process that
waited has to be woken on a core that may be asleep too, and that wake-up, not the server's
work, is most of a round trip after idle. A submit at 100 jobs/s crosses six such hops
before its handler starts (insert and commit, the push, the pop, the lease read); plain
Huey's crosses two (push, pop): see docs/benchmarks.md, "Twelfth session".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import psycopg
import redis

from bench import harness


def _timed(call: Callable[[], object], calls: int, idle: float) -> dict[str, float]:
    seconds = []
    for _ in range(calls):
        if idle:
            time.sleep(idle)
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {
        f"p{int(q * 100)}_us": round(harness.percentile(seconds, q) * 1e6) for q in (0.5, 0.9, 0.99)
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench roundtrips")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--idle-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    idle = args.idle_ms / 1000
    client = redis.Redis.from_url(harness.REDIS_URL)
    figures: dict[str, object] = {"benchmark": "roundtrips", "calls": args.calls}
    with psycopg.connect(harness._conninfo(harness.ADMIN_URL), autocommit=True) as conn:

        def select_one() -> object:
            return conn.execute("SELECT 1").fetchall()

        for label, call in (("postgres_select_1", select_one), ("redis_ping", client.ping)):
            call()  # connected
            figures[f"{label}_back_to_back"] = _timed(call, args.calls, 0.0)
            figures[f"{label}_after_{args.idle_ms:g}ms_idle"] = _timed(call, args.calls, idle)
    harness.report(figures)
    return 0
