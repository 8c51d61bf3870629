"""The PostgreSQL driver (psycopg 3): the ledger's server database.

Everything the embedded SQLite file lacks is used here: advisory locks, LISTEN/NOTIFY (the
insert trigger of migration 0001), prepared statements on the per-job paths, COPY, array
parameters, the dependency-release trigger (migration 0011), ``statement_timeout``, the
planner's statistics, aggregation in SQL (the metrics rollup) and a server process that works
while the client does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, Text, any_, bindparam, cast, func, select, text
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.sql.elements import ColumnElement

_NOW = text("SELECT now()")

_VALUE_ESTIMATES = text(
    "SELECT c.reltuples, s.most_common_vals::text::text[], s.most_common_freqs"
    " FROM pg_class c JOIN pg_stats s"
    " ON s.tablename = c.relname AND s.attname = :column"
    " WHERE c.oid = to_regclass(:table)"
    " AND s.schemaname = current_schema()"
).bindparams(bindparam("table", type_=Text()), bindparam("column", type_=Text()))


class PostgreSQLDriver:
    name = "postgresql"
    notifies = True
    advisory_locks = True
    prepared_hot_path = True
    supports_copy = True
    array_sql = True
    dependents_released_by_trigger = True
    statement_timeout = True
    limited_union_branches = True
    id_prefix_search = True
    sql_rollup = True
    server_process = True

    def insert(self, table: Table) -> Insert:
        return insert(table)

    def clock(self, conn: Connection) -> datetime:
        now: datetime = conn.execute(_NOW).scalar_one()
        return now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def try_xact_lock(self, conn: Connection, key: int) -> bool:
        return bool(conn.execute(select(func.pg_try_advisory_xact_lock(key))).scalar())

    def xact_lock(self, conn: Connection, key: int) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(key)))

    def in_picked(self, column: ColumnElement[Any], picked: Any) -> ColumnElement[bool]:
        # a plain ``IN (subquery)`` may be planned as a join that re-runs the subquery, and
        # with SKIP LOCKED each run picks other rows (more than LIMIT rows get updated); an
        # ``ARRAY(subquery)`` is an init-plan, computed once (the CTE fence of Oban/River)
        return column == any_(func.array(picked.scalar_subquery()))

    def text_contains(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        text_of = cast(column, Text)
        if pattern.isascii():
            # ASCII case folding (COLLATE "C"): ILIKE under the database's UTF-8 collation
            # lowers every row through the C library's wide characters, half the time of a
            # search over 1,000,000 jobs (docs/benchmarks.md, "Console first render"). The one
            # difference: non-ASCII letters that lower-case to ASCII (Kelvin sign, capital
            # dotted I) no longer match their ASCII look-alike.
            return func.lower(text_of.collate("C")).like(pattern.lower(), escape="\\")
        return text_of.ilike(pattern, escape="\\")

    def unindexed(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return column  # the planner has statistics (autovacuum's ANALYZE): left alone

    def value_estimates(self, conn: Connection, table: str, column: str) -> dict[str, int]:
        # ``pg_class.reltuples`` x the most-common-value frequencies of ``pg_stats``, kept by
        # ANALYZE/autovacuum
        row = conn.execute(_VALUE_ESTIMATES, {"table": table, "column": column}).first()
        if row is None or row[0] is None or row[0] < 0 or row[1] is None or row[2] is None:
            return {}
        total = float(row[0])
        return {
            str(value): round(total * float(freq))
            for value, freq in zip(row[1], row[2], strict=False)
        }


DRIVER = PostgreSQLDriver()
