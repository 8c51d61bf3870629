"""Metrics end to end: jobs run by real worker and maintainer processes (PostgreSQL + Redis)
are rolled up, the rollup job itself runs in a worker, and the read models and the
Prometheus endpoint report them."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.engine import engine_for, read
from db.models import Job
from db.settings import get_settings
from metrics.prometheus import start_server
from metrics.read.errors import error_groups
from metrics.read.series import time_series
from metrics.rollup import floor_minute, rollup_range
from tasks import api
from tests.processes import Processes, wait_for

MODULES = "tests.jobs_for_tests,tasks.jobs.system"


def status_of(job_id: uuid.UUID) -> str:
    return api.get_job(job_id)["status"]


def test_real_jobs_are_rolled_up_and_exported(
    processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_JOB_MODULES", MODULES)
    get_settings.cache_clear()
    env = {"QUEUE_JOB_MODULES": MODULES}
    processes.maintainer(extra_env=env)
    processes.worker("--concurrency", "4", extra_env=env)  # all queues, "system" included

    echo = [api.submit_job("demo.echo", {"i": i}) for i in range(20)]
    flaky = [api.submit_job("demo.fail", {"fail_times": 1}) for _ in range(3)]
    doomed = api.submit_job("demo.fail", {"fail_times": 5}, max_attempts=2)
    everything = [*echo, *flaky, doomed]
    wait_for(
        lambda: all(status_of(j) in ("completed", "failed") for j in everything),
        60,
        "the jobs to finish",
    )

    # the rollup job runs in the worker like any job (its window is the last complete
    # minutes, so it may or may not see these jobs yet)
    rollup_job = api.submit_job("system.metrics_rollup", {})
    wait_for(lambda: status_of(rollup_job) == "completed", 30, "the rollup job")
    result = api.get_job(rollup_job)["result"]
    assert {"window_start", "window_end", "queue_rows", "covered_to"} <= set(result)

    # roll up the minutes these jobs finished in (they are complete one minute later)
    engine = engine_for(get_settings().ledger_url)
    with read(engine) as conn:
        first, last = conn.execute(
            select(func.min(Job.finished_at), func.max(Job.finished_at)).where(
                Job.id.in_(everything)
            )
        ).one()
    end = floor_minute(last) + timedelta(minutes=1)
    rollup_range(engine, start=first, end=end, now=end + timedelta(seconds=1))
    rows = time_series(engine, start=floor_minute(first), end=end, queue="default")
    assert sum(r["job_count"] for r in rows) == 24
    assert sum(r["completed_count"] for r in rows) == 23
    assert sum(r["failed_count"] for r in rows) == 1
    assert sum(r["error_count"] for r in rows) == 5  # 3 flaky + 2 doomed attempts
    assert sum(r["retries"] for r in rows) == 4  # all but the doomed job's last attempt
    assert all(r["processing_p50"] is not None for r in rows if r["job_count"])

    groups = error_groups(engine, since=floor_minute(first))
    assert len(groups) == 1  # one place raises DemoFailure
    (group,) = groups
    assert group["exception_type"].endswith("DemoFailure")
    assert group["location"].endswith(" in fail") and "tasks/jobs/builtin.py" in group["location"]
    assert group["count"] == 2  # the doomed job's entries (retried ones that later completed
    assert group["job_ids"] == [doomed]  # are counted by the rollups, not here)

    server = start_server(0, engine_url=get_settings().ledger_url)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as response:
            body = response.read().decode()
    finally:
        server.shutdown()
    assert "edurise_ledger_up 1.0" in body
    assert 'edurise_live_workers{queue="system"} 1.0' in body
    assert 'edurise_jobs{queue="default",status="queued"} 0.0' in body
