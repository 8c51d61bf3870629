"""CPU per job of each part of the system while it drains N pre-submitted no-op jobs.

    python -m bench cpu [--jobs 20000] [--workers 4] [--kind thread|process] [--idle 0]

CPU time (user + system) of every process is read from ``/proc/<pid>/stat`` when the first
job is done and again when the last is: the worker (its whole process tree: the parent and
its job processes), the maintainer, the PostgreSQL processes serving the benchmark's
database plus PostgreSQL's background processes (other databases' backends are left out),
and the Redis server (shared: other clients count too). Figures are milliseconds of CPU per
job; the drain rate is printed beside them.

``--idle SECONDS``: then, with every job done, the same parts' CPU over that many seconds of
an idle system (``*_idle_ms_per_s``: milliseconds of CPU a second): what the maintainer's
loops, heartbeats and waiting handlers cost when nothing runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import psycopg
from sqlalchemy import func, select

from bench import harness
from db.engine import create_ledger_engine, read
from db.models import Job

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """``(command name, parent pid, CPU seconds)`` of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _all() -> dict[int, tuple[str, int, float]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def _tree(root: int, table: dict[int, tuple[str, int, float]]) -> set[int]:
    pids, grew = {root}, True
    while grew:
        more = {p for p, (_, ppid, _) in table.items() if ppid in pids} - pids
        grew, pids = bool(more), pids | more
    return pids


def _postgres_pids(database: str, admin_url: str) -> set[int]:
    """PostgreSQL processes serving ``database``, and its background processes."""
    conninfo = harness._conninfo(admin_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s OR datname IS NULL", (database,)
        ).fetchall()
    return {int(r[0]) for r in rows}


def _redis_pids(table: dict[int, tuple[str, int, float]]) -> set[int]:
    return {p for p, (name, _, _) in table.items() if name.startswith("redis-server")}


def _cpu(
    pids: set[int],
    before: dict[int, tuple[str, int, float]],
    after: dict[int, tuple[str, int, float]],
) -> float:
    """CPU seconds the live processes ``pids`` used between the two readings."""
    return sum(after[p][2] - (before[p][2] if p in before else 0.0) for p in pids if p in after)


def measure(jobs: int, workers: int, kind: str, idle: float = 0.0) -> dict[str, float]:
    with harness.fresh_system("bench") as (url, env):
        harness.submit_many("bench.noop", {}, jobs)
        engine = create_ledger_engine(url)
        database = str(engine.url.database)

        def remaining() -> int:
            with read(engine) as conn:
                stmt = select(func.count()).where(Job.status != "completed")
                return int(conn.execute(stmt).scalar_one())

        with harness.Procs(env) as procs:
            maintainer = procs.queuectl("maintainer")
            worker = procs.queuectl("worker", "--concurrency", str(workers), "--kind", kind)
            harness.wait_until(lambda: remaining() < jobs, "the first job done", 120)
            first_left, first_at = remaining(), time.monotonic()
            before = _all()
            harness.wait_until(lambda: remaining() == 0, "every job done", 600)
            elapsed = time.monotonic() - first_at
            after = _all()
            groups = {
                "worker": _tree(worker.pid, after),
                "maintainer": _tree(maintainer.pid, after),
                "postgres": _postgres_pids(database, harness.ADMIN_URL),
                "redis": _redis_pids(after),
            }
            if idle > 0:
                time.sleep(1.0)  # the last outcomes and mark releases written
                idle_before = _all()
                time.sleep(idle)
                idle_after = _all()
        engine.dispose()
    done = first_left
    figures: dict[str, float] = {"jobs_per_s": done / elapsed}
    for group, pids in groups.items():
        figures[f"{group}_ms_per_job"] = 1000 * _cpu(pids, before, after) / done
    figures["total_ms_per_job"] = sum(v for k, v in figures.items() if k.endswith("_per_job"))
    if idle > 0:
        for group, pids in groups.items():
            figures[f"{group}_idle_ms_per_s"] = 1000 * _cpu(pids, idle_before, idle_after) / idle
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cpu")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle to measure")
    args = parser.parse_args(argv)
    figures = measure(args.jobs, args.workers, args.kind, args.idle)
    harness.report(
        {
            "benchmark": "cpu",
            "jobs": args.jobs,
            "workers": args.workers,
            "kind": args.kind,
            **{k: round(v, 3) for k, v in figures.items()},
        }
    )
    return 0
