"""Periodic jobs you can steer, end to end (issue 20, part 3): a real maintainer and a real
worker run a periodic job slower than its interval. With ``overlap="skip"`` two runs never
overlap and the skipped ticks are counted; ``queuectl periodic pause`` stops its ticks (the
maintainer goes on dealing with them), ``resume`` brings them back; both are audited. On
PostgreSQL + Redis and on the embedded default (SQLite + SqliteHuey)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db import periodic as store
from db.engine import engine_for, read
from db.models import AuditEntry, Job
from db.settings import get_settings
from tests.processes import Processes, processes_for, wait_for

NAME = "test.slow_tick"
MODULES = "tests.jobs_for_tests,tests.periodic_steering_jobs_for_tests"


@pytest.fixture(params=["postgresql+redis", "embedded"])
def system(
    request: pytest.FixtureRequest,
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Processes]:
    if request.param == "postgresql+redis":
        procs: Processes = request.getfixturevalue("processes")
    else:
        procs = processes_for(settings_env, monkeypatch, tmp_path)
    procs.env["QUEUE_JOB_MODULES"] = MODULES  # the CLI knows the periodic job too
    try:
        if request.param == "embedded":
            procs.cli("migrate", check=True)
        yield procs
    finally:
        procs.stop_all()


def runs() -> list[dict[str, Any]]:
    with read(engine_for(get_settings().ledger_url)) as conn:
        rows = conn.execute(
            select(Job.tick_key, Job.status, Job.started_at, Job.finished_at, Job.created_at)
            .where(Job.type == NAME)
            .order_by(Job.created_at)
        )
        return [dict(r._mapping) for r in rows]


def state() -> dict[str, Any]:
    with read(engine_for(get_settings().ledger_url)) as conn:
        return store.states(conn, [NAME]).get(NAME, {})


def listed(system: Processes) -> dict[str, Any]:
    out = system.cli("periodic", "list", "--json", check=True).stdout
    [row] = [r for r in map(json.loads, out.splitlines()) if r["name"] == NAME]
    return row


def tick_of(key: str) -> datetime:
    return datetime.fromisoformat(key.split("@", 1)[1])


def test_overlap_skip_pause_and_resume_with_real_processes(system: Processes) -> None:
    system.maintainer(extra_env={"QUEUE_JOB_MODULES": MODULES})
    system.worker("--concurrency", "3", extra_env={"QUEUE_JOB_MODULES": MODULES})
    # the job runs 2.5 s and ticks every second: ticks are skipped while it runs
    wait_for(
        lambda: (
            sum(r["status"] == "completed" for r in runs()) >= 2
            and int(state().get("skipped_count") or 0) >= 2
        ),
        60,
        "two completed runs and two skipped ticks",
    )
    done = [r for r in runs() if r["status"] == "completed"]
    for a, b in itertools.pairwise(done):
        assert b["started_at"] >= a["finished_at"], "two runs overlapped"
    row = listed(system)
    assert row["overlap"] == "skip" and row["skipped_count"] >= 2
    assert row["last_skipped_for"] is not None

    paused = system.cli("periodic", "pause", NAME, "--reason", "e2e")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"paused periodic job {NAME}"
    paused_at = datetime.now(UTC)
    assert listed(system)["paused"] is True
    # the maintainer deals with the paused ticks (last_tick moves on) without enqueuing them
    wait_for(
        lambda: (state().get("last_tick") or paused_at) >= paused_at + timedelta(seconds=3),
        30,
        "ticks dealt with while paused",
    )
    assert all(tick_of(r["tick_key"]) <= paused_at for r in runs())
    before = len(runs())

    resumed = system.cli("periodic", "resume", NAME)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: len(runs()) > before, 30, "a tick enqueued after resume")
    assert tick_of(runs()[-1]["tick_key"]) > paused_at + timedelta(seconds=3)

    with read(engine_for(get_settings().ledger_url)) as conn:
        audit = conn.execute(
            select(AuditEntry.action, AuditEntry.target, AuditEntry.role, AuditEntry.details)
            .where(AuditEntry.action.like("periodic_%"))
            .order_by(AuditEntry.id)
        ).all()
    assert [(a, t, r) for a, t, r, _ in audit] == [
        ("periodic_pause", NAME, "cli"),
        ("periodic_resume", NAME, "cli"),
    ]
    assert audit[0][3] == {"reason": "e2e"}
