"""`alembic upgrade head` on an empty database equals the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from db.engine import engine_for
from db.migrate import alembic_config
from db.models import Base


def test_upgrade_head_matches_models_on_postgresql(pg_url: str) -> None:
    engine = engine_for(pg_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_notify_trigger_installed(pg_url: str) -> None:
    with engine_for(pg_url).connect() as conn:
        triggers = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'queue_jobs'::regclass")
        ).scalars()
        assert "queue_jobs_notify_insert" in set(triggers)


def test_upgrade_creates_the_tables_on_sqlite(sqlite_url: str) -> None:
    tables = set(inspect(engine_for(sqlite_url)).get_table_names())
    assert {
        "queue_jobs",
        "queue_workers",
        "queue_metrics",
        "queue_type_metrics",
        "queue_controls",
        "users",
        "audit_log",
        "alembic_version",
    } <= tables
