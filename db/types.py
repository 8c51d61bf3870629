"""Column types and SQL expressions that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import expression
from sqlalchemy.sql.elements import ColumnElement

#: JSON everywhere, JSONB on PostgreSQL (indexable, GIN search inside payloads).
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp: timestamptz on PostgreSQL, a sortable UTC string on SQLite.

    Naive datetimes are refused at bind time: a timestamp without a zone is ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class db_now(expression.FunctionElement[datetime]):
    """The database clock, optionally shifted: ``db_now(5)`` is now + 5 s, ``db_now(-col)`` works.

    One clock (the database's) for every host keeps heartbeats and due times comparable.
    On SQLite it renders the exact text format SQLAlchemy stores, so comparisons stay correct.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "db_now"

    def __init__(self, offset_seconds: float | ColumnElement[Any] | None = None) -> None:
        args: list[Any] = []
        if offset_seconds is not None:
            if not isinstance(offset_seconds, ColumnElement):
                offset_seconds = expression.literal(float(offset_seconds), Float())
            args.append(offset_seconds)
        super().__init__(*args)


@compiles(db_now, "postgresql")
def _db_now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    clauses = list(element.clauses)
    if not clauses:
        return "now()"
    return f"(now() + make_interval(secs => {compiler.process(clauses[0], **kw)}))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    clauses = list(element.clauses)
    if not clauses:
        return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
    offset = compiler.process(clauses[0], **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds') || '000')"


class json_append(expression.FunctionElement[Any]):
    """``column`` (a JSON array) with ``entry`` appended, in one UPDATE on either database."""

    type = JSONType
    inherit_cache = True
    name = "json_append"

    def __init__(self, column: ColumnElement[Any], entry: ColumnElement[Any]) -> None:
        super().__init__(column, entry)


@compiles(json_append, "postgresql")
def _json_append_pg(element: json_append, compiler: Any, **kw: Any) -> str:
    column, entry = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} || jsonb_build_array(CAST({entry} AS JSONB)))"


@compiles(json_append, "sqlite")
def _json_append_sqlite(element: json_append, compiler: Any, **kw: Any) -> str:
    column, entry = (compiler.process(c, **kw) for c in element.clauses)
    return f"json_insert({column}, '$[#]', json({entry}))"


class json_array_length(expression.FunctionElement[int]):
    """The number of entries of ``column`` (a JSON array): ``jsonb_array_length`` on
    PostgreSQL (the column is ``jsonb``), ``json_array_length`` on SQLite."""

    type = Integer()
    inherit_cache = True
    name = "json_array_length"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)


@compiles(json_array_length, "postgresql")
def _json_array_length_pg(element: json_array_length, compiler: Any, **kw: Any) -> str:
    return f"jsonb_array_length({compiler.process(element.clauses, **kw)})"


@compiles(json_array_length, "sqlite")
def _json_array_length_sqlite(element: json_array_length, compiler: Any, **kw: Any) -> str:
    return f"json_array_length({compiler.process(element.clauses, **kw)})"


class _utc_floor(expression.FunctionElement[datetime]):
    """A ``UTCDateTime`` column's value rounded down to the class's ``unit``, a ``UTCDateTime``:
    ``date_bin`` from 2000-01-01 UTC on PostgreSQL, a prefix of the stored text on SQLite (the
    same text format, so it compares equal to a stored minute or hour). Constants only, no
    bound parameters: it may be compiled into a text statement. One class per unit, so that
    the unit is part of SQLAlchemy's cache key."""

    type = UTCDateTime()
    inherit_cache = True
    unit = ""
    #: the length of the prefix of SQLite's stored ``YYYY-MM-DD HH:MM:SS.ffffff`` that the
    #: unit keeps, and the text that completes it
    sqlite_prefix = (0, "")

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)


class utc_minute(_utc_floor):
    """``column`` (a ``UTCDateTime``) rounded down to its minute."""

    inherit_cache = True
    name = "utc_minute"
    unit = "minute"
    sqlite_prefix = (16, ":00.000000")


class utc_hour(_utc_floor):
    """``column`` (a ``UTCDateTime``) rounded down to its hour."""

    inherit_cache = True
    name = "utc_hour"
    unit = "hour"
    sqlite_prefix = (13, ":00:00.000000")


def _utc_floor_pg(element: _utc_floor, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"date_bin(interval '1 {element.unit}', {column}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _utc_floor_sqlite(element: _utc_floor, compiler: Any, **kw: Any) -> str:
    length, rest = element.sqlite_prefix
    return f"(substr({compiler.process(element.clauses, **kw)}, 1, {length}) || '{rest}')"


for _unit in (utc_minute, utc_hour):
    compiles(_unit, "postgresql")(_utc_floor_pg)
    compiles(_unit, "sqlite")(_utc_floor_sqlite)
