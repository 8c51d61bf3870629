"""Fault-injection harness: private Redis and PostgreSQL servers that a test may stop and
restart, a mixed load of a few thousand jobs, and the end-of-run ledger audit."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import select

from db.engine import create_ledger_engine, engine_for, read
from db.migrate import upgrade
from db.models import Job
from db.settings import get_settings
from tasks import api
from tests.processes import Processes, processes_for, wait_for

TERMINAL = {"completed", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free port: safe to flush, kill and restart."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is required (apt-get install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 10, "private redis to start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temp dir) that a test may restart."""

    def __init__(self, workdir: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            pytest.fail("PostgreSQL server binaries are required (/usr/lib/postgresql/*/bin)")
        self.bin = bins[-1]
        # its own folder outside pytest's private (0700) temp tree: the server runs as postgres
        self.root = Path(tempfile.mkdtemp(prefix="edurise-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/ledger"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")

    def conninfo(self, db: str = "ledger") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def _ctl(self, action: str) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-m", "fast", "-o", opts,
                  "-l", str(self.log))  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def halt(self) -> None:
        """Stop the server and keep its data: :meth:`start` brings it back."""
        self._ctl("stop")

    def stop(self) -> None:
        self._ctl("stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(tmp_path_factory.mktemp("pg"))
    server.init()
    engine = create_ledger_engine(server.url)
    upgrade(engine)
    engine.dispose()
    yield server
    server.stop()


@dataclass
class Load:
    """A mixed load: short sleeps, mixed priorities, some scheduled, some failing."""

    ids: list[uuid.UUID] = field(default_factory=list)
    expect_failed: set[uuid.UUID] = field(default_factory=set)

    @classmethod
    def submit(cls, n: int, seed: int = 7) -> Load:
        rng = random.Random(seed)
        items = []
        for i in range(n):
            fail_times = 0
            roll = rng.random()
            if roll < 0.05:
                fail_times = 1  # recovers on attempt 2
            elif roll < 0.07:
                fail_times = 9  # fails all 3 attempts
            item = {
                "type": "test.work",
                "data": {"ms": rng.randint(5, 50), "fail_times": fail_times},
                "priority": rng.randint(0, 9),
            }
            if i % 10 == 0:
                item["schedule"] = timedelta(seconds=rng.uniform(0.5, 3.0))
            items.append(item)
        load = cls()
        for start in range(0, n, 500):
            load.ids.extend(api.submit_jobs(items[start : start + 500]))
        load.expect_failed = {
            job_id for job_id, item in zip(load.ids, items, strict=True)
            if item["data"]["fail_times"] >= 3
        }  # fmt: skip
        return load


def statuses(ids: list[uuid.UUID]) -> Counter[str]:
    engine = engine_for(get_settings().ledger_url)
    with read(engine) as conn:
        rows = conn.execute(select(Job.status).where(Job.id.in_(ids)))
        return Counter(rows.scalars())


def wait_until_done(ids: list[uuid.UUID], timeout: float) -> None:
    def done() -> bool:
        counts = statuses(ids)
        return sum(counts.values()) == len(ids) and set(counts) <= TERMINAL

    try:
        wait_for(done, timeout, "every job to reach a terminal state", interval=0.5)
    except AssertionError:
        raise AssertionError(f"not done: {dict(statuses(ids))}") from None


def audit_ledger(load: Load) -> None:
    """Every job terminal, none lost, attempts consistent with errors, executions >= completed."""
    engine = engine_for(get_settings().ledger_url)
    with read(engine) as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                select(Job.id, Job.status, Job.attempt, Job.max_attempts, Job.errors).where(
                    Job.id.in_(load.ids)
                )
            )
        }
    assert set(rows) == set(load.ids), f"{len(set(load.ids) - set(rows))} job(s) lost"
    for job_id, row in rows.items():
        assert row.status in TERMINAL, (job_id, row.status)
        assert 1 <= row.attempt <= row.max_attempts, (job_id, row.attempt, row.max_attempts)
        attempts = [e["attempt"] for e in row.errors]
        assert len(attempts) == len(set(attempts)), (job_id, attempts)  # one entry per attempt
        assert all(1 <= a <= row.attempt for a in attempts), (job_id, attempts)
        if row.status == "completed":
            assert row.attempt not in attempts, (job_id, row.attempt, attempts)
        if row.status == "failed":
            assert row.attempt in attempts and row.attempt == row.max_attempts, (job_id, row)
    completed = [i for i, r in rows.items() if r.status == "completed"]
    assert {i for i, r in rows.items() if r.status == "failed"} == load.expect_failed
    log = get_settings().queue_data_dir / "work.log"
    executed = Counter(uuid.UUID(line.split()[0]) for line in log.read_text().splitlines())
    assert all(executed[i] >= 1 for i in completed)  # at-least-once, never zero
    assert sum(executed.values()) >= len(completed)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def run_deadline() -> float:
    return time.monotonic() + 240


@pytest.fixture
def cluster(
    pg_url: str,
    private_redis: PrivateRedis,
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Processes]:
    """Shared PostgreSQL test database + a private Redis; processes run the test job types."""
    from tests.conftest import empty_tables

    empty_tables(engine_for(pg_url))
    procs = processes_for(
        settings_env, monkeypatch, tmp_path, DATABASE_URL=pg_url, REDIS_URL=private_redis.url
    )
    try:
        yield procs
    finally:
        procs.stop_all()
