"""Workers and maintainers ride out PostgreSQL and Redis being down or restarting.

A process started while a server it needs is down waits for it (one warning line per outage,
one line when it is back) instead of exiting; a restart while jobs run costs no traceback per
job. Every test runs on the private PostgreSQL cluster and the private Redis of
``conftest.py``, which it stops and starts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from db.engine import create_ledger_engine, engine_for
from tasks import api
from tests.processes import Processes, processes_for, wait_for
from tests.reliability.conftest import (
    Load,
    PrivatePostgres,
    PrivateRedis,
    audit_ledger,
    statuses,
    wait_until_done,
)

LEDGER_DOWN = "ledger unreachable, waiting"
LEDGER_BACK = "ledger is back"
REDIS_DOWN = "Redis unreachable, waiting"
REDIS_BACK = "Redis is back"
#: logged at DEBUG by every failed probe after the first: proves a wait went on for a while
STILL_DOWN = "still unreachable"
TRACEBACKS = ("Traceback", "Unhandled exception in task", "Error reading from queue")


@pytest.fixture
def private_procs(
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Processes]:
    """Processes on the private PostgreSQL cluster (emptied) and the private Redis."""
    with psycopg.connect(private_postgres.conninfo(), autocommit=True) as conn:
        conn.execute("TRUNCATE queue_jobs, queue_workers, queue_controls")
    procs = processes_for(
        settings_env,
        monkeypatch,
        tmp_path,
        DATABASE_URL=private_postgres.url,
        REDIS_URL=private_redis.url,
    )
    try:
        yield procs
    finally:
        procs.stop_all()
        engine_for(private_postgres.url).dispose()
        create_ledger_engine(private_postgres.url).dispose()


def log_of(procs: Processes, proc: subprocess.Popen[bytes]) -> str:
    index = procs.procs.index(proc)
    (path,) = procs.log_dir.glob(f"*-{index}.log")
    return path.read_text(errors="replace")


def logged(procs: Processes, proc: subprocess.Popen[bytes], text: str, times: int = 1) -> bool:
    return log_of(procs, proc).count(text) >= times


def assert_quiet(procs: Processes, *watched: subprocess.Popen[bytes]) -> None:
    """Still running, and no traceback in the log."""
    for proc in watched:
        assert proc.poll() is None, "a process exited\n" + procs.logs()
        text = log_of(procs, proc)
        assert not [t for t in TRACEBACKS if t in text], text[-3000:]


def run_a_job() -> None:
    job_id = api.submit_job("test.work", {"ms": 1})
    wait_for(lambda: api.get_job(job_id)["status"] == "completed", 20, "the job to complete")


def start_while_down(
    procs: Processes, stop: Callable[[], None], start: Callable[[], None], back: str
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A worker and a maintainer started while a server is stopped: each keeps trying (two
    failed tries seen, still running); once the server is started again each logs ``back``
    and a job completes. Returns (worker, maintainer)."""
    debug = {"LOG_LEVEL": "DEBUG"}  # shows every failed try (STILL_DOWN)
    stop()
    try:
        worker = procs.worker("--concurrency", "2", extra_env=debug)
        maintainer = procs.maintainer(extra_env=debug)
        for proc in (worker, maintainer):
            wait_for(lambda p=proc: logged(procs, p, STILL_DOWN, 2), 20, "two failed tries")
            assert proc.poll() is None, log_of(procs, proc)
    finally:
        start()
    for proc in (worker, maintainer):
        wait_for(lambda p=proc: logged(procs, p, back), 20, "the server to be back")
    run_a_job()
    return worker, maintainer


def test_started_while_postgres_is_down_they_wait_for_it(
    private_procs: Processes, private_postgres: PrivatePostgres
) -> None:
    """A worker and a maintainer started with the ledger down keep retrying (one warning
    line each, however many tries) and work once it is up."""
    procs = private_procs
    worker, maintainer = start_while_down(
        procs, private_postgres.halt, private_postgres.start, LEDGER_BACK
    )
    assert_quiet(procs, worker, maintainer)
    for proc in (worker, maintainer):
        assert log_of(procs, proc).count(LEDGER_DOWN) == 1


def test_started_while_redis_is_down_they_wait_for_it(
    private_procs: Processes, private_redis: PrivateRedis
) -> None:
    """The same with Redis down at start; then Redis is killed again under a running worker:
    one warning for that outage too, no traceback per read."""
    procs = private_procs
    worker, maintainer = start_while_down(
        procs, private_redis.stop, private_redis.start, REDIS_BACK
    )
    assert_quiet(procs, worker, maintainer)
    assert log_of(procs, worker).count(REDIS_DOWN) == 1
    assert log_of(procs, maintainer).count(REDIS_DOWN) == 1

    # Redis goes away under the running worker: its two handler threads fail their reads,
    # and its scheduler its once-a-second read
    private_redis.stop()
    try:
        wait_for(lambda: logged(procs, worker, REDIS_DOWN, 2), 20, "the worker to notice")
        time.sleep(2.5)  # the fault itself, not synchronisation: 2 s of scheduler reads
    finally:
        private_redis.start()
    wait_for(lambda: logged(procs, worker, REDIS_BACK, 2), 20, "the worker to read again")
    run_a_job()
    assert_quiet(procs, worker)
    assert log_of(procs, worker).count(REDIS_DOWN) == 2  # one per outage, not per read


def test_postgres_restart_mid_run_logs_no_traceback(
    private_procs: Processes, private_postgres: PrivatePostgres
) -> None:
    """Jobs running while the ledger restarts are retried quietly: no traceback per job in
    the workers' logs (thread and process workers), and every job ends as it should."""
    procs = private_procs
    maintainer = procs.maintainer()
    workers = [
        procs.worker("--concurrency", "4"),
        procs.worker("--concurrency", "2", "--kind", "process"),
    ]
    load = Load.submit(600)

    def done() -> int:
        counts = statuses(load.ids)
        return counts["completed"] + counts["failed"]

    wait_for(lambda: done() >= 150, 30, "a quarter done")
    private_postgres.restart()  # every connection is cut; the server starts up again
    engine_for(private_postgres.url).dispose()
    assert done() < len(load.ids), "the restart came too late to hit running jobs"
    wait_until_done(load.ids, 60)
    audit_ledger(load)
    assert_quiet(procs, maintainer, *workers)


def test_waiting_processes_stop_at_once_on_sigterm(
    private_procs: Processes, private_postgres: PrivatePostgres
) -> None:
    """A worker, a maintainer and `queuectl up` waiting for the ledger exit cleanly (code 0)
    on SIGTERM, without waiting for their next try; `up` starts no child meanwhile."""
    procs = private_procs
    slow = {"LOG_LEVEL": "DEBUG"}
    private_postgres.halt()
    try:
        waiting = [
            procs.worker("--concurrency", "2", extra_env=slow),
            procs.maintainer(extra_env=slow),
            procs.start("up", "--no-console", extra_env=slow),
        ]
        for proc in waiting:  # the fourth failed try: 4 s until the next one
            wait_for(lambda p=proc: logged(procs, p, STILL_DOWN, 3), 20, "four failed tries")
        for proc in waiting:
            proc.terminate()
        for proc in waiting:
            assert proc.wait(timeout=3) == 0, log_of(procs, proc)
            text = log_of(procs, proc)
            assert "stopped while waiting for ledger" in text
            assert not [t for t in TRACEBACKS if t in text], text[-3000:]
        assert "started maintainer" not in log_of(procs, waiting[2])
    finally:
        private_postgres.start()
