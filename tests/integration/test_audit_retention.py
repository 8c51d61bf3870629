"""Retention of ``audit_log`` (issue 17) on SQLite and PostgreSQL: entries older than
``QUEUE_AUDIT_RETENTION_DAYS`` (default 365) are deleted in batches by the hourly system prune
job, with the login-throttle rows that count nothing any more."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from db import audit
from db.engine import engine_for, read, write
from db.models import AuditEntry, LoginThrottle
from db.retention import prune_audit
from db.settings import Settings
from tasks.registry import JobContext


def _entries(url: str, ages_in_days: list[float]) -> None:
    now = datetime.now(UTC)
    with write(engine_for(url)) as conn:
        for age in ages_in_days:
            audit.record(
                conn,
                username="alice",
                role="admin",
                action="cancel",
                outcome="ok",
                target=f"age {age}",
                at=now - timedelta(days=age),
            )


def _ages(url: str) -> list[str]:
    with read(engine_for(url)) as conn:
        return sorted(conn.execute(select(AuditEntry.target)).scalars())


def test_old_audit_entries_are_deleted_in_batches(ledger_url: str) -> None:
    _entries(ledger_url, [400, 390, 380, 366, 300, 1])
    before = datetime.now(UTC) - timedelta(days=365)
    assert prune_audit(engine_for(ledger_url), before=before, batch_size=2) == 4
    assert _ages(ledger_url) == ["age 1", "age 300"]


def test_idle_throttle_rows_go_with_it(ledger_url: str) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "scope": "client",
            "username": "",
            "client": "a",
            "last_attempt_at": now - timedelta(days=3),
        },
        {"scope": "client", "username": "", "client": "b", "last_attempt_at": now},
        {
            "scope": "pair",
            "username": "alice",
            "client": "c",
            "last_attempt_at": now - timedelta(days=3),
            "trusted_until": now + timedelta(days=20),  # a trusted client stays
        },
    ]
    with write(engine_for(ledger_url)) as conn:
        for row in rows:
            conn.execute(insert(LoginThrottle).values(failures=1, **row))
    prune_audit(engine_for(ledger_url), before=now - timedelta(days=365))
    with read(engine_for(ledger_url)) as conn:
        left = sorted(conn.execute(select(LoginThrottle.client)).scalars())
    assert left == ["b", "c"]


def test_the_retention_defaults_to_a_year() -> None:
    assert Settings().queue_audit_retention_days == 365


@pytest.fixture
def system_jobs(use_ledger: str) -> Any:
    import tasks.jobs.system as module

    module.metrics_settings.cache_clear()
    yield module
    module.metrics_settings.cache_clear()


def test_the_hourly_prune_job_applies_the_setting(
    system_jobs: Any, use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, nothing ever deleted audit entries (~7 rows/s from one guessing thread)."""
    monkeypatch.setenv("QUEUE_AUDIT_RETENTION_DAYS", "30")
    system_jobs.metrics_settings.cache_clear()
    _entries(use_ledger, [45, 31, 29, 2])
    ctx = JobContext(
        job_id=uuid.uuid4(), attempt=1, max_attempts=1, type="system.prune_metrics", queue="system"
    )
    out = system_jobs.prune_old_metrics({}, ctx)
    assert out["audit_deleted"] == 2
    assert _ages(use_ledger) == ["age 2", "age 29"]
    with read(engine_for(use_ledger)) as conn:
        assert conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == 2
