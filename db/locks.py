"""Advisory locks so that only one maintainer runs a loop at a time (correctness never
depends on them: every write is guarded anyway)."""

from __future__ import annotations

import zlib

from sqlalchemy import Connection, func, select


def lock_key(name: str) -> int:
    return zlib.crc32(f"edurise-queue:{name}".encode())


def try_xact_lock(conn: Connection, name: str) -> bool:
    """Take a transaction-scoped lock if free. SQLite's BEGIN IMMEDIATE already serializes."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(select(func.pg_try_advisory_xact_lock(lock_key(name)))).scalar())


def xact_lock(conn: Connection, name: str) -> None:
    """Wait for a transaction-scoped lock (serializes check-then-insert on one key)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(lock_key(name))))
