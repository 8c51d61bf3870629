"""Apply Alembic migrations programmatically (``queuectl migrate``, tests, ``queuectl up``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from db.driver import driver_for

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the advisory lock key of a migration run (outside ``db.locks``'s crc32 range of names)
MIGRATION_LOCK = 7215150000


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
        # serialize concurrent `migrate` runs (compose's one-shot + `queuectl up`); on SQLite
        # the lock is granted at once: SQLite serializes its writers itself
        driver_for(conn).xact_lock(conn, MIGRATION_LOCK)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
