"""Fixtures for the console's AppTest tests: a migrated ledger, users, a fresh AppTest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import Engine, insert, select, text
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from console import passwords
from db.engine import engine_for, read, write
from db.models import AuditEntry, Base, Metric, TypeMetric
from db.settings import get_settings

APP = str(Path(__file__).resolve().parents[2] / "console" / "app.py")
PASSWORD = "correct horse battery"


def _clear_streamlit_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


def _setup(url: str, monkeypatch: pytest.MonkeyPatch, settings_env: dict[str, str]) -> str:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    settings_env["DATABASE_URL"] = url
    get_settings.cache_clear()
    _clear_streamlit_caches()
    engine = engine_for(url)
    passwords.create_user(engine, "alice", PASSWORD, "admin")
    passwords.create_user(engine, "bob", PASSWORD, "analyst")
    return url


@pytest.fixture
def console_db(
    sqlite_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A SQLite ledger with admin ``alice`` and analyst ``bob``; the API points at it."""
    yield _setup(sqlite_url, monkeypatch, settings_env)
    _clear_streamlit_caches()


@pytest.fixture
def console_pg(
    pg_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The same on PostgreSQL (tables emptied first)."""
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in Base.metadata.sorted_tables)}"))
    yield _setup(pg_url, monkeypatch, settings_env)
    _clear_streamlit_caches()


@pytest.fixture
def make_app() -> Callable[..., AppTest]:
    """``make_app(role)``: the console, signed in as alice (admin) or bob (analyst), not run."""

    def make(role: str | None = "admin") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=20)
        if role is not None:
            name = "alice" if role == "admin" else "bob"
            at.session_state["user"] = {"name": name, "role": role}
        return at

    return make


def audit_rows(engine: Engine) -> list[dict]:
    with read(engine) as conn:
        rows = conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.__table__.c.id))
        return [dict(r._mapping) for r in rows]


def job_rows(engine: Engine) -> list[dict]:
    from db.models import Job

    with read(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(select(Job.__table__))]


def run_to_failure(url: str, job_id: object, error: str = "ValueError: boom") -> None:
    """Claim the job and fail its attempts until it is ``failed`` (as a worker would)."""
    import uuid

    from db.ledger import attempts, maintainer

    jid = uuid.UUID(str(job_id))
    engine = engine_for(url)
    while True:
        with write(engine) as conn:
            claimed = attempts.claim(conn, jid, None)
        assert claimed is not None
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "attempt": claimed.attempt,
            "error": error,
            "traceback": (
                "Traceback (most recent call last):\n"
                '  File "/app/handlers.py", line 12, in handle\n'
                "    raise ValueError(...)\n"
                f"{error}\n"
            ),
            "worker": None,
            "kind": "error",
        }
        with write(engine) as conn:
            status = attempts.fail_attempt(conn, jid, claimed.lease, entry, 0)
        if status == "failed":
            return
        with write(engine) as conn:  # retrying -> queued at once
            maintainer.stage_due(conn)


def run_to_completion(url: str, job_id: object, result: object = None) -> None:
    import uuid

    from db.engine import write
    from db.ledger import attempts

    jid = uuid.UUID(str(job_id))
    engine = engine_for(url)
    with write(engine) as conn:
        claimed = attempts.claim(conn, jid, None)
    assert claimed is not None
    with write(engine) as conn:
        assert attempts.complete(conn, jid, claimed.lease, result or {"ok": True})


def insert_metrics(url: str, queues: tuple[str, ...] = ("default", "reports")) -> None:
    """An hour of per-minute rollups, ending ten minutes ago (clear of the live rollup)."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    rows, type_rows = [], []
    for q_index, queue in enumerate(queues):
        for i in range(60):
            minute = end - timedelta(minutes=i)
            count = 20 + (i * 7 + q_index * 5) % 30
            failed = i % 9 == 0
            common = {
                "queue_name": queue,
                "timestamp": minute,
                "created_at": minute,
                "job_count": count,
                "error_count": int(failed),
                "retries": int(failed),
                "completed_count": count - int(failed),
                "failed_count": int(failed),
                "processing_time": 120.0 + i,
                "processing_p50": 100.0 + i,
                "processing_p95": 300.0 + 2 * i,
                "processing_p99": 500.0 + 3 * i,
                "wait_p50": 20.0 + i % 5,
                "wait_p95": 80.0 + i % 11,
                "wait_p99": 150.0 + i % 13,
                "busy_seconds": count * 0.12,
            }
            rows.append(
                {
                    **common,
                    "worker_count": 1,
                    "throughput": count / 60,
                    "depth": (i * 3) % 17,
                    "utilization": min(1.0, count * 0.12 / 120),
                    "worker_slots": 2,
                }
            )
            type_rows.append({**common, "job_type": f"{queue}.job"})
    with write(engine_for(url)) as conn:
        conn.execute(insert(Metric), rows)
        conn.execute(insert(TypeMetric), type_rows)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bytes]]:
    """The files the app hands to ``st.download_button``, by file name."""
    files: dict[str, bytes] = {}
    original = MediaFileManager.add

    def spy(
        self: MediaFileManager, data: bytes | str, mimetype: str, *args: object, **kw: object
    ) -> str:
        name = kw.get("file_name") or (args[1] if len(args) > 1 else None)
        if mimetype == "text/csv" and isinstance(data, bytes):
            files[str(name)] = data
        return original(self, data, mimetype, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(MediaFileManager, "add", spy)
    yield files
