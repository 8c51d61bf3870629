"""The database's clock: the one time every process compares ledger timestamps with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from db.driver import driver_for


def db_clock(conn: Connection) -> datetime:
    """``now()`` of the ledger's server (PostgreSQL) or file (SQLite), as an aware UTC time."""
    return driver_for(conn).clock(conn)
