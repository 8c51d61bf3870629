"""Apply Alembic migrations programmatically (``queuectl migrate``, tests, ``queuectl up``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the ledger schema to ``revision``; safe to run from several processes."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # serialize concurrent `migrate` runs (compose's one-shot + `queuectl up`)
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7215150000)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
