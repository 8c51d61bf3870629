"""Console memory under a login flood: peak RSS of N parallel logins with the production
argon2 profile (argon2id, t=3, m=64 MiB, p=4), without and with the argon2 slots.

    python -m bench login_memory [--parallel 16] [--limits 16,2]

For each limit, a fresh Python process (so each peak is its own) creates a SQLite ledger with
one user hashed in the parent (the child's baseline holds no argon2 memory), then runs
``--parallel`` logins at once through ``console.passwords.authenticate`` (throttle, slots,
verification), each from its own client address, with the process's slots set to the limit
(a limit equal to ``--parallel`` is the console before the slots). It prints the baseline
RSS, the peak RSS (``ru_maxrss``), their difference, the wall time and how many logins were
accepted. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness

USER = "flood"
PASSWORD = "flood-test-password-2026"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(parallel: int, limit: int, password_hash: str) -> dict[str, Any]:
    """One measurement in this process (run by ``main`` in a fresh interpreter)."""
    from sqlalchemy import update

    from console import argon2_slots, passwords
    from db.engine import engine_for, write
    from db.migrate import upgrade
    from db.models import User

    folder = tempfile.mkdtemp(prefix="login-memory-")
    url = f"sqlite:///{folder}/ledger.db"
    engine = engine_for(url)
    upgrade(engine)
    os.environ[passwords.FAST_ENV] = "1"  # only for creating the user row cheaply
    passwords.create_user(engine, USER, PASSWORD, "analyst")
    os.environ.pop(passwords.FAST_ENV)
    with write(engine) as conn:  # the production-cost hash made by the parent
        conn.execute(update(User).where(User.username == USER).values(password_hash=password_hash))
    argon2_slots.configure(limit, wait=600.0)
    baseline = _rss_mib()
    start = threading.Barrier(parallel)
    accepted: list[bool] = []

    def login(i: int) -> None:
        start.wait()
        user = passwords.authenticate(engine, USER, PASSWORD, client=f"10.1.0.{i}")
        accepted.append(user is not None)

    began = time.monotonic()
    threads = [threading.Thread(target=login, args=(i,)) for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "limit": limit,
        "parallel": parallel,
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak, 1),
        "rise_mib": round(peak - baseline, 1),
        "seconds": round(seconds, 2),
        "accepted": sum(accepted),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench login_memory")
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--limits", default="16,2", help="comma-separated slot limits")
    parser.add_argument("--child", nargs=2, metavar=("LIMIT", "HASH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.parallel, int(args.child[0]), args.child[1])))
        return 0
    from argon2 import PasswordHasher

    password_hash = PasswordHasher().hash(PASSWORD)  # the production profile
    figures: dict[str, Any] = {"benchmark": "login_memory", "parallel": args.parallel}
    for limit in (int(x) for x in args.limits.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "login_memory",
                "--parallel",
                str(args.parallel),
                "--child",
                str(limit),
                password_hash,
            ],
            cwd=harness.ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"limit {limit:>3}: baseline {result['baseline_mib']:.0f} MiB, peak "
            f"{result['peak_mib']:.0f} MiB (+{result['rise_mib']:.0f} MiB), "
            f"{result['seconds']:.2f} s for {args.parallel} logins, "
            f"{result['accepted']} accepted"
        )
        figures[f"limit_{limit}"] = result
    harness.report(figures)
    return 0
