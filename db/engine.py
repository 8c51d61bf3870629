"""Engines for the ledger: PostgreSQL (psycopg 3) or the embedded SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import PoolProxiedConnection


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def create_ledger_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the ledger's access pattern (short statements, many processes)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        for pg_only in ("pool_pre_ping", "pool_size", "max_overflow"):
            kwargs.pop(pg_only, None)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _make_sqlite_safe_for_many_processes(engine)
        return engine
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    # the ledger's queries are short or read small rollups: where the server has JIT,
    # compiling costs more than it saves (it was set per transaction before reads became
    # autocommit, where SET LOCAL does nothing)
    connect_args = {"options": "-c jit=off", **kwargs.pop("connect_args", {})}
    ping = kwargs.pop("pool_pre_ping", True)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if ping:
        _ping_connections_that_sat_idle(engine)
    return engine


IDLE_BEFORE_PING = 1.0  # seconds


def _ping_connections_that_sat_idle(engine: Engine) -> None:
    """``pool_pre_ping``, but only for a connection idle for more than a second.

    A ping is a full round trip: on a busy path (submits, claims) it doubled the cost of each
    statement. A connection returned to the pool a moment ago is almost surely alive; one that
    sat idle (where a database restart is noticed) is checked, and replaced if dead.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_BEFORE_PING:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # the pool retries with a fresh connection
            raise DisconnectionError(f"stale connection: {exc}") from exc


def _make_sqlite_safe_for_many_processes(engine: Engine) -> None:
    """WAL + busy timeout + BEGIN IMMEDIATE, the SQLAlchemy recipe for pysqlite.

    A deferred transaction that reads then writes fails at once with "database is locked" when
    another process writes; taking the write lock up front lets the busy timeout do its job.
    Read-only work asks for ``execution_options(sqlite_begin="DEFERRED")``.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    return create_ledger_engine(url)


@lru_cache(maxsize=8)
def hot_path_engine_for(url: str) -> Engine:
    """PostgreSQL: a small pool of its own for the submit hot path (:func:`driver_write`).

    Its statements are prepared and written for generic plans (statuses inline, parameters
    that do not change the plan). On these connections PostgreSQL uses the generic plan from
    the first run: left to choose, it planned the batch insert of a group commit anew on every
    run (2 ms of planning for a 1 ms statement), because a generic plan cannot know how many
    rows an array parameter holds. Each group commit uses at most two connections at once.
    """
    options = "-c jit=off -c plan_cache_mode=force_generic_plan"
    return create_ledger_engine(url, pool_size=4, max_overflow=4, connect_args={"options": options})


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A connection for one write.

    PostgreSQL: autocommit, so a single-statement write is one round trip (no BEGIN/COMMIT).
    SQLite: a BEGIN IMMEDIATE transaction committed at the end.
    """
    if is_sqlite(engine):
        with engine.begin() as conn:
            yield conn
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """All-or-nothing work of several statements."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A connection for reads.

    PostgreSQL: autocommit, so a read is one round trip (no BEGIN/ROLLBACK around it). Under
    READ COMMITTED every statement takes its own snapshot anyway, so a surrounding
    transaction gave several reads no more consistency. SQLite: no write lock taken.
    """
    if is_sqlite(engine):
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn:
            yield conn
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn


def sqlalchemy_error(exc: psycopg.Error, *, invalidated: bool = False) -> DBAPIError:
    """A psycopg error of a connection used without SQLAlchemy, as SQLAlchemy would raise it
    (``OperationalError``, ``IntegrityError``, ...), so callers catch one family."""
    # ``exc`` is an instance of the DBAPI base error passed, so ``instance`` returns a
    # ``DBAPIError`` subclass; its overloads only promise the ``StatementError`` base.
    return cast(
        DBAPIError,
        DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=invalidated),
    )


def psycopg_connection(fairy: PoolProxiedConnection) -> psycopg.Connection[Any]:
    """The psycopg connection of a pooled connection just checked out of a PostgreSQL engine.
    SQLAlchemy types it ``Any | None``: it is ``None`` only after the pool has closed it."""
    return cast("psycopg.Connection[Any]", fairy.driver_connection)


@contextmanager
def driver_write(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """PostgreSQL: a pooled psycopg connection in autocommit, for one hot-path statement sent
    without SQLAlchemy's per-call work (a submit is about 0.1 - 0.2 ms faster, measured).

    Errors come out as from :func:`write`: a psycopg error is raised as SQLAlchemy's
    ``DBAPIError`` subclass, and a broken connection is invalidated so the pool replaces it.
    """
    try:
        fairy = engine.raw_connection()
    except psycopg.Error as exc:  # cannot connect
        raise sqlalchemy_error(exc) from exc
    conn = psycopg_connection(fairy)
    try:
        conn.autocommit = True
        yield conn
    except psycopg.Error as exc:
        broken = conn.broken or conn.closed
        if broken:
            fairy.invalidate(exc)
        raise sqlalchemy_error(exc, invalidated=broken) from exc
    finally:
        _check_in(fairy)


def _check_in(fairy: PoolProxiedConnection) -> None:
    """Give a connection used in autocommit back to the pool as SQLAlchemy expects it."""
    conn = psycopg_connection(fairy)
    if not (conn.broken or conn.closed):
        conn.autocommit = False  # the pool's other users expect SQLAlchemy's default
    fairy.close()


T = TypeVar("T")


class HeldConnections:
    """PostgreSQL: one pooled psycopg connection in autocommit held by each thread that uses
    it, for per-job hot-path statements (a worker's lease reads, its attempt writer's group
    commits) without a pool checkout or SQLAlchemy's per-call work.

    A psycopg error comes out as SQLAlchemy's (:func:`sqlalchemy_error`, so callers catch one
    family and retry as for :func:`write`); when it broke the connection, that connection is
    invalidated and the thread's next call takes a fresh one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    def run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn(connection)`` on this thread's connection."""
        held: PoolProxiedConnection | None = getattr(self._local, "conn", None)
        if held is None:
            try:
                held = self.engine.raw_connection()
            except psycopg.Error as exc:  # cannot connect (down, starting up): retried
                raise sqlalchemy_error(exc) from exc
            psycopg_connection(held).autocommit = True
            self._local.conn = held
        conn = psycopg_connection(held)
        try:
            return fn(conn)
        except psycopg.Error as exc:
            broken = conn.broken or conn.closed
            if broken:
                self._local.conn = None
                held.invalidate(exc)
            raise sqlalchemy_error(exc, invalidated=broken) from exc

    def release(self) -> None:
        """Give this thread's connection back to the pool (a thread that is done with it)."""
        held: PoolProxiedConnection | None = getattr(self._local, "conn", None)
        if held is not None:
            self._local.conn = None
            _check_in(held)
