"""Break things for real while a few thousand jobs run, then audit the ledger.

Every test: every job ends terminal, none is lost, attempts match errors, and handlers ran
at least once for every completed job. Timings: heartbeat 0.5 s, stale after 3 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import redis

from db.engine import create_ledger_engine, engine_for
from db.settings import get_settings
from tasks import api
from tests.processes import Processes, wait_for
from tests.reliability.conftest import (
    Load,
    PrivatePostgres,
    PrivateRedis,
    audit_ledger,
    kill,
    statuses,
    wait_until_done,
)

JOBS = 2000


def progress(load: Load) -> int:
    counts = statuses(load.ids)
    return counts["completed"] + counts["failed"]


def test_worker_killed_repeatedly(cluster: Processes) -> None:
    cluster.maintainer()
    workers = [cluster.worker("--concurrency", "8") for _ in range(2)]
    load = Load.submit(JOBS)
    for round_ in range(3):
        target = (round_ + 1) * JOBS // 5
        wait_for(lambda t=target: progress(load) >= t, 60, f"{target} jobs done")
        kill(workers.pop(0))  # mid-run: it has jobs running
        workers.append(cluster.worker("--concurrency", "8"))
    wait_until_done(load.ids, 120)
    audit_ledger(load)
    # the kills did interrupt jobs, and they were recovered: by the rescuer (attempts recorded
    # as started) or by the reconciler (attempts not recorded yet: thread workers record a start
    # after 50 ms, and these jobs take 5-50 ms)
    rescued = sum(
        1 for i in load.ids for e in api.get_job(i)["errors"] if e.get("kind") == "rescued"
    )
    requeued = sum(
        int(m)
        for path in cluster.log_dir.glob("maintainer-*.log")
        for m in re.findall(r"requeued (\d+) dispatched job", path.read_text(errors="replace"))
    )
    assert rescued + requeued >= 1, (rescued, requeued)


def test_worker_killed_while_holding_batches_of_very_short_jobs(cluster: Processes) -> None:
    """Jobs this short are popped in batches (architecture.md, "Prefetch"): a worker killed
    mid-drain holds popped messages no handler started. Each is counted as an attempt lost
    with its worker and runs again; none is lost, none fails for it."""
    cluster.maintainer()
    worker = cluster.worker("--concurrency", "4")
    load = Load()
    for _ in range(3):
        load.ids += api.submit_jobs([{"type": "test.work", "data": {"ms": 0}}] * 1000)
    for target in (600, 1500):
        wait_for(lambda t=target: progress(load) >= t, 60, f"{target} jobs done")
        kill(worker)
        worker = cluster.worker("--concurrency", "4")
    wait_until_done(load.ids, 120)
    audit_ledger(load)  # every job completed (two kills cost at most two of three attempts)
    lost = sum(1 for i in load.ids for e in api.get_job(i)["errors"] if "worker lost" in e["error"])
    assert lost >= 1  # the kills did take jobs with them, and they ran again


def test_redis_flushed_then_restarted(cluster: Processes, private_redis: PrivateRedis) -> None:
    cluster.maintainer()
    cluster.worker("--concurrency", "8")
    cluster.worker("--concurrency", "8")
    load = Load.submit(JOBS)
    wait_for(lambda: progress(load) >= JOBS // 4, 60, "a quarter done")
    redis.Redis.from_url(private_redis.url).flushall()
    wait_for(lambda: progress(load) >= JOBS // 2, 60, "half done after FLUSHALL")
    private_redis.stop()
    time.sleep(2)  # Redis is down for two seconds: the fault itself, not synchronisation
    private_redis.start()
    wait_until_done(load.ids, 120)
    audit_ledger(load)
    assert all(p.poll() is None for p in cluster.procs), "a process exited"


def test_postgres_restarted(
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    url = private_postgres.url
    with psycopg.connect(private_postgres.conninfo(), autocommit=True) as conn:
        conn.execute("TRUNCATE queue_jobs, queue_workers, queue_controls")
    env = {
        **settings_env,
        "DATABASE_URL": url,
        "REDIS_URL": private_redis.url,
        "QUEUE_JOB_MODULES": "tests.jobs_for_tests",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    procs = Processes(env, tmp_path)
    try:
        procs.maintainer()
        procs.worker("--concurrency", "8")
        procs.worker("--concurrency", "8")
        load = Load.submit(JOBS)
        wait_for(lambda: progress(load) >= JOBS // 3, 60, "a third done")
        private_postgres.restart()  # every connection of every process is cut
        engine_for(url).dispose()
        wait_until_done(load.ids, 180)
        audit_ledger(load)
        assert all(p.poll() is None for p in procs.procs), "a process exited\n" + procs.logs()
    finally:
        procs.stop_all()
        create_ledger_engine(url).dispose()


def test_maintainers_killed_and_doubled(cluster: Processes) -> None:
    first = cluster.maintainer()
    cluster.maintainer()  # two maintainers for the whole run
    cluster.worker("--concurrency", "8")
    cluster.worker("--concurrency", "8")
    load = Load.submit(JOBS)
    wait_for(lambda: progress(load) >= JOBS // 3, 60, "a third done")
    kill(first)
    cluster.maintainer()
    wait_until_done(load.ids, 120)
    audit_ledger(load)


def test_sigterm_during_a_long_job_hands_it_back(cluster: Processes) -> None:
    cluster.maintainer()
    worker = cluster.worker("--concurrency", "1", extra_env={"QUEUE_SHUTDOWN_TIMEOUT": "0.5"})
    job_id = api.submit_job("test.work", {"ms": 2000})
    wait_for(lambda: api.get_job(job_id)["status"] == "running", 20, "the job to start")
    worker.terminate()
    assert worker.wait(timeout=20) == 0
    job = api.get_job(job_id)
    assert job["status"] in ("queued", "dispatched")  # handed back, never left running
    # the interrupted attempt is not counted: the next one (taken when it is dispatched) is 1
    assert job["attempt"] == (1 if job["status"] == "dispatched" else 0), job
    assert job["errors"] == []
    cluster.worker("--concurrency", "1")
    wait_for(lambda: api.get_job(job_id)["status"] == "completed", 20, "the re-run")


def _hang_is_retried_then_failed(cluster: Processes, kind: str) -> dict:
    cluster.maintainer()
    cluster.worker("--concurrency", "2", "--kind", kind)
    job_id: uuid.UUID = api.submit_job("test.hang", {})
    wait_for(lambda: api.get_job(job_id)["status"] == "failed", 40, "the hung job to fail")
    return api.get_job(job_id)


def test_hung_job_in_a_process_worker_times_out(cluster: Processes) -> None:
    job = _hang_is_retried_then_failed(cluster, "process")
    assert job["attempt"] == 2
    assert all("TaskTimeout" in e["error"] for e in job["errors"]), job["errors"]


def test_hung_job_in_a_thread_worker_is_rescued_by_its_deadline(cluster: Processes) -> None:
    job = _hang_is_retried_then_failed(cluster, "thread")
    assert job["attempt"] == 2
    assert all("exceeded its timeout" in e["error"] for e in job["errors"]), job["errors"]


def test_forged_message_is_rejected_and_runs_nothing(
    cluster: Processes, private_redis: PrivateRedis, tmp_path
) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    client = redis.Redis.from_url(private_redis.url)
    key = f"huey.redis.{get_settings().queue_namespace}.default"
    client.zadd(key, {b"\x00" * 8 + pickle.dumps(Exploit()): 0})
    client.zadd(key, {b"\x00" * 8 + b'{"v": 1, "id": "not-a-job", "timeout": null}': 0})
    worker = cluster.worker("--concurrency", "1")
    cluster.maintainer()
    job_id = api.submit_job("test.work", {"ms": 1})
    wait_for(lambda: api.get_job(job_id)["status"] == "completed", 20, "a real job to run")
    wait_for(lambda: client.zcard(key) == 0, 10, "the forged messages to be consumed")
    assert not marker.exists()
    assert worker.poll() is None
    assert "rejected a message" in cluster.logs()


def test_cli_reports_a_down_ledger_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CLI reports a down ledger as one line and exit 2 (no traceback)."""
    env = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        [sys.executable, "-m", "queuectl.cli", "jobs"],
        env={**Processes({}, tmp_path).env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: database error")


def test_orphan_recovered_within_15_s_with_default_timings(cluster: Processes) -> None:
    defaults = {"QUEUE_HEARTBEAT_SECONDS": "2", "QUEUE_STALE_SECONDS": "10"}
    cluster.maintainer(extra_env=defaults)
    victim = cluster.worker("--concurrency", "1", extra_env=defaults)
    job_id = api.submit_job("test.work", {"ms": 60_000})
    wait_for(lambda: api.get_job(job_id)["status"] == "running", 20, "the job to start")
    kill(victim)
    killed = time.monotonic()
    wait_for(lambda: api.get_job(job_id)["status"] != "running", 20, "the rescue")
    assert time.monotonic() - killed <= 15
    job = api.get_job(job_id)
    assert job["status"] in ("retrying", "queued", "dispatched")  # no worker left to run it
    assert [e["kind"] for e in job["errors"]] == ["rescued"]
    api.cancel_job(job_id)
