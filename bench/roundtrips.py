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

It also times, in a fresh migrated ledger, a one-row INSERT into a plain table and the
ledger's own insert of one job (``producer.insert_batch_dbapi``, as a submit sends it), each
committed durably (autocommit, ``synchronous_commit`` on, as every ledger write) and with
``synchronous_commit = off`` (never used by the system: it shows what the WAL flush of a
commit costs): the floor under a submit, whose row is durable before its message is sent
(docs/benchmarks.md, "Thirteenth session").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import psycopg
import redis

from bench import harness
from db.engine import create_ledger_engine
from db.ledger import producer


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
    with harness.fresh_ledger() as url, psycopg.connect(harness._conninfo(url)) as scratch:
        scratch.autocommit = True
        scratch.execute("CREATE TABLE roundtrip_rows (n integer)")
        dialect = create_ledger_engine(url).dialect

        def insert_row() -> object:
            return scratch.execute("INSERT INTO roundtrip_rows VALUES (1)")

        def insert_job() -> object:
            new = producer.NewJob(
                type="bench.noop", queue="default", priority=0, data={}, max_attempts=1
            )
            return producer.insert_batch_dbapi(scratch, dialect, [new])

        for what, call in (("row", insert_row), ("job", insert_job)):
            for flush in ("on", "off"):
                scratch.execute(f"SET synchronous_commit = {flush}")
                call()
                label = f"postgres_insert_{what}_{'durable' if flush == 'on' else 'no_wal_flush'}"
                figures[f"{label}_back_to_back"] = _timed(call, args.calls, 0.0)
                figures[f"{label}_after_{args.idle_ms:g}ms_idle"] = _timed(call, args.calls, idle)
    harness.report(figures)
    return 0
