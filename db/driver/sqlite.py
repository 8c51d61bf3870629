"""The SQLite driver: the embedded default (one file, several processes).

No server: no advisory locks (every write transaction starts with ``BEGIN IMMEDIATE``, see
``db.engine``, so writers are serialized already and a lock is always granted), no
LISTEN/NOTIFY (the maintainer polls), no array parameters or LATERAL (a statement per row, a
window function), no COPY, no statement timeout, no planner statistics to read (a read
steers the planner with ``+column``), no server process (every statement runs in this one; the
metrics rollup computes in Python). Dependents are released by the ledger in the transaction
that ends a job, not by a trigger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, String, Table, cast, text
from sqlalchemy.dialects.sqlite import Insert, insert
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression
from sqlalchemy.sql.operators import custom_op

_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")


class SQLiteDriver:
    name = "sqlite"
    notifies = False
    advisory_locks = False
    prepared_hot_path = False
    supports_copy = False
    array_sql = False
    dependents_released_by_trigger = False
    statement_timeout = False
    limited_union_branches = False
    id_prefix_search = False
    sql_rollup = False
    server_process = False

    def insert(self, table: Table) -> Insert:
        return insert(table)

    def clock(self, conn: Connection) -> datetime:
        value = conn.execute(_NOW).scalar_one()
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    def try_xact_lock(self, conn: Connection, key: int) -> bool:
        return True  # BEGIN IMMEDIATE already serializes every writer

    def xact_lock(self, conn: Connection, key: int) -> None:
        return None  # as above

    def in_picked(self, column: ColumnElement[Any], picked: Any) -> ColumnElement[bool]:
        # one writer at a time and no SKIP LOCKED: the subquery picks the same rows however
        # often it runs
        return column.in_(picked.scalar_subquery())

    def text_contains(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return cast(column, String).like(pattern, escape="\\")  # LIKE: ASCII in any case

    def unindexed(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # ``+column``: SQLite's documented way to keep its planner from using an index for
        # a term (it has no statistics unless ANALYZE ran)
        return UnaryExpression(column, operator=custom_op("+"), type_=column.type)

    def value_estimates(self, conn: Connection, table: str, column: str) -> dict[str, int]:
        return {}  # no statistics kept that a read could use


DRIVER = SQLiteDriver()
