"""Shared parts of the benchmarks: a fresh ledger database, a private Redis db, processes."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from db.engine import create_ledger_engine, read
from db.migrate import upgrade
from db.models import Job

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"),
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


@contextmanager
def fresh_ledger() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards."""
    name = f"edurise_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_conninfo(ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(False)
    engine = create_ledger_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(_conninfo(ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_system(prefix: str = "bench") -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh migrated ledger and an empty Redis database, with this process's job API
    pointed at them; yields the ledger's URL and the environment of the system's processes."""
    from db.settings import get_settings

    with fresh_ledger() as url:
        flush_redis()
        env = ledger_env(url, f"{prefix}{uuid.uuid4().hex[:6]}")
        os.environ.update(env)
        get_settings.cache_clear()
        yield url, env


def submit_many(type_name: str, data: dict[str, Any], count: int) -> None:
    """``count`` jobs of one type with the same data, in bulk submits of 5,000."""
    from tasks import api

    for start in range(0, count, 5000):
        api.submit_jobs([{"type": type_name, "data": data}] * min(5000, count - start))


def flush_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client


class Procs:
    """Child processes of one measured system; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def queuectl(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, "-m", "queuectl.cli", *args)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ledger_env(url: str, namespace: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "QUEUE_JOB_MODULES": "bench.jobs",
        "QUEUE_NAMESPACE": namespace,
    }


def plain_env(name: str) -> dict[str, str]:
    return {"BENCH_REDIS_URL": REDIS_URL, "BENCH_HUEY_NAME": name}


def huey_consumer(procs: Procs, workers: int, kind: str) -> subprocess.Popen[bytes]:
    return procs.start(
        sys.executable,
        "-m",
        "huey.bin.huey_consumer",
        "bench.plain_app.huey",
        "-w",
        str(workers),
        "-k",
        kind,
        "-q",
        "-n",
    )


def drain_rate(remaining: Callable[[], int], total: int, timeout: float = 600) -> float:
    """Jobs/s between the first job done and the last: poll ``remaining()`` every 100 ms."""
    deadline = time.monotonic() + timeout
    first_at = None
    first_left = total
    while True:
        left = remaining()
        now = time.monotonic()
        if first_at is None and left < total:
            first_at, first_left = now, left
        if left == 0:
            assert first_at is not None
            return (first_left - 0) / max(now - first_at, 1e-9) if now > first_at else 0.0
        if now > deadline:
            raise TimeoutError(f"{left} of {total} jobs left after {timeout}s")
        time.sleep(0.1)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` every 50 ms until it holds; TimeoutError naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def report(figures: dict[str, Any]) -> None:
    """Print the figures, then (the contract of every benchmark) one JSON line."""
    for key, value in figures.items():
        print(f"{key:>32}: {value:.3f}" if isinstance(value, float) else f"{key:>32}: {value}")
    print(json.dumps(figures, sort_keys=True))


def median(values: list[float]) -> float:
    return statistics.median(values)


def drain_ours(engine: Engine, env: dict[str, str], jobs: int, workers: int, kind: str) -> float:
    """Start a maintainer and one worker command (``--concurrency workers --kind kind``) on
    the system of ``env`` and return the drain rate of the ``jobs`` jobs waiting there
    (:func:`drain_rate`); the processes are stopped before it returns."""

    def remaining() -> int:
        with read(engine) as conn:
            stmt = select(func.count()).where(Job.status != "completed")
            return int(conn.execute(stmt).scalar_one())

    with Procs(env) as procs:
        procs.queuectl("maintainer")
        procs.queuectl("worker", "--concurrency", str(workers), "--kind", kind)
        return drain_rate(remaining, jobs)
