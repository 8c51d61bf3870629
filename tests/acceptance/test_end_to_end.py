"""End to end on PostgreSQL + Redis with real worker and maintainer processes."""

from __future__ import annotations

import itertools
import json
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from db.engine import engine_for, read
from db.models import Job
from db.settings import get_settings
from tasks import api
from tests.acceptance.conftest import Processes, wait_for


def status_of(job_id: uuid.UUID) -> str:
    return api.get_job(job_id)["status"]


def all_finished(ids: list[uuid.UUID]) -> bool:
    return all(status_of(i) in ("completed", "failed", "cancelled") for i in ids)


def executions() -> list[list[str]]:
    path = get_settings().queue_data_dir / "executions.log"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines()]


def test_higher_priority_submitted_later_starts_first(processes: Processes) -> None:
    processes.maintainer()
    blocker = api.submit_job("test.record", {"seconds": 1.5, "tag": "blocker"})
    processes.worker("--concurrency", "1", "--queues", "default")
    wait_for(lambda: status_of(blocker) == "running", 20, "the blocker to start")
    low = [api.submit_job("test.record", {"tag": f"low{i}"}, 1) for i in range(3)]
    high = [api.submit_job("test.record", {"tag": f"high{i}"}, 9) for i in range(3)]
    wait_for(lambda: all_finished(low + high), 30, "all jobs to finish")
    order = [row[2] for row in executions()]
    assert order == ["blocker", "high0", "high1", "high2", "low0", "low1", "low2"]


