"""CPU per job of each part of the system while it drains N pre-submitted no-op jobs.

    python -m bench cpu [--jobs 20000] [--workers 4] [--kind thread|process]

CPU time (user + system) of every process is read from ``/proc/<pid>/stat`` when the first
job is done and again when the last is: the worker (its whole process tree: the parent and
its job processes), the maintainer, the PostgreSQL processes serving the benchmark's
database plus PostgreSQL's background processes (other databases' backends are left out),
and the Redis server (shared: other clients count too). Figures are milliseconds of CPU per
job; the drain rate is printed beside them.
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


def measure(jobs: int, workers: int, kind: str) -> dict[str, float]:
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
        engine.dispose()
    done = first_left
    figures: dict[str, float] = {"jobs_per_s": done / elapsed}
    for group, pids in groups.items():
        cpu = sum(after[p][2] - (before[p][2] if p in before else 0.0) for p in pids if p in after)
        figures[f"{group}_ms_per_job"] = 1000 * cpu / done
    figures["total_ms_per_job"] = sum(v for k, v in figures.items() if k.endswith("_per_job"))
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cpu")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread")
    args = parser.parse_args(argv)
    figures = measure(args.jobs, args.workers, args.kind)
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
