"""Advisory locks so that only one maintainer runs a loop at a time (correctness never
depends on them: every write is guarded anyway)."""

from __future__ import annotations

import zlib

from sqlalchemy import Connection

from db.driver import driver_for


def lock_key(name: str) -> int:
    return zlib.crc32(f"edurise-queue:{name}".encode())


def try_xact_lock(conn: Connection, name: str) -> bool:
    """Take a transaction-scoped lock if free. SQLite's BEGIN IMMEDIATE already serializes."""
    return driver_for(conn).try_xact_lock(conn, lock_key(name))


def xact_lock(conn: Connection, name: str) -> None:
    """Wait for a transaction-scoped lock (serializes check-then-insert on one key)."""
    driver_for(conn).xact_lock(conn, lock_key(name))