def test_scheduled_job_waits_for_its_time(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    due = datetime.now(UTC) + timedelta(seconds=2)
    job_id = api.schedule_job("demo.echo", {"x": 1}, due)
    assert status_of(job_id) == "scheduled"
    wait_for(lambda: status_of(job_id) == "completed", 20, "the scheduled job to complete")
    job = api.get_job(job_id)
    assert job["started_at"] >= due


def test_retries_with_backoff_until_success(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    job_id = api.submit_job("demo.fail", {"fail_times": 2})
    wait_for(lambda: status_of(job_id) == "completed", 30, "demo.fail to succeed")
    job = api.get_job(job_id)
    assert job["attempt"] == 3
    assert job["result"] == {"succeeded_on_attempt": 3}
    assert [e["attempt"] for e in job["errors"]] == [1, 2]
    assert all("DemoFailure" in e["traceback"] for e in job["errors"])


def test_fails_after_max_attempts_with_every_error(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    job_id = api.submit_job("demo.fail", {"fail_times": 5})
    wait_for(lambda: status_of(job_id) == "failed", 30, "demo.fail to fail")
    job = api.get_job(job_id)
    assert job["attempt"] == 3
    assert [e["attempt"] for e in job["errors"]] == [1, 2, 3]
    assert "attempt 3" in job["last_error"]
    api.retry_job(job_id)  # an admin retry gives one more attempt (it fails: fail_times=5)
    wait_for(lambda: len(api.get_job(job_id)["errors"]) == 4, 30, "the retried attempt")
    wait_for(lambda: status_of(job_id) == "failed", 10, "the job to fail again")
    assert api.get_job(job_id)["attempt"] == 4


def test_retry_job_runs_a_failed_job_again(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    job_id = api.submit_job("demo.fail", {"fail_times": 1}, max_attempts=1)
    wait_for(lambda: status_of(job_id) == "failed", 20, "the job to fail")
    api.retry_job(job_id)
    wait_for(lambda: status_of(job_id) == "completed", 20, "the retried job to complete")
    assert api.get_job(job_id)["result"] == {"succeeded_on_attempt": 2}
    assert len(api.get_job(job_id)["errors"]) == 1


def test_cancelled_scheduled_job_never_runs(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    cancelled = api.schedule_job("test.record", {"tag": "cancelled"}, 1.0)
    marker = api.schedule_job("test.record", {"tag": "marker"}, 2.0)
    assert api.cancel_job(cancelled) == "cancelled"
    wait_for(lambda: status_of(marker) == "completed", 20, "the later job to run")
    assert status_of(cancelled) == "cancelled"
    assert [row[2] for row in executions()] == ["marker"]


def test_killed_worker_job_is_rerun(processes: Processes) -> None:
    processes.maintainer()
    victim = processes.worker("--concurrency", "1")
    job_id = api.submit_job("test.record", {"seconds": 30, "tag": "long"})
    wait_for(lambda: status_of(job_id) == "running", 20, "the job to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = datetime.now(UTC)
    processes.worker("--concurrency", "1", extra_env={})
    # stale after 3 s; the rescuer moves it to retrying; backoff 0.1-0.2 s; then it runs again
    wait_for(lambda: api.get_job(job_id)["attempt"] == 2, 20, "the job to be re-run")
    job = api.get_job(job_id)
    assert job["errors"][0]["kind"] == "rescued"
    assert job["started_at"] - killed_at < timedelta(seconds=15)
    api.cancel_job(job_id)  # a cancel request on the 30 s re-run: it ends when it finishes


def test_jobs_survive_a_redis_flush(processes: Processes) -> None:
    processes.maintainer()
    ids = api.submit_jobs([{"type": "demo.echo", "data": {"i": i}} for i in range(50)])
    wait_for(
        lambda: all(status_of(i) == "dispatched" for i in ids), 20, "the jobs to be dispatched"
    )
    redis.Redis.from_url(get_settings().redis_url).flushdb()  # every message is gone
    processes.worker("--concurrency", "4")
    wait_for(lambda: all(status_of(i) == "completed" for i in ids), 30, "all jobs to complete")


def test_periodic_job_yields_one_row_per_tick_with_two_maintainers(
    processes: Processes,
) -> None:
    periodic = {"QUEUE_JOB_MODULES": "tests.jobs_for_tests,tests.periodic_jobs_for_tests"}
    processes.maintainer(extra_env=periodic)
    processes.maintainer(extra_env=periodic)
    processes.worker("--concurrency", "2", extra_env=periodic)
    engine = engine_for(get_settings().ledger_url)

    def ticks() -> list[tuple[str, str]]:
        with read(engine) as conn:
            return list(
                conn.execute(select(Job.tick_key, Job.status).where(Job.type == "test.tick"))
            )

    wait_for(lambda: len(ticks()) >= 3, 20, "three ticks")
    rows = ticks()
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys))
    stamps = sorted(datetime.fromisoformat(k.split("@", 1)[1]) for k in keys)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(stamps)}
    assert gaps == {2.0}
    wait_for(lambda: any(s == "completed" for _, s in ticks()), 20, "a tick to run")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=str)
def test_graceful_shutdown_finishes_the_running_job(
    processes: Processes, stop: signal.Signals
) -> None:
    """``docker stop`` (SIGTERM), Ctrl-C (SIGINT) and a closed terminal (SIGHUP) all let the
    running job finish, and the worker exits (it does not restart itself on SIGHUP)."""
    processes.maintainer()
    worker = processes.worker("--concurrency", "1")
    job_id = api.submit_job("demo.sleep", {"seconds": 1.0})
    wait_for(lambda: status_of(job_id) == "running", 20, "the job to start")
    worker.send_signal(stop)
    assert worker.wait(timeout=15) == 0
    assert status_of(job_id) == "completed"


def test_a_second_signal_cuts_the_graceful_wait_short(processes: Processes, tmp_path: Path) -> None:
    """The first SIGTERM waits for the running job; a second one stops the wait: the worker
    exits at once and hands the job back to the queue."""
    processes.maintainer()
    worker = processes.worker("--concurrency", "1", extra_env={"QUEUE_SHUTDOWN_TIMEOUT": "60"})
    job_id = api.submit_job("demo.sleep", {"seconds": 60.0})
    wait_for(lambda: status_of(job_id) == "running", 20, "the job to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping gracefully" in processes.logs(), 10, "the worker's graceful wait")
    assert worker.poll() is None, "the worker stopped before its running job ended"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    wait_for(lambda: status_of(job_id) != "running", 10, "the job handed back")
    assert status_of(job_id) in ("queued", "dispatched")


def test_cli_submit_show_and_errors(processes: Processes, tmp_path: Path) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    out = processes.cli("submit", "demo.echo", "--data", '{"x": 1}', check=True)
    job_id = out.stdout.strip()
    assert uuid.UUID(job_id)

    def shown() -> dict:
        return json.loads(processes.cli("show", job_id, "--json", check=True).stdout)

    wait_for(lambda: shown()["status"] == "completed", 5, "the job to complete within 5 s")
    assert shown()["result"] == {"x": 1}
    listed = processes.cli(
        "jobs", "--json", "--status", "completed", "--type", "demo.echo", check=True
    ).stdout
    assert [json.loads(line)["id"] for line in listed.splitlines()] == [job_id]
    bad_calls = (
        ["submit", "nope"],
        ["submit", "demo.echo", "--data", "{not json"],
        ["submit", "demo.echo", "--priority", "99"],
        ["submit", "demo.echo", "--at", "2030-01-01T00:00:00"],
        ["show", str(uuid.uuid4())],
        ["cancel", job_id],
        ["retry", job_id],
    )
    with ThreadPoolExecutor(max_workers=4) as pool:  # separate processes, run side by side
        results = list(pool.map(lambda args: processes.cli(*args), bad_calls))
    for bad, result in zip(bad_calls, results, strict=True):
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ")
    with read(engine_for(get_settings().ledger_url)) as conn:
        ours = select(func.count()).select_from(Job).where(Job.queue != "system")
        assert conn.execute(ours).scalar_one() == 1  # the bad submits wrote nothing
