"""Shared fixtures: real PostgreSQL and Redis (a fresh database per session), SQLite files,
and settings pointed at them."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db.engine import create_ledger_engine, engine_for
from db.migrate import upgrade
from db.settings import get_settings
from tests import services
from tests.processes import Processes, processes_for

FAST_TIMINGS = {
    "QUEUE_HEARTBEAT_SECONDS": "0.5",
    "QUEUE_STALE_SECONDS": "3",
    "QUEUE_RECONCILE_GRACE_SECONDS": "1",
    "QUEUE_POLL_SECONDS": "0.1",
    "QUEUE_SHUTDOWN_TIMEOUT": "5",
}
TABLES = (
    "queue_jobs",
    "queue_workers",
    "queue_metrics",
    "queue_type_metrics",
    "queue_metrics_hourly",
    "queue_type_metrics_hourly",
    "queue_controls",
    "users",
    "audit_log",
    "queue_alerts",
    "queue_alert_silences",
    "alert_notifications",
    "console_sessions",
    "login_throttle",
    "queue_periodic",
    "queue_job_deps",
    "queue_job_logs",
    "queue_maintainers",
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = services.create_database()
    engine = create_ledger_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    engine_for.cache_clear()
    services.drop_database(url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = services.redis_client()
    client.flushdb()
    yield services.TEST_REDIS_URL
    client.flushdb()


#: one statement that names the tables holding any row (an index probe each)
_NON_EMPTY = " UNION ALL ".join(
    f"SELECT '{table}' WHERE EXISTS (SELECT 1 FROM {table})" for table in TABLES
)


def empty_tables(engine: Engine) -> None:
    """Every table of ``TABLES`` empty. PostgreSQL: TRUNCATE of those that hold rows
    (a TRUNCATE of all eighteen took 34 ms, most of them empty)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            filled = conn.execute(text(_NON_EMPTY)).scalars().all()
            if filled:
                conn.execute(text(f"TRUNCATE {', '.join(filled)}"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger migrated to head once per session: each test gets a copy of the file
    (the migrations cost 60 - 200 ms a test; ``test_migrations.py`` runs them itself)."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    with closing(sqlite3.connect(path)) as conn:  # everything in the main file, for the copies
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def fresh_sqlite(template: Path, folder: Path) -> str:
    target = folder / "ledger.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return fresh_sqlite(sqlite_template, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The ledger on each database (state machine and validation run on both)."""
    if request.param == "sqlite":
        url = fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("pg_url")
        empty_tables(engine_for(url))
    yield url


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for the code under test (and its subprocesses); settings cache cleared."""
    env = {"QUEUE_DATA_DIR": str(tmp_path / "var"), **FAST_TIMINGS}
    for key in ("DATABASE_URL", "REDIS_URL", "QUEUE_JOB_MODULES", "QUEUE_QUEUES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def use_ledger(
    ledger_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """The job API pointed at ``ledger_url`` (SQLite transport)."""
    monkeypatch.setenv("DATABASE_URL", ledger_url)
    settings_env["DATABASE_URL"] = ledger_url
    get_settings.cache_clear()
    return ledger_url


@pytest.fixture
def pg_redis(
    pg_url: str, redis_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """PostgreSQL + Redis, emptied, with the API and subprocess environment pointed at them."""
    empty_tables(engine_for(pg_url))
    for key, value in (("DATABASE_URL", pg_url), ("REDIS_URL", redis_url)):
        monkeypatch.setenv(key, value)
        settings_env[key] = value
    get_settings.cache_clear()
    return settings_env


@pytest.fixture
def processes(
    pg_redis: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Processes]:
    procs = processes_for(pg_redis, monkeypatch, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(autouse=True)
def _show_process_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    funcargs = getattr(request.node, "funcargs", {})
    if report is not None and report.failed:
        for value in funcargs.values():
            if isinstance(value, Processes):
                print(value.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
