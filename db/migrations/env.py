"""Alembic environment: runs migrations on the ledger URL (or a connection handed in)."""

from __future__ import annotations

from alembic import context

from db.engine import create_ledger_engine
from db.models import Base
from db.settings import get_settings

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().ledger_url
    engine = create_ledger_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `queuectl migrate`")
run_migrations_online()
