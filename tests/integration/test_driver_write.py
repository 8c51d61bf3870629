"""The hot-path connection (``db.engine.driver_write``) on real PostgreSQL: errors come out as
from the SQLAlchemy paths, and a connection it used goes back to the pool as it came."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from db.engine import create_ledger_engine, driver_write, transaction
from db.models import QueueControl
from db.settings import get_settings
from tasks import api


def test_a_pooled_connection_stays_transactional_after_a_hot_path_write(pg_url: str) -> None:
    engine = create_ledger_engine(pg_url, pool_size=1, max_overflow=0)  # one connection
    try:
        with driver_write(engine) as conn:
            conn.execute("SELECT 1")
        with pytest.raises(RuntimeError), transaction(engine) as conn:
            conn.execute(
                QueueControl.__table__.insert().values(
                    queue_name="rolled_back", paused=False, updated_at=func.now()
                )
            )
            raise RuntimeError("roll it back")
        with transaction(engine) as conn:
            stmt = select(func.count()).where(QueueControl.queue_name == "rolled_back")
            assert conn.execute(stmt).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_failed_statement_is_a_sqlalchemy_error_and_the_connection_lives_on(
    pg_url: str,
) -> None:
    engine = create_ledger_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(ProgrammingError, match="no_such_table"), driver_write(engine) as c:
            c.execute("SELECT * FROM no_such_table")
        with driver_write(engine) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    finally:
        engine.dispose()


@pytest.fixture
def down_ledger(monkeypatch: pytest.MonkeyPatch, settings_env: dict[str, str]) -> None:
    """The job API pointed at a PostgreSQL that nothing listens on."""
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()


def test_a_submit_to_a_down_ledger_raises_a_database_error(down_ledger: None) -> None:
    with pytest.raises(OperationalError):
        api.submit_job("demo.echo", {"n": 1})


def test_concurrent_submits_to_a_down_ledger_each_raise(down_ledger: None) -> None:
    """Group commit: every caller of a failed batch gets the database error; none hangs."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        try:
            api.submit_job("demo.echo", {"n": 1})
        except OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 8
    assert api.plain_inserts().waiting == 0
