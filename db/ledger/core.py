"""What every part of the ledger shares: the error of a refused transition, the guard of a
guarded UPDATE, the error entry of a failed attempt, status literals, and :class:`HotStatement`
(a per-job statement built and compiled once).

Every job state transition is one guarded UPDATE (or INSERT) whose row count is checked, and
nothing outside ``db.ledger`` changes ``queue_jobs.status``. Every function takes a SQLAlchemy
``Connection`` so callers choose the transaction (see ``db.engine``); the guards (``WHERE status
IN (...)`` from ``db.states.TRANSITIONS``, and ``lease = :lease`` for the writes of a running
attempt) make each call safe to race with any other process. The package is split by caller:
``producer`` (inserts), ``maintainer`` (stage, dispatch, reconcile, rescue), ``attempts`` (a
worker's writes of one attempt), ``admin`` (cancel, retry) and ``dependencies`` (workflows).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from db.driver import Driver, driver_for, driver_named
from db.models import Job, JobDependency, QueueControl
from db.states import TERMINAL, JobStatus, Transition, sources, sql_list

S = JobStatus
jobs = Job.__table__
deps = JobDependency.__table__


class TransitionError(Exception):
    """A transition was asked of a job in a state that does not allow it."""

    def __init__(self, job_id: uuid.UUID, transition: Transition, status: str | None) -> None:
        self.job_id = job_id
        self.transition = transition
        self.status = status
        if status is None:
            msg = f"job {job_id} does not exist"
        else:
            allowed = ", ".join(sources(transition))
            msg = (
                f"cannot {transition.value} job {job_id}: it is {status} (allowed from: {allowed})"
            )
        super().__init__(msg)


def insert_for(driver: Driver | str) -> Any:
    """The INSERT of ``queue_jobs`` of ``driver`` (or of the dialect of that name), with its
    ON CONFLICT clauses."""
    return (driver_named(driver) if isinstance(driver, str) else driver).insert(jobs)


class HotStatement:
    """A statement on the per-job hot path, built once. Where the driver has a prepared hot
    path (PostgreSQL) it is also compiled once and sent with ``exec_driver_sql``: building,
    cache-keying and compiling a SQLAlchemy statement costs more CPU than the round trip
    itself (measured with py-spy). The compiled form is kept with the dialect it was compiled
    for: a call on that dialect again only compares the two by identity (the driver is looked
    up once, at the first call; on SQLite, at every call, before ``conn.execute``)."""

    def __init__(self, stmt: Any, *, expanding: bool = True) -> None:
        self.stmt = stmt
        self.expanding = expanding  # IN lists to render at compile time (needs default values)
        self._compiled: tuple[Any, str, dict[str, Any]] | None = None
        self._processors: dict[str, Any] = {}

    def _sql(self, dialect: Any) -> tuple[str, dict[str, Any]]:
        if self._compiled is None or self._compiled[0] is not dialect:
            kwargs = {"render_postcompile": True} if self.expanding else {}
            compiled = self.stmt.compile(dialect=dialect, compile_kwargs=kwargs)
            # the type conversions SQLAlchemy applies to parameters (JSON encoding, UTC, ...),
            # read through the documented compiler and type API (``binds``, ``bind_names``,
            # ``TypeEngine.bind_processor``)
            names = compiled.bind_names
            self._processors = {
                names[bind]: processor
                for bind in compiled.binds.values()
                if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))
            }
            # the values bound at build time; the caller's parameters fill in the rest
            unset = {names[bind]: None for bind in compiled.binds.values() if bind.required}
            constants = self._process(compiled.construct_params(unset))
            self._compiled = (dialect, str(compiled), constants)
        return self._compiled[1], self._compiled[2]

    def execute(self, conn: Connection, params: dict[str, Any]) -> Any:
        compiled = self._compiled
        if compiled is not None and compiled[0] is conn.dialect:  # compiled: a prepared path
            sql, constants = compiled[1], compiled[2]
        elif driver_for(conn).prepared_hot_path:
            sql, constants = self._sql(conn.dialect)
        else:
            return conn.execute(self.stmt, params)
        return conn.exec_driver_sql(sql, {**constants, **self._process(params)})

    def execute_dbapi(self, dbapi_conn: Any, dialect: Any, params: dict[str, Any]) -> Any:
        """PostgreSQL: run it on a psycopg connection the caller holds, as a prepared
        statement, without SQLAlchemy's per-call work (checkout, execution context, result).
        Returns psycopg's cursor."""
        sql, constants = self._sql(dialect)
        return dbapi_conn.execute(sql, {**constants, **self._process(params)}, prepare=True)

    def fetch_one_dbapi(self, dbapi_conn: Any, dialect: Any, params: dict[str, Any]) -> Any:
        """:meth:`execute_dbapi`, its first row."""
        return self.execute_dbapi(dbapi_conn, dialect, params).fetchone()

    def fetch_all_dbapi(self, dbapi_conn: Any, dialect: Any, params: dict[str, Any]) -> Any:
        """:meth:`execute_dbapi`, every row."""
        return self.execute_dbapi(dbapi_conn, dialect, params).fetchall()

    def _process(self, params: dict[str, Any]) -> dict[str, Any]:
        procs = self._processors
        return {k: procs[k](v) if k in procs and v is not None else v for k, v in params.items()}


NON_TERMINAL = ~jobs.c.status.in_(sorted(s.value for s in TERMINAL))
#: inline status literals of the constant text() statements, rendered from the enum
QUEUED_SQL, RUNNING_SQL, COMPLETED_SQL = (sql_list([s]) for s in (S.QUEUED, S.RUNNING, S.COMPLETED))


def queue_not_paused(queue: Any, *correlate: Any) -> Any:
    """True unless the queue ``queue`` (a column or a parameter) is paused; ``correlate``:
    the enclosing FROM items that ``queue`` belongs to, where SQLAlchemy cannot tell."""
    paused = select(QueueControl.queue_name).where(
        QueueControl.queue_name == queue, QueueControl.paused.is_(True)
    )
    if correlate:  # an empty correlate() would turn SQLAlchemy's own correlation off
        paused = paused.correlate(*correlate)
    return ~paused.exists()


def ids_from(conn: Connection, picked: Any) -> Any:
    """``id`` in the rows a LIMITed (and possibly SKIP LOCKED) SELECT picks, evaluated ONCE
    (``Driver.in_picked``: on PostgreSQL a plain ``IN (subquery)`` may be re-run, each run
    picking other rows)."""
    return driver_for(conn).in_picked(jobs.c.id, picked)


def guarded(transition: Transition) -> Any:
    return jobs.c.status.in_(sources(transition))


def status_of(conn: Connection, job_id: uuid.UUID) -> str | None:
    return conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()


def error_entry(
    attempt: int, error: str, *, traceback: str | None, worker: str | None, kind: str
) -> dict[str, Any]:
    """One entry of ``queue_jobs.errors``: a failed attempt (kind ``error``) or a rescued one
    (kind ``rescued``)."""
    return {
        "at": datetime.now(UTC).isoformat(),
        "attempt": attempt,
        "error": error[:2000],
        "traceback": None if traceback is None else traceback[-8000:],
        "worker": worker,
        "kind": kind,
    }
