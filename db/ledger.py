"""Every job state transition, each one guarded UPDATE (or INSERT) whose row count is checked.

Nothing else in the code base changes ``queue_jobs.status``. Every function takes a
SQLAlchemy ``Connection`` so callers choose the transaction (see ``db.engine``); the guards
(``WHERE status IN (...)`` from ``db.states.TRANSITIONS``, and ``attempt = :attempt`` for the
writes of a running attempt) make each call safe to race with any other process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    Integer,
    Row,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from db.models import Job, JobDependency, QueueControl, Worker
from db.states import (
    LEASED,
    TERMINAL,
    TRANSITIONS,
    JobStatus,
    Transition,
    can,
    sorted_values,
    sources,
    sql_list,
)
from db.types import JSONType, UTCDateTime, db_now, json_append

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


class KeyConflict(Exception):
    """A job's idempotency key is held by a live job of another type or with other data."""

    def __init__(self, new: NewJob, existing_id: uuid.UUID, existing_type: str) -> None:
        self.job_id = new.id
        self.key = new.idempotency_key
        self.existing_id = existing_id
        self.existing_type = existing_type
        what = f"type {new.type!r}" if new.type != existing_type else "different data"
        super().__init__(
            f"idempotency key {self.key!r} belongs to live job {existing_id} of type"
            f" {existing_type!r}; this submit has {what} (the same key answers only for the"
            " same type and data)"
        )


@dataclass(frozen=True)
class NewJob:
    """A validated job ready to be written. ``scheduled_at`` None means due now."""

    type: str
    queue: str
    priority: int
    data: dict[str, Any]
    max_attempts: int
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    scheduled_at: datetime | None = None
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    tick_key: str | None = None
    unique_key: str | None = None
    #: ``data`` as JSON text when the caller already encoded it (bulk inserts send it as is)
    data_json: str | None = field(default=None, compare=False, repr=False)
    #: jobs this one waits for (existing jobs, or earlier jobs of the same insert)
    depends_on: tuple[uuid.UUID, ...] = ()
    #: ``"cancel"`` or ``"run"``: what a dependency that failed or was cancelled does
    on_dependency_failure: str | None = None
    #: fair share: the job's partition (types with ``partition_by`` only)
    partition_key: str | None = None

    @property
    def data_text(self) -> str:
        """``data`` as JSON text (encoded once, by the caller when it could)."""
        return self.data_json if self.data_json is not None else json.dumps(self.data)

    @property
    def due_without_keys(self) -> bool:
        """Due now, with no idempotency, tick or unique key to resolve before it is written
        and no partition key: such a job is one plain INSERT (``insert_one_dbapi``), may be
        batched (``insert_batch_dbapi``) and may be sent on insert (``insert_dispatched``)."""
        keys = self.idempotency_key or self.tick_key or self.unique_key or self.partition_key
        return self.scheduled_at is None and not keys and not self.depends_on


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one attempt; ``lease`` fences every write of the attempt."""

    id: uuid.UUID
    type: str
    queue: str
    data: dict[str, Any]
    attempt: int
    lease: int
    max_attempts: int
    timeout_seconds: float | None
    cancel_requested_at: datetime | None = None

    @property
    def cancel_requested(self) -> bool:
        """A cancel came before the worker started the attempt."""
        return self.cancel_requested_at is not None


def _insert_for(dialect_name: str) -> Any:
    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(jobs)


class _HotStatement:
    """A statement on the per-job hot path, built once. On PostgreSQL it is also compiled
    once and sent with ``exec_driver_sql``: building, cache-keying and compiling a SQLAlchemy
    statement costs more CPU than the round trip itself (measured with py-spy)."""

    def __init__(self, stmt: Any, *, expanding: bool = True) -> None:
        self.stmt = stmt
        self.expanding = expanding  # IN lists to render at compile time (needs default values)
        self._compiled: tuple[Any, str, dict[str, Any]] | None = None
        self._processors: dict[str, Any] = {}

    def _sql(self, dialect: Any) -> tuple[str, dict[str, Any]]:
        if self._compiled is None or self._compiled[0] is not dialect:
            kwargs = {"render_postcompile": True} if self.expanding else {}
            compiled = self.stmt.compile(dialect=dialect, compile_kwargs=kwargs)
            # the type conversions SQLAlchemy applies to parameters (JSON encoding, UTC, ...)
            self._processors = dict(compiled._bind_processors)
            constants = self._process(compiled.construct_params(_check=False))
            self._compiled = (dialect, str(compiled), constants)
        return self._compiled[1], self._compiled[2]

    def execute(self, conn: Connection, params: dict[str, Any]) -> Any:
        if conn.dialect.name != "postgresql":
            return conn.execute(self.stmt, params)
        sql, constants = self._sql(conn.dialect)
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


_NON_TERMINAL = ~jobs.c.status.in_(sorted(s.value for s in TERMINAL))
#: inline status literals of the constant text() statements, rendered from the enum
_QUEUED, _RUNNING, _COMPLETED = (sql_list([s]) for s in (S.QUEUED, S.RUNNING, S.COMPLETED))


def _queue_not_paused(queue: Any, *correlate: Any) -> Any:
    """True unless the queue ``queue`` (a column or a parameter) is paused; ``correlate``:
    the enclosing FROM items that ``queue`` belongs to, where SQLAlchemy cannot tell."""
    paused = select(QueueControl.queue_name).where(
        QueueControl.queue_name == queue, QueueControl.paused.is_(True)
    )
    if correlate:  # an empty correlate() would turn SQLAlchemy's own correlation off
        paused = paused.correlate(*correlate)
    return ~paused.exists()


def _job_values() -> dict[str, Any]:
    """The columns every insert of a new job binds from ``_params``."""
    return {
        "id": bindparam("b_id"),
        "type": bindparam("b_type"),
        "queue": bindparam("b_queue"),
        "priority": bindparam("b_priority"),
        "data": bindparam("b_data", type_=JSONType),
        "max_attempts": bindparam("b_max_attempts"),
        "timeout_seconds": bindparam("b_timeout"),
        "partition_key": bindparam("b_partition", type_=jobs.c.partition_key.type),
    }


def _insert_statement(dialect_name: str) -> Any:
    sched = bindparam("b_scheduled_at", type_=UTCDateTime())
    return _insert_for(dialect_name).values(
        **_job_values(),
        idempotency_key=bindparam("b_idem"),
        tick_key=bindparam("b_tick"),
        unique_key=bindparam("b_unique"),
        status=case((sched > db_now(), literal(S.SCHEDULED.value)), else_=literal(S.QUEUED.value)),
        scheduled_at=func.coalesce(sched, db_now()),
        attempt=0,
        errors=literal([], JSONType),
        created_at=db_now(),
        updated_at=db_now(),
    )


def _params(j: NewJob) -> dict[str, Any]:
    return {
        "b_id": j.id,
        "b_type": j.type,
        "b_queue": j.queue,
        "b_priority": j.priority,
        "b_data": j.data,
        "b_max_attempts": j.max_attempts,
        "b_timeout": j.timeout_seconds,
        "b_idem": j.idempotency_key,
        "b_tick": j.tick_key,
        "b_unique": j.unique_key,
        "b_scheduled_at": j.scheduled_at,
        "b_partition": j.partition_key,
    }


#: one job, ON CONFLICT DO NOTHING so that a retried insert (lost reply) is harmless
_INSERT_ONE_PG = _HotStatement(
    _insert_statement("postgresql").on_conflict_do_nothing(), expanding=False
)


def insert_one_dbapi(dbapi_conn: Any, dialect: Any, new: NewJob) -> None:
    """PostgreSQL: insert one job without idempotency or tick key on a psycopg connection
    in autocommit (``db.engine.driver_write``), as :func:`insert_jobs` would."""
    if new.idempotency_key or new.tick_key:
        raise ValueError("a job with a key goes through insert_jobs (conflicts to resolve)")
    _INSERT_ONE_PG.execute_dbapi(dbapi_conn, dialect, _params(new))


def insert_jobs(conn: Connection, new_jobs: Sequence[NewJob]) -> list[uuid.UUID]:
    """Insert jobs (``queued`` when due, else ``scheduled``). Returns one id per input, in
    input order.

    A job whose ``idempotency_key`` matches a live (non-terminal) job is not inserted: the
    live job's id is returned in its place. A periodic tick already present is skipped the
    same way. Jobs without such keys cannot conflict (their ids are fresh UUIDs) and go in
    as a plain multi-row insert, with no RETURNING to read back.
    """
    if not new_jobs:
        return []
    keyed = [j for j in new_jobs if j.idempotency_key or j.tick_key]
    plain = [j for j in new_jobs if not (j.idempotency_key or j.tick_key)]
    if len(plain) > 1 and conn.dialect.name == "postgresql":
        _copy_plain(conn, plain)
    elif len(plain) > 1:
        conn.execute(_insert_statement(conn.dialect.name), [_params(j) for j in plain])
    elif plain and keyed:
        conn.execute(_insert_statement(conn.dialect.name), _params(plain[0]))
    elif plain and conn.dialect.name == "postgresql":  # one job, the common case: hot path
        _INSERT_ONE_PG.execute(conn, _params(plain[0]))
    elif plain:  # one job: ON CONFLICT makes a retried insert (lost reply) harmless
        stmt = _insert_statement(conn.dialect.name).on_conflict_do_nothing()
        conn.execute(stmt, _params(plain[0]))
    if not keyed:
        return [j.id for j in new_jobs]
    stmt = _insert_statement(conn.dialect.name).on_conflict_do_nothing().returning(jobs.c.id)
    params = [_params(j) for j in keyed]
    rows = conn.execute(stmt, params[0]) if len(params) == 1 else conn.execute(stmt, params)
    inserted = {r[0] for r in rows} | {j.id for j in plain}
    if len(inserted) == len(new_jobs):
        return [j.id for j in new_jobs]
    return _resolve_conflicts(conn, new_jobs, inserted)


_B_QUEUE = bindparam("b_queue", "", type_=jobs.c.queue.type)
_WINDOW = bindparam("window", 0, type_=Integer())


def _jobs_of_queue(status: JobStatus, queue: Any = _B_QUEUE) -> Any:
    """The jobs of ``queue`` (``:b_queue`` unless given a column) in ``status`` (inline, not a
    parameter, so a generic plan can use the partial index of that status)."""
    return select(jobs.c.id).where(
        jobs.c.queue == queue, jobs.c.status == literal(status.value, literal_execute=True)
    )


#: whether a job for ``:b_queue`` may be sent on insert: no ``queued`` job waits in the queue
#: (so nothing it would overtake is left in the ledger), the queue is not paused, and fewer
#: than ``:window`` of its jobs are ``dispatched``
_DIRECT = (
    select(
        and_(
            ~_jobs_of_queue(S.QUEUED).exists(),
            _queue_not_paused(_B_QUEUE),
            select(func.count())
            .select_from(_jobs_of_queue(S.DISPATCHED).limit(_WINDOW).subquery("sent"))
            .scalar_subquery()
            < _WINDOW,
        ).label("ok")
    )
    .cte("direct")
    .prefix_with("MATERIALIZED")
)


def _when_direct(then: Any, otherwise: Any) -> Any:
    return case((_DIRECT.c.ok, then), else_=otherwise)


#: the columns that a due job's INSERT ... SELECT writes (the others take their defaults)
_INSERT_COLUMNS = [
    "id",
    "type",
    "queue",
    "priority",
    "data",
    "max_attempts",
    "timeout_seconds",
    "status",
    "scheduled_at",
    "attempt",
    "lease",
    "errors",
    "created_at",
    "updated_at",
    "dispatched_at",
]


#: one due job inserted straight into ``dispatched`` (attempt 1, lease 1) when ``_DIRECT``
#: holds, otherwise ``queued`` as a plain insert. The statement trigger sends no NOTIFY for a
#: dispatched row: the producer pushes its message itself (``tasks.direct_dispatch``).
_INSERT_DISPATCHED_PG = _HotStatement(
    postgresql.insert(jobs)
    .from_select(
        _INSERT_COLUMNS,
        select(
            bindparam("b_id", None, type_=jobs.c.id.type),
            bindparam("b_type", "", type_=jobs.c.type.type),
            _B_QUEUE,
            bindparam("b_priority", 0, type_=Integer()),
            cast(bindparam("b_data", "{}", type_=Text()), postgresql.JSONB()),
            bindparam("b_max_attempts", 1, type_=Integer()),
            bindparam("b_timeout", None, type_=jobs.c.timeout_seconds.type),
            _when_direct(literal(S.DISPATCHED.value), literal(S.QUEUED.value)),
            db_now(),
            _when_direct(literal(1), literal(0)),
            _when_direct(literal(1), literal(0)),
            cast(literal("[]"), postgresql.JSONB()),
            db_now(),
            db_now(),
            _when_direct(db_now(), null()),
        ).select_from(_DIRECT),
    )
    .on_conflict_do_nothing()
    .returning(jobs.c.lease)
)


def insert_dispatched(dbapi_conn: Any, dialect: Any, new: NewJob, window: int) -> int | None:
    """PostgreSQL, on a psycopg connection in autocommit (``db.engine.driver_write``):
    insert one due job without keys, already ``dispatched``
    under lease 1 when its queue is idle (see ``_INSERT_DISPATCHED_PG``), else ``queued``.

    Returns the lease when the job was dispatched: the caller then pushes its message (a
    push that never happens is repaired by :func:`requeue_lost`, as for the dispatcher's).
    None when it was inserted ``queued`` (the NOTIFY wakes the dispatcher), or when a row
    with its id exists already (a retried insert whose first reply was lost).
    """
    if not new.due_without_keys:
        raise ValueError("only a due job without keys can be dispatched on insert")
    params = {**_params(new), "b_data": new.data_text, "window": window}
    row = _INSERT_DISPATCHED_PG.fetch_one_dbapi(dbapi_conn, dialect, params)
    return None if row is None else row[0] or None


#: a batch of due jobs without keys as rows (``NewJob`` fields in parallel arrays, in order)
_BATCH = (
    func.unnest(
        bindparam("ids", [], type_=postgresql.ARRAY(postgresql.UUID(as_uuid=True))),
        bindparam("types", [], type_=postgresql.ARRAY(Text())),
        bindparam("queues", [], type_=postgresql.ARRAY(Text())),
        bindparam("priorities", [], type_=postgresql.ARRAY(Integer())),
        bindparam("datas", [], type_=postgresql.ARRAY(Text())),
        bindparam("max_attempts", [], type_=postgresql.ARRAY(Integer())),
        bindparam("timeouts", [], type_=postgresql.ARRAY(Float())),
    )
    .table_valued(*_INSERT_COLUMNS[:7], with_ordinality="ord")  # id ... timeout_seconds
    .render_derived(name="batch")
)


def _batch_rows(source: Any, status: Any, taken: Any, dispatched_at: Any) -> Any:
    """The SELECT of a batch insert: ``source``'s rows with the given status, attempt and
    lease (``taken``: 1 when dispatched, else 0) and ``dispatched_at``."""
    return select(
        source.c.id,
        source.c.type,
        source.c.queue,
        source.c.priority,
        cast(source.c.data, postgresql.JSONB()),
        source.c.max_attempts,
        source.c.timeout_seconds,
        status,
        db_now(),
        taken,
        taken,
        cast(literal("[]"), postgresql.JSONB()),
        db_now(),
        db_now(),
        dispatched_at,
    )


#: many due jobs without keys, ``queued``, in one statement (group commit of single
#: submits); ON CONFLICT makes a retried batch (lost reply) harmless
_INSERT_BATCH_PG = _HotStatement(
    postgresql.insert(jobs)
    .from_select(
        _INSERT_COLUMNS,
        _batch_rows(_BATCH, literal(S.QUEUED.value), literal(0), null()).order_by(_BATCH.c.ord),
    )
    .on_conflict_do_nothing(),
    expanding=False,
)

#: the batch with each row's place among the batch's rows of its queue (1, 2, ...)
_BATCH_RANKED = select(
    _BATCH,
    func.row_number().over(partition_by=_BATCH.c.queue, order_by=_BATCH.c.ord).label("rank"),
).subquery("ranked")

#: per row of the batch, ``_DIRECT``'s test for its queue: whether the queue's jobs may be
#: sent on insert, and how many of its jobs are ``dispatched`` already (counted up to
#: ``:window``). Probes by index, with LIMIT so that PostgreSQL does not turn them into a
#: scan of every queued job (it hashed a NOT EXISTS here).
_BATCH_DIRECT = select(
    and_(
        _jobs_of_queue(S.QUEUED, _BATCH_RANKED.c.queue)
        .correlate(_BATCH_RANKED)
        .limit(1)
        .scalar_subquery()
        .is_(None),
        _queue_not_paused(_BATCH_RANKED.c.queue, _BATCH_RANKED),
    ).label("ok"),
    select(func.count())
    .select_from(
        _jobs_of_queue(S.DISPATCHED, _BATCH_RANKED.c.queue)
        .correlate(_BATCH_RANKED)
        .limit(_WINDOW)
        .subquery("sent")
    )
    .scalar_subquery()
    .label("sent"),
).lateral("direct")


def _when_batch_direct(then: Any, otherwise: Any) -> Any:
    room = _BATCH_DIRECT.c.sent + _BATCH_RANKED.c.rank <= _WINDOW
    return case((and_(_BATCH_DIRECT.c.ok, room), then), else_=otherwise)


#: many due jobs without keys in one statement: those of an idle queue ``dispatched`` under
#: lease 1 while its window has room (the batch's earlier jobs of that queue count), the rest
#: ``queued``, as ``_INSERT_DISPATCHED_PG`` decides for one job
_INSERT_BATCH_DISPATCHED_PG = _HotStatement(
    postgresql.insert(jobs)
    .from_select(
        _INSERT_COLUMNS,
        _batch_rows(
            _BATCH_RANKED,
            _when_batch_direct(literal(S.DISPATCHED.value), literal(S.QUEUED.value)),
            _when_batch_direct(literal(1), literal(0)),
            _when_batch_direct(db_now(), null()),
        )
        .select_from(_BATCH_RANKED.join(_BATCH_DIRECT, true()))
        .order_by(_BATCH_RANKED.c.ord),
    )
    .on_conflict_do_nothing()
    .returning(jobs.c.id, jobs.c.lease)
)


def _batch_params(new_jobs: Sequence[NewJob]) -> dict[str, Any]:
    for new in new_jobs:
        if not new.due_without_keys:
            raise ValueError("a batch insert takes due jobs without keys only")
    return {
        "ids": [j.id for j in new_jobs],
        "types": [j.type for j in new_jobs],
        "queues": [j.queue for j in new_jobs],
        "priorities": [j.priority for j in new_jobs],
        "datas": [j.data_text for j in new_jobs],
        "max_attempts": [j.max_attempts for j in new_jobs],
        "timeouts": [j.timeout_seconds for j in new_jobs],
    }


def insert_batch_dbapi(dbapi_conn: Any, dialect: Any, new_jobs: Sequence[NewJob]) -> None:
    """PostgreSQL, on a psycopg connection in autocommit: insert due jobs without keys,
    ``queued``, in one statement (one commit for all; one job takes the one-row INSERT)."""
    if len(new_jobs) == 1:
        insert_one_dbapi(dbapi_conn, dialect, new_jobs[0])
    else:
        _INSERT_BATCH_PG.execute_dbapi(dbapi_conn, dialect, _batch_params(new_jobs))


def insert_batch_dispatched(
    dbapi_conn: Any, dialect: Any, new_jobs: Sequence[NewJob], window: int
) -> dict[uuid.UUID, int]:
    """:func:`insert_dispatched` for many jobs in one statement (one job takes the one-row
    statement). Returns the lease of each job inserted ``dispatched`` (the caller pushes
    their messages); the others went in ``queued`` (or existed already)."""
    if len(new_jobs) == 1:
        lease = insert_dispatched(dbapi_conn, dialect, new_jobs[0], window)
        return {new_jobs[0].id: lease} if lease else {}
    params = {**_batch_params(new_jobs), "window": window}
    rows = _INSERT_BATCH_DISPATCHED_PG.fetch_all_dbapi(dbapi_conn, dialect, params)
    return {job_id: lease for job_id, lease in rows if lease}


#: the columns a bulk COPY writes; the others take their defaults (NULL, lease 0)
_COPY_PLAIN = (
    "COPY queue_jobs (id, type, queue, priority, data, max_attempts, timeout_seconds,"
    " unique_key, status, scheduled_at, attempt, errors, created_at, updated_at,"
    " partition_key) FROM STDIN"
)


#: COPY's text format: backslash, tab, newline and carriage return are escaped, NULL is \N
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    return "\\N" if value is None else str(value).translate(_COPY_ESCAPES)


def _copy_plain(conn: Connection, plain: Sequence[NewJob]) -> None:
    """Jobs that cannot conflict (fresh ids, no keys), many at once, with COPY: several times
    faster than a multi-row INSERT. The row values the INSERT computes in SQL are computed
    here from the database clock read in the same transaction (``now()`` is the transaction's
    start, the same for every statement in it): ``status`` is ``scheduled`` for a job due later
    than that, else ``queued``. COPY fires the insert NOTIFY trigger as an INSERT does."""
    now = conn.exec_driver_sql("SELECT now()").scalar_one()
    stamp = _copy_field(now)
    cursor = conn.connection.driver_connection.cursor()  # the same transaction
    with cursor, cursor.copy(_COPY_PLAIN) as copy:
        # sent in chunks: PostgreSQL stores one chunk while the next is formatted
        for at in range(0, len(plain), _COPY_CHUNK):
            copy.write(_copy_lines(plain[at : at + _COPY_CHUNK], now, stamp))


_COPY_CHUNK = 500


def _copy_lines(plain: Sequence[NewJob], now: datetime, stamp: str) -> str:
    lines = []
    for j in plain:
        due = j.scheduled_at if j.scheduled_at is not None else now
        fields = (
            str(j.id),
            _copy_field(j.type),
            _copy_field(j.queue),
            str(j.priority),
            _copy_field(j.data_text),
            str(j.max_attempts),
            _copy_field(j.timeout_seconds),
            _copy_field(j.unique_key),
            S.SCHEDULED.value if due > now else S.QUEUED.value,
            stamp if due is now else _copy_field(due),
            "0",
            "[]",
            stamp,
            stamp,
            _copy_field(j.partition_key),
        )
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines)


def _resolve_conflicts(
    conn: Connection, new_jobs: Sequence[NewJob], inserted: set[uuid.UUID]
) -> list[uuid.UUID]:
    missing = [j.id for j in new_jobs if j.id not in inserted]
    present = set(conn.execute(select(jobs.c.id).where(jobs.c.id.in_(missing))).scalars())
    inserted = inserted | present  # same id already there: an insert retried after a lost reply
    keys = [j.idempotency_key for j in new_jobs if j.id not in inserted and j.idempotency_key]
    ticks = [j.tick_key for j in new_jobs if j.id not in inserted and j.tick_key]
    by_key: dict[str, Row[Any]] = {}
    if keys:
        rows = conn.execute(
            select(jobs.c.idempotency_key, jobs.c.id, jobs.c.type, jobs.c.data).where(
                jobs.c.idempotency_key.in_(keys), _NON_TERMINAL
            )
        )
        by_key.update({row.idempotency_key: row for row in rows})
    by_tick: dict[str, uuid.UUID] = {}
    if ticks:
        rows = conn.execute(select(jobs.c.tick_key, jobs.c.id).where(jobs.c.tick_key.in_(ticks)))
        by_tick.update({k: i for k, i in rows})
    out: list[uuid.UUID] = []
    for j in new_jobs:
        if j.id in inserted:
            out.append(j.id)
        elif j.idempotency_key and j.idempotency_key in by_key:
            out.append(_same_job(j, by_key[j.idempotency_key]))
        elif j.tick_key and j.tick_key in by_tick:
            out.append(by_tick[j.tick_key])
        else:  # the conflicting row finished between our INSERT and SELECT: rare, so retry
            out.extend(insert_jobs(conn, [j]))
    return out


def _same_job(new: NewJob, live: Row[Any]) -> uuid.UUID:
    """The id of the live job holding ``new``'s idempotency key, if it is the same job:
    same type and same data (compared as JSON values, so key order does not matter);
    else :class:`KeyConflict`."""
    if live.type != new.type or live.data != json.loads(new.data_text):
        raise KeyConflict(new, live.id, live.type)
    return live.id


def _ids_from(conn: Connection, picked: Any) -> Any:
    """``id`` in the rows a LIMITed (and possibly SKIP LOCKED) SELECT picks, evaluated ONCE.

    On PostgreSQL a plain ``IN (subquery)`` may be planned as a join that re-runs the subquery,
    and with SKIP LOCKED each run picks other rows: more than LIMIT rows get updated. An
    ``ARRAY(subquery)`` is an init-plan, computed once (the CTE fence of Oban/River).
    """
    if conn.dialect.name == "postgresql":
        return jobs.c.id == any_(func.array(picked.scalar_subquery()))
    return jobs.c.id.in_(picked.scalar_subquery())


def _guarded(transition: Transition) -> Any:
    return jobs.c.status.in_(sources(transition))


def _status_of(conn: Connection, job_id: uuid.UUID) -> str | None:
    return conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()


# --- maintainer transitions -------------------------------------------------------------


def stage_due(conn: Connection, limit: int = 5000) -> int:
    """``scheduled``/``retrying`` jobs whose time has come become ``queued``."""
    due = (
        select(jobs.c.id)
        .where(_guarded(Transition.STAGE), jobs.c.scheduled_at <= db_now())
        .order_by(jobs.c.scheduled_at)
        .limit(limit)
    )
    stmt = (
        update(jobs)
        .where(_ids_from(conn, due), _guarded(Transition.STAGE))
        .values(status=S.QUEUED.value, updated_at=db_now())
    )
    return conn.execute(stmt).rowcount


#: a dispatch takes the attempt and a new lease: the message carries the lease, and the worker
#: that runs it writes the outcome fenced on it (no claim round trip before the handler runs)
_DISPATCH_VALUES: dict[str, Any] = {
    "status": S.DISPATCHED.value,
    "attempt": jobs.c.attempt + 1,
    "lease": jobs.c.lease + 1,
    "dispatched_at": db_now(),
    "updated_at": db_now(),
}
_DISPATCH_RETURNING = (
    jobs.c.id,
    jobs.c.lease,
    jobs.c.priority,
    jobs.c.timeout_seconds,
    jobs.c.scheduled_at,
)


def _dispatch_statement(*only_if: Any) -> Any:
    """PostgreSQL: dispatch up to ``:limit`` queued jobs of ``:queue``, best first, picked
    once (``id = ANY(ARRAY(...))``) with ``FOR UPDATE SKIP LOCKED``; ``only_if`` are further
    conditions of the pick (when one is false, nothing is picked)."""
    picked = (
        select(jobs.c.id)
        .where(
            # inline, not a parameter: a prepared statement's generic plan can then use the
            # partial index of queued jobs (a parameter cannot prove its predicate)
            jobs.c.status == literal(S.QUEUED.value, literal_execute=True),
            jobs.c.queue == bindparam("queue", "", type_=jobs.c.queue.type),
            *only_if,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
        .limit(bindparam("limit", 0, type_=Integer()))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(jobs)
        .where(jobs.c.id == any_(func.array(picked)), _guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )


_DISPATCH = _HotStatement(_dispatch_statement())

#: the dispatcher's advisory lock, taken once for the statement (MATERIALIZED: evaluated
#: once, before the pick)
_DISPATCH_LOCK = (
    select(func.pg_try_advisory_xact_lock(bindparam("lock_key", 0, type_=BigInteger())).label("ok"))
    .cte("lock")
    .prefix_with("MATERIALIZED")
)

#: one queue's dispatch in one autocommit statement: the advisory lock (held for the
#: statement), the pause check, the pick and the lease; nothing is picked when the lock is
#: taken elsewhere or the queue is paused
_DISPATCH_QUEUE_PG = _HotStatement(
    _dispatch_statement(
        select(_DISPATCH_LOCK.c.ok).scalar_subquery(),
        _queue_not_paused(bindparam("queue", "", type_=jobs.c.queue.type)),
    ).add_cte(_DISPATCH_LOCK)
)


def dispatch(
    conn: Connection,
    queue: str,
    limit: int,
    *,
    only_type: str | None = None,
    exclude_types: Sequence[str] = (),
    unpartitioned_of: Sequence[str] = (),
) -> list[Row[Any]]:
    """Mark up to ``limit`` due jobs of ``queue`` ``dispatched``, best first (optionally of one
    type only, or of every type but some: the metered types are dispatched on their own).
    Of the types in ``unpartitioned_of`` (partitioned types, dispatched by partition) only
    jobs without a partition key are taken (jobs queued before their type was partitioned).
    Each takes its attempt (``attempt + 1``) and a new lease (``lease + 1``).

    Returns ``(id, lease, priority, timeout_seconds, scheduled_at)`` rows ordered as they
    should be pushed.
    The caller pushes them to Redis after commit; a push that never happens is repaired
    by :func:`requeue_lost`.
    """
    if limit <= 0:
        return []
    plain = only_type is None and not exclude_types and not unpartitioned_of
    if plain and conn.dialect.name == "postgresql":
        rows = list(_DISPATCH.execute(conn, {"queue": queue, "limit": limit}))
        rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
        return rows
    # the status inline, not a parameter: once psycopg prepares the statement, PostgreSQL's
    # generic plan could not use the partial index of queued jobs (measured: 17 - 25 ms per
    # pass, then 186 ms from the 11th call, at 100,000 queued jobs)
    queued = jobs.c.status == literal(S.QUEUED.value, literal_execute=True)
    picked = select(jobs.c.id).where(queued, jobs.c.queue == queue)
    if only_type is not None:
        picked = picked.where(jobs.c.type == only_type)
    if exclude_types:
        picked = picked.where(jobs.c.type.not_in(list(exclude_types)))
    if unpartitioned_of:
        picked = picked.where(
            or_(jobs.c.partition_key.is_(None), jobs.c.type.not_in(list(unpartitioned_of)))
        )
    picked = (
        picked.order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(jobs)
        .where(_ids_from(conn, picked), _guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )
    rows = list(conn.execute(stmt))
    rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
    return rows


def dispatch_ids(conn: Connection, ids: Sequence[uuid.UUID]) -> list[Row[Any]]:
    """Mark these jobs ``dispatched`` (those still ``queued``: one cancelled meanwhile is
    skipped), as :func:`dispatch` does; the fair pass chose them (``db.partitions``).
    Returns the rows unordered."""
    if not ids:
        return []
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(list(ids)), _guarded(Transition.DISPATCH))
        .values(**_DISPATCH_VALUES)
        .returning(*_DISPATCH_RETURNING)
    )
    return list(conn.execute(stmt))


#: Distinct queues with queued jobs by skip-scan over the dispatch-order index: one index
#: probe per queue, however long the backlog (a plain DISTINCT reads every queued row).
_QUEUED_QUEUES = text(
    f"""
    WITH RECURSIVE q(queue) AS (
        SELECT (SELECT queue FROM queue_jobs WHERE status = {_QUEUED} ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM queue_jobs j
                WHERE j.status = {_QUEUED} AND j.queue > q.queue ORDER BY j.queue LIMIT 1)
        FROM q WHERE q.queue IS NOT NULL
    )
    SELECT queue FROM q WHERE queue IS NOT NULL
    """
)


def queues_with_queued_jobs(conn: Connection) -> list[str]:
    return list(conn.execute(_QUEUED_QUEUES).scalars())


_DISPATCH_PLAN_PG = text(
    f"""
    SELECT pg_try_advisory_xact_lock(:lock_key),
           ARRAY({_QUEUED_QUEUES.text}),
           ARRAY(SELECT queue_name FROM queue_controls WHERE paused)
    """
)


def dispatch_queue_now(conn: Connection, queue: str, limit: int, lock_key: int) -> list[Row[Any]]:
    """PostgreSQL, in autocommit: :func:`dispatch` of one queue (no metered types) as a single
    statement that also takes the dispatcher's advisory lock and skips a paused queue. What a
    wake-up for new jobs runs: one round trip instead of a transaction of four."""
    if limit <= 0:
        return []
    params = {"lock_key": lock_key, "queue": queue, "limit": limit}
    rows = list(_DISPATCH_QUEUE_PG.execute(conn, params))
    rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
    return rows


@dataclass(frozen=True)
class DispatchPlan:
    locked: bool  # this maintainer holds the dispatcher's lock for the transaction
    queues: list[str]  # queues with queued jobs
    paused: set[str]


def dispatch_plan(conn: Connection, lock_key: int) -> DispatchPlan:
    """What a dispatch pass starts from, in one round trip on PostgreSQL (it runs on every
    wake-up, so it is on the submit-to-start path): the transaction-scoped advisory lock,
    the queues with queued jobs, and the paused queues. SQLite's ``BEGIN IMMEDIATE`` already
    serializes passes."""
    if conn.dialect.name == "postgresql":
        locked, queues, paused = conn.execute(_DISPATCH_PLAN_PG, {"lock_key": lock_key}).one()
        return DispatchPlan(bool(locked), list(queues), set(paused))
    paused_rows = conn.execute(select(QueueControl.queue_name).where(QueueControl.paused.is_(True)))
    return DispatchPlan(True, queues_with_queued_jobs(conn), set(paused_rows.scalars()))


def active_counts(conn: Connection, types: Sequence[str]) -> dict[str, int]:
    """Jobs of these types that are dispatched or running (counted against concurrency)."""
    if not types:
        return {}
    rows = conn.execute(
        select(jobs.c.type, func.count())
        .where(jobs.c.type.in_(list(types)), jobs.c.status.in_(sorted_values(LEASED)))
        .group_by(jobs.c.type)
    )
    return {t: int(n) for t, n in rows}


def starts_since(conn: Connection, job_type: str, period_seconds: float) -> int:
    """Attempts of ``job_type`` started in the last ``period_seconds``, plus those dispatched
    and about to start (both count against a rate limit). One statement, so a job moving
    from dispatched to running in between is counted exactly once."""
    stmt = select(func.count()).where(
        jobs.c.type == job_type,
        or_(
            jobs.c.status == S.DISPATCHED.value,
            jobs.c.started_at >= db_now(-period_seconds),
        ),
    )
    return int(conn.execute(stmt).scalar_one())


def dispatched_of_queue(conn: Connection, queue: str) -> list[tuple[uuid.UUID, int]]:
    """``(id, lease)`` of every dispatched job of ``queue``."""
    stmt = select(jobs.c.id, jobs.c.lease).where(
        jobs.c.queue == queue, jobs.c.status == S.DISPATCHED.value
    )
    return [(job_id, lease) for job_id, lease in conn.execute(stmt)]


def requeue_dispatched(
    conn: Connection, queue: str, only: Sequence[tuple[uuid.UUID, int]] | None = None
) -> int:
    """Take back the dispatched jobs of ``queue`` (pausing it) and the attempts they took:
    every one, or ``only`` those deliveries ``(id, lease)`` that are still dispatched. Their
    messages start nothing (a worker checks the lease is still dispatched)."""
    if only is not None and not only:
        return 0
    picked = [] if only is None else [tuple_(jobs.c.id, jobs.c.lease).in_(list(only))]
    stmt = (
        update(jobs)
        .where(jobs.c.queue == queue, _guarded(Transition.RECONCILE), *picked)
        .values(**_GIVE_BACK_VALUES)
    )
    return _finishing(conn, stmt)


def find_unique(conn: Connection, unique_key: str, window_seconds: float) -> uuid.UUID | None:
    """The newest job with this unique key created within the window that did not fail and
    was not cancelled (those do not block a new submit), if any."""
    stmt = (
        select(jobs.c.id)
        .where(
            jobs.c.unique_key == unique_key,
            jobs.c.created_at >= db_now(-window_seconds),
            jobs.c.status.not_in([S.FAILED.value, S.CANCELLED.value]),
        )
        .order_by(jobs.c.created_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).scalar_one_or_none()


def dispatched_before(
    conn: Connection, grace_seconds: float
) -> dict[str, list[tuple[uuid.UUID, int]]]:
    """``(id, lease)`` of jobs dispatched more than ``grace_seconds`` ago and not started yet,
    by queue."""
    rows = conn.execute(
        select(jobs.c.queue, jobs.c.id, jobs.c.lease).where(
            jobs.c.status == S.DISPATCHED.value,
            jobs.c.dispatched_at < db_now(-grace_seconds),
        )
    )
    out: dict[str, list[tuple[uuid.UUID, int]]] = {}
    for queue, job_id, lease in rows:
        out.setdefault(queue, []).append((job_id, lease))
    return out


#: deliveries a job may get back without an attempt counted (``lease - attempt`` counts
#: them: a dispatch takes both, a give-back returns the attempt only); past it, a delivery
#: that nobody recorded as started costs an attempt, so no job circles for ever
MAX_GIVEN_BACK = 10

_CANCEL_ASKED = jobs.c.cancel_requested_at.is_not(None)

#: a lease that never started goes back: the job waits again and its attempt is not counted;
#: a job whose cancel was requested meanwhile ends ``cancelled`` instead
_GIVE_BACK_VALUES: dict[str, Any] = {
    "status": case((_CANCEL_ASKED, literal(S.CANCELLED.value)), else_=literal(S.QUEUED.value)),
    "attempt": case((_CANCEL_ASKED, jobs.c.attempt), else_=jobs.c.attempt - 1),
    "finished_at": case((_CANCEL_ASKED, db_now()), else_=None),
    "dispatched_at": None,
    "updated_at": db_now(),
}


def requeue_lost(conn: Connection, leases: Iterable[tuple[uuid.UUID, int]]) -> int:
    """Dispatched jobs whose message ``(id, lease)`` is gone from Redis and that no worker
    took go back to queued, giving their attempt back (``cancelled`` if a cancel was
    requested). The lease stays taken, so a late worker holding that message can no longer
    write anything. A job that already got :data:`MAX_GIVEN_BACK` deliveries back is left
    alone: the caller counts the attempt (:func:`still_dispatched`)."""
    pairs = list(leases)
    if not pairs:
        return 0
    stmt = (
        update(jobs)
        .where(
            tuple_(jobs.c.id, jobs.c.lease).in_(pairs),
            _guarded(Transition.RECONCILE),
            jobs.c.lease - jobs.c.attempt < MAX_GIVEN_BACK,
        )
        .values(**_GIVE_BACK_VALUES)
    )
    return _finishing(conn, stmt)


def still_dispatched(conn: Connection, leases: Iterable[tuple[uuid.UUID, int]]) -> list[Row[Any]]:
    """``(id, type, attempt, lease)`` of the given deliveries that are still ``dispatched``
    under that lease (after :func:`requeue_lost`: those to count as attempts)."""
    pairs = list(leases)
    if not pairs:
        return []
    stmt = select(jobs.c.id, jobs.c.type, jobs.c.attempt, jobs.c.lease).where(
        tuple_(jobs.c.id, jobs.c.lease).in_(pairs), jobs.c.status == S.DISPATCHED.value
    )
    return list(conn.execute(stmt))


def orphaned_running(
    conn: Connection, stale_seconds: float, deadline_grace_seconds: float
) -> list[Row[Any]]:
    """Running attempts whose worker is dead (stale or missing) or whose deadline passed.

    Returns ``(id, type, attempt, lease, worker_id, reason)`` rows.
    """
    live = select(Worker.id).where(
        Worker.status != "stopped", Worker.last_heartbeat >= db_now(-stale_seconds)
    )
    dead_worker = or_(jobs.c.worker_id.is_(None), jobs.c.worker_id.not_in(live))
    overdue = and_(
        jobs.c.timeout_seconds.is_not(None),
        jobs.c.started_at < db_now(-(jobs.c.timeout_seconds + deadline_grace_seconds)),
    )
    reason = case(
        (dead_worker, literal("worker lost: heartbeat stale or worker stopped")),
        else_=literal("attempt exceeded its timeout"),
    )
    stmt = select(
        jobs.c.id,
        jobs.c.type,
        jobs.c.attempt,
        jobs.c.lease,
        jobs.c.worker_id,
        reason.label("reason"),
    ).where(jobs.c.status == S.RUNNING.value, or_(dead_worker, overdue))
    return list(conn.execute(stmt))


# --- worker transitions -----------------------------------------------------------------


#: what a claim returns, in the order of ``Claimed``'s fields
_CLAIMED_COLUMNS = (
    jobs.c.id,
    jobs.c.type,
    jobs.c.queue,
    jobs.c.data,
    jobs.c.attempt,
    jobs.c.lease,
    jobs.c.max_attempts,
    jobs.c.timeout_seconds,
    # the column itself: SQLite 3.40 answers 1 for "col IS NOT NULL" in UPDATE ... RETURNING
    # when col is NULL
    jobs.c.cancel_requested_at,
)

_QUEUE_NOT_PAUSED = _queue_not_paused(jobs.c.queue)

_LEASED = _HotStatement(
    select(*_CLAIMED_COLUMNS).where(
        jobs.c.id == bindparam("job_id", None, type_=jobs.c.id.type),
        jobs.c.lease == bindparam("lease", None, type_=Integer()),
        jobs.c.status == S.DISPATCHED.value,
        _QUEUE_NOT_PAUSED,
    )
)


def leased(conn: Connection, job_id: uuid.UUID, lease: int) -> Claimed | None:
    """The attempt a message ``(job_id, lease)`` may run, read without a write: None when the
    message is stale (its lease was given back or superseded), the job was cancelled, or its
    queue is paused. The worker records the start later (:func:`start_many`); the outcome
    write is fenced on the lease either way."""
    row = _LEASED.execute(conn, {"job_id": job_id, "lease": lease}).first()
    return None if row is None else Claimed(*row)


_CLAIM_LEASE = _HotStatement(
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id", None, type_=jobs.c.id.type),
        jobs.c.lease == bindparam("b_lease", None, type_=Integer()),
        jobs.c.status == S.DISPATCHED.value,
        _QUEUE_NOT_PAUSED,
    )
    .values(
        status=S.RUNNING.value,
        started_at=db_now(),
        worker_id=bindparam("worker_id", None, type_=jobs.c.worker_id.type),
        updated_at=db_now(),
    )
    .returning(*_CLAIMED_COLUMNS)
)


def leased_dbapi(dbapi_conn: Any, dialect: Any, job_id: uuid.UUID, lease: int) -> Claimed | None:
    """:func:`leased` on a psycopg connection in autocommit that the calling thread holds: a
    thread worker's per-job read, at about half the CPU of going through a pooled SQLAlchemy
    connection (measured: 303 vs 563 µs per read)."""
    row = _LEASED.fetch_one_dbapi(dbapi_conn, dialect, {"job_id": job_id, "lease": lease})
    return None if row is None else Claimed(*row)


def claim(
    conn: Connection, job_id: uuid.UUID, worker_id: uuid.UUID | None, lease: int | None = None
) -> Claimed | None:
    """Start an attempt before running it, in one guarded UPDATE (process workers, and tools).

    With ``lease`` (a message's): the leased ``dispatched`` attempt becomes ``running``.
    Without: a ``queued`` job is started directly under a new lease (attempt + 1), and a
    ``dispatched`` one under its current lease. None when the message is stale or duplicate,
    the job was cancelled, or its queue is paused.
    """
    if lease is not None:
        params = {"job_id": job_id, "b_lease": lease, "worker_id": worker_id}
        row = _CLAIM_LEASE.execute(conn, params).first()
        return None if row is None else Claimed(*row)
    fresh = jobs.c.status == S.QUEUED.value
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, _guarded(Transition.CLAIM), _QUEUE_NOT_PAUSED)
        .values(
            status=S.RUNNING.value,
            attempt=case((fresh, jobs.c.attempt + 1), else_=jobs.c.attempt),
            lease=case((fresh, jobs.c.lease + 1), else_=jobs.c.lease),
            started_at=db_now(),
            worker_id=worker_id,
            updated_at=db_now(),
        )
        .returning(*_CLAIMED_COLUMNS)
    )
    row = conn.execute(stmt).first()
    return None if row is None else Claimed(*row)


def claimed_by(conn: Connection, job_id: uuid.UUID, worker_id: uuid.UUID) -> Claimed | None:
    """The running attempt of ``job_id`` if ``worker_id`` holds it: after a claim whose reply
    was lost (connection dropped after the commit), the worker picks its attempt up again."""
    row = conn.execute(
        select(*_CLAIMED_COLUMNS).where(
            jobs.c.id == job_id,
            jobs.c.status == S.RUNNING.value,
            jobs.c.worker_id == worker_id,
        )
    ).first()
    return None if row is None else Claimed(*row)


def _fence(job_id: uuid.UUID, lease: int) -> Any:
    """The writes of an attempt: only while its lease is the job's lease and not finished."""
    return and_(
        jobs.c.id == job_id,
        jobs.c.lease == lease,
        jobs.c.status.in_(sorted(s.value for s in LEASED)),
    )


def _ran(worker_id: uuid.UUID | None, started_ago: float | None) -> dict[str, Any]:
    """``started_at``/``worker_id`` of an attempt whose start the worker measured itself
    (``started_ago`` seconds before this statement): the outcome may be the first write."""
    if started_ago is None:
        return {}
    return {"started_at": db_now(-float(started_ago)), "worker_id": worker_id}


_START_MANY_PG = text(
    f"""
    UPDATE queue_jobs AS j
    SET status = {_RUNNING}, worker_id = v.worker_id, updated_at = now(),
        started_at = now() - make_interval(secs => v.ago)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:leases AS integer[]), CAST(:workers AS uuid[]),
                CAST(:agos AS double precision[])) AS v(id, lease, worker_id, ago)
    WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = v.id
      AND j.status IN ({sql_list(TRANSITIONS[Transition.START][0])}) AND j.lease = v.lease
    """
)


def start_many(
    conn: Connection, started: Sequence[tuple[uuid.UUID, int, uuid.UUID | None, float]]
) -> int:
    """Record that attempts ``(job id, lease, worker id, seconds since start)`` are running,
    in one statement. An attempt whose outcome was written first, or whose lease was taken
    back, is left alone. Returns the number recorded."""
    if not started:
        return 0
    if conn.dialect.name == "postgresql":
        params = {
            "ids": [s[0] for s in started],
            "leases": [s[1] for s in started],
            "workers": [s[2] for s in started],
            "agos": [float(s[3]) for s in started],
        }
        return conn.execute(_START_MANY_PG, params).rowcount
    recorded = 0
    for job_id, lease, worker_id, ago in started:
        stmt = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.lease == lease, _guarded(Transition.START))
            .values(status=S.RUNNING.value, updated_at=db_now(), **_ran(worker_id, ago))
        )
        recorded += conn.execute(stmt).rowcount
    return recorded


@dataclass(frozen=True)
class Outcome:
    """A successful attempt, as the worker hands it to the group commit."""

    id: uuid.UUID
    lease: int
    result: Any
    worker_id: uuid.UUID | None = None
    started_ago: float | None = None  # seconds between the start and the write
    finished_ago: float = 0.0  # seconds between the end of the handler and the write


def complete(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    result: Any,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
    finished_ago: float = 0.0,
) -> bool:
    """Record success of the attempt. False when the attempt was fenced off (rescued)."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(
            status=S.COMPLETED.value,
            result=bindparam("b_result", value=result, type_=JSONType),
            completed_at=db_now(-float(finished_ago)),
            finished_at=db_now(-float(finished_ago)),
            updated_at=db_now(),
            **_ran(worker_id, started_ago),
        )
    )
    return _finishing(conn, stmt, one=True) == 1


_COMPLETE_MANY_PG = text(
    f"""
    UPDATE queue_jobs AS j
    SET status = {_COMPLETED}, result = v.result,
        completed_at = now() - make_interval(secs => v.fago),
        finished_at = now() - make_interval(secs => v.fago),
        started_at = COALESCE(now() - make_interval(secs => v.sago), j.started_at),
        worker_id = COALESCE(v.worker_id, j.worker_id),
        updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:leases AS integer[]), CAST(:results AS jsonb[]),
                CAST(:workers AS uuid[]), CAST(:sagos AS double precision[]),
                CAST(:fagos AS double precision[]))
         AS v(id, lease, result, worker_id, sago, fago)
    WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = v.id
      AND j.status IN ({sql_list(TRANSITIONS[Transition.COMPLETE][0])}) AND j.lease = v.lease
    RETURNING j.id
    """
)


def complete_many(conn: Connection, done: Sequence[Outcome]) -> set[uuid.UUID]:
    """Record the success of many attempts in one statement (group commit). Returns the ids
    recorded; the others were fenced off."""
    if not done:
        return set()
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            _COMPLETE_MANY_PG,
            {
                "ids": [d.id for d in done],
                "leases": [d.lease for d in done],
                "results": [json.dumps(d.result) for d in done],
                "workers": [d.worker_id for d in done],
                "sagos": [d.started_ago for d in done],
                "fagos": [float(d.finished_ago) for d in done],
            },
        )
        return set(rows.scalars())
    return {
        d.id
        for d in done
        if complete(
            conn,
            d.id,
            d.lease,
            d.result,
            worker_id=d.worker_id,
            started_ago=d.started_ago,
            finished_ago=d.finished_ago,
        )
    }


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


def fail_attempt(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    error_entry: dict[str, Any],
    retry_delay_seconds: float,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
) -> str | None:
    """Record a failed attempt: ``retrying`` (attempts left), ``failed``, or ``cancelled``
    (cancel was requested). Returns the new status, or None if fenced off.
    """
    cancelled = jobs.c.cancel_requested_at.is_not(None)
    retry = and_(~cancelled, jobs.c.attempt < jobs.c.max_attempts)
    new_status = case(
        (cancelled, literal(S.CANCELLED.value)),
        (retry, literal(S.RETRYING.value)),
        else_=literal(S.FAILED.value),
    )
    ran = _ran(worker_id, started_ago)
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(
            status=new_status,
            scheduled_at=case((retry, db_now(retry_delay_seconds)), else_=jobs.c.scheduled_at),
            finished_at=case((retry, None), else_=db_now()),
            last_error=str(error_entry.get("error", ""))[:4000],
            errors=json_append(jobs.c.errors, bindparam("b_entry", error_entry, JSONType)),
            worker_id=case((retry, None), else_=ran.get("worker_id", jobs.c.worker_id)),
            started_at=ran.get("started_at", jobs.c.started_at),
            updated_at=db_now(),
        )
        .returning(jobs.c.status)
    )
    if conn.dialect.name != "sqlite":
        return conn.execute(stmt).scalar_one_or_none()
    row = conn.execute(stmt.returning(jobs.c.has_dependents)).first()
    if row is not None and row[1]:
        release_dependents(conn)
    return None if row is None else row[0]


def set_progress(
    conn: Connection, job_id: uuid.UUID, lease: int, fraction: float, message: str | None
) -> bool:
    """Store the handler's progress on its attempt (fenced like every attempt write)."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease))
        .values(progress=fraction, progress_message=message, progress_at=db_now())
    )
    return conn.execute(stmt).rowcount == 1


def cancel_requested(conn: Connection, job_id: uuid.UUID) -> bool:
    stmt = select(jobs.c.cancel_requested_at.is_not(None)).where(jobs.c.id == job_id)
    return bool(conn.execute(stmt).scalar_one_or_none())


def finish_cancelled(
    conn: Connection,
    job_id: uuid.UUID,
    lease: int,
    *,
    worker_id: uuid.UUID | None = None,
    started_ago: float | None = None,
) -> bool:
    """A job whose cancel was requested stopped cooperatively."""
    stmt = (
        update(jobs)
        .where(_fence(job_id, lease), jobs.c.cancel_requested_at.is_not(None))
        .values(
            status=S.CANCELLED.value,
            finished_at=db_now(),
            updated_at=db_now(),
            **_ran(worker_id, started_ago),
        )
    )
    return _finishing(conn, stmt, one=True) == 1


def hand_back_all(conn: Connection, worker_id: uuid.UUID) -> int:
    """A worker shutting down returns the jobs it could not finish: they run again and the
    interrupted attempt is not counted (its number is given back). A job whose cancel was
    requested ends ``cancelled`` instead."""
    cancelled = jobs.c.cancel_requested_at.is_not(None)
    stmt = (
        update(jobs)
        .where(jobs.c.worker_id == worker_id, _guarded(Transition.HAND_BACK))
        .values(
            status=case((cancelled, literal(S.CANCELLED.value)), else_=literal(S.QUEUED.value)),
            finished_at=case((cancelled, db_now()), else_=None),
            attempt=case((cancelled, jobs.c.attempt), else_=jobs.c.attempt - 1),
            worker_id=case((cancelled, jobs.c.worker_id), else_=None),
            started_at=case((cancelled, jobs.c.started_at), else_=None),
            dispatched_at=None,
            updated_at=db_now(),
        )
    )
    return _finishing(conn, stmt)


# --- admin transitions (job API) --------------------------------------------------------


def cancel_target(conn: Connection, job_id: uuid.UUID) -> tuple[str, int]:
    """``(status, lease)`` of a job about to be cancelled; :class:`TransitionError` when it
    does not exist."""
    row = conn.execute(select(jobs.c.status, jobs.c.lease).where(jobs.c.id == job_id)).first()
    if row is None:
        raise TransitionError(job_id, Transition.CANCEL, None)
    return row[0], row[1]


def cancel_unstarted(conn: Connection, job_id: uuid.UUID, lease: int) -> bool:
    """Cancel a job that no worker has started, if it is still as the caller saw it
    (``lease``): ``scheduled``, ``queued``, ``retrying``, or ``dispatched`` under a delivery
    the caller knows no worker will start (blocked in Redis, or claimed in the ledger by
    workers that claim). False when it moved meanwhile."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease == lease, _guarded(Transition.CANCEL))
        .values(
            status=S.CANCELLED.value,
            cancel_requested_at=db_now(),
            finished_at=db_now(),
            updated_at=db_now(),
        )
    )
    return _finishing(conn, stmt, one=True) == 1


def request_cancel(conn: Connection, job_id: uuid.UUID) -> bool:
    """Ask the attempt a worker holds (``running``, or ``dispatched`` and taken from Redis) to
    stop: a worker that has not started it ends it ``cancelled`` without running it; a
    running handler sees ``ctx.cancel_requested``. False when no worker holds it."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(sorted(s.value for s in LEASED)))
        .values(
            cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, db_now()),
            updated_at=db_now(),
        )
    )
    return conn.execute(stmt).rowcount == 1


def cancel(conn: Connection, job_id: uuid.UUID) -> str:
    """Cancel a job whose deliveries workers claim in the ledger (no delivery marks): a
    ``dispatched`` job is then not started until its claim commits, so cancelling it is
    final. Returns ``"cancelled"`` or ``"cancel_requested"`` (running);
    raises :class:`TransitionError`."""
    for _ in range(3):
        status, lease = cancel_target(conn, job_id)
        if status == S.RUNNING.value:
            if request_cancel(conn, job_id):
                return "cancel_requested"
        elif not can(Transition.CANCEL, status):
            raise TransitionError(job_id, Transition.CANCEL, status)
        elif cancel_unstarted(conn, job_id, lease):
            return S.CANCELLED.value
    raise TransitionError(job_id, Transition.CANCEL, _status_of(conn, job_id))


def retry(conn: Connection, job_id: uuid.UUID) -> int:
    """Run a failed or cancelled job again. Attempts keep counting (so every entry of the
    error history keeps its own attempt number); a job with no attempts left gets one more.
    Jobs it cancelled as a dependency wait for it again (:func:`revive_dependents`; run it
    in a transaction when the job has dependents). Returns how many were revived."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, _guarded(Transition.RETRY))
        .values(
            status=S.QUEUED.value,
            max_attempts=case(
                (jobs.c.attempt >= jobs.c.max_attempts, jobs.c.attempt + 1),
                else_=jobs.c.max_attempts,
            ),
            scheduled_at=db_now(),
            started_at=None,
            completed_at=None,
            finished_at=None,
            dispatched_at=None,
            cancel_requested_at=None,
            worker_id=None,
            result=None,
            updated_at=db_now(),
        )
        .returning(jobs.c.has_dependents)
    )
    parent = conn.execute(stmt).scalar_one_or_none()
    if parent is None:
        raise TransitionError(job_id, Transition.RETRY, _status_of(conn, job_id))
    return revive_dependents(conn, job_id) if parent else 0


# --- workflows: jobs that wait for other jobs (docs/architecture.md, "Dependencies") ------

#: what a dependency that did not complete does to a job that waits for it
ON_DEPENDENCY_FAILURE = ("cancel", "run")
_ENDED_BADLY = sorted_values({S.FAILED, S.CANCELLED})


class UnknownDependencies(Exception):
    """Dependencies named by id that are not in the ledger."""

    def __init__(self, missing: Sequence[uuid.UUID]) -> None:
        self.missing = list(missing)
        shown = ", ".join(str(m) for m in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"unknown dependency job(s): {shown}{more}")


def dependency_error(dependency: uuid.UUID, status: str, attempt: int) -> dict[str, Any]:
    """The ``errors`` entry of a job cancelled because ``dependency`` ended ``status``
    (the PostgreSQL trigger writes the same fields)."""
    entry = error_entry(
        attempt, f"dependency {dependency} ended {status}", traceback=None, worker=None, kind=""
    )
    return {**entry, "kind": "dependency", "dependency": str(dependency)}


def _graph_insert_statement(dialect_name: str) -> Any:
    """One job of a workflow insert: the plain insert's columns plus an explicit state
    (``waiting``/``cancelled`` when given, else ``queued``/``scheduled`` by its time)."""
    sched = bindparam("b_scheduled_at", type_=UTCDateTime())
    state = bindparam("b_state", type_=jobs.c.status.type)
    ended = state == literal(S.CANCELLED.value)
    return _insert_for(dialect_name).values(
        **_job_values(),
        status=case(
            (state.is_not(None), state),
            (sched > db_now(), literal(S.SCHEDULED.value)),
            else_=literal(S.QUEUED.value),
        ),
        scheduled_at=func.coalesce(sched, db_now()),
        attempt=0,
        errors=bindparam("b_errors", type_=JSONType),
        last_error=bindparam("b_last_error", type_=Text()),
        finished_at=case((ended, db_now()), else_=null()),
        deps_pending=bindparam("b_pending", type_=Integer()),
        on_dependency_failure=bindparam("b_mode", type_=jobs.c.on_dependency_failure.type),
        has_dependents=bindparam("b_parent", type_=jobs.c.has_dependents.type),
        created_at=db_now(),
        updated_at=db_now(),
    )


def insert_graph(conn: Connection, new_jobs: Sequence[NewJob]) -> list[uuid.UUID]:
    """Insert jobs with dependencies, in the caller's transaction (all or nothing). A job's
    ``depends_on`` names existing jobs or jobs earlier in ``new_jobs`` (so no cycle can be
    built). Jobs without keys only (the caller refuses keys in a workflow).

    Existing dependencies are locked first (``has_dependents = true``, one UPDATE), so a
    dependency that ends meanwhile is either seen ended here or ends after this commit, with
    the edge in place for its trigger. A job whose dependencies have all ended as required
    goes in due (``queued``/``scheduled``); one with a dependency that failed or was
    cancelled goes in ``cancelled`` (``on_dependency_failure="cancel"``), with an error
    entry naming it; any other waits (``waiting``). Raises :class:`UnknownDependencies`.
    """
    in_batch = {j.id for j in new_jobs}
    parents = {d for j in new_jobs for d in j.depends_on}
    existing = sorted(parents - in_batch)
    status_of: dict[uuid.UUID, str] = {}
    if existing:
        rows = conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(existing))
            .values(has_dependents=True)
            .returning(jobs.c.id, jobs.c.status)
        )
        status_of = {job_id: status for job_id, status in rows}
        missing = [d for d in existing if d not in status_of]
        if missing:
            raise UnknownDependencies(missing)
    terminal = {s.value for s in TERMINAL}
    params: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for j in new_jobs:
        pending = 0
        blocker: tuple[uuid.UUID, str] | None = None
        for d in j.depends_on:
            status = status_of[d]  # an earlier item's state is known: it was set below
            resolved = status if status in terminal else None
            if resolved is None:
                pending += 1
            elif resolved != S.COMPLETED.value and blocker is None:
                blocker = (d, resolved)
            edges.append({"job_id": j.id, "depends_on": d, "resolved": resolved})
        errors: list[dict[str, Any]] = []
        state: str | None = None
        if blocker is not None and j.on_dependency_failure == "cancel":
            state = S.CANCELLED.value
            errors = [dependency_error(blocker[0], blocker[1], 0)]
        elif pending:
            state = S.WAITING.value
        status_of[j.id] = state or S.QUEUED.value
        params.append(
            {
                **_params(j),
                "b_state": state,
                "b_errors": errors,
                "b_last_error": errors[0]["error"] if errors else None,
                "b_pending": pending,
                "b_mode": j.on_dependency_failure if j.depends_on else None,
                "b_parent": j.id in parents,
            }
        )
    stmt = _graph_insert_statement(conn.dialect.name)
    conn.execute(stmt, params[0]) if len(params) == 1 else conn.execute(stmt, params)
    if edges:
        conn.execute(_insert_edges(conn.dialect.name), edges)
    return [j.id for j in new_jobs]


def _insert_edges(dialect_name: str) -> Any:
    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(deps).values(
        job_id=bindparam("job_id", type_=deps.c.job_id.type),
        depends_on=bindparam("depends_on", type_=deps.c.depends_on.type),
        resolved=bindparam("resolved", type_=deps.c.resolved.type),
    )


def _finishing(conn: Connection, stmt: Any, *, one: bool = False) -> int:
    """Run an UPDATE that may end jobs; returns its row count. PostgreSQL: as it is (the
    release trigger counts the edges of an ended job that others depend on, inside the
    statement). SQLite: first for the rows no job depends on (``NOT has_dependents``: the
    same one statement as before for a job outside any workflow), then, unless ``one`` job
    was named and already written, for the others, followed by :func:`release_dependents`
    in the same transaction when it wrote any. (A RETURNING of the flag cost 50 µs per
    finish through SQLAlchemy, a probe of the open edges 380 µs: measured, median.)"""
    if conn.dialect.name != "sqlite":
        return int(conn.execute(stmt).rowcount)
    plain = int(conn.execute(stmt.where(jobs.c.has_dependents.is_(False))).rowcount)
    if one and plain:
        return plain
    parents = int(conn.execute(stmt.where(jobs.c.has_dependents.is_(True))).rowcount)
    if parents:
        release_dependents(conn)
    return plain + parents


#: open edges whose dependency has ended: what :func:`release_dependents` counts
_ENDED_EDGES = (
    select(deps.c.job_id, deps.c.depends_on, jobs.c.status)
    .select_from(deps.join(jobs, jobs.c.id == deps.c.depends_on))
    .where(deps.c.resolved.is_(None), jobs.c.status.in_(sorted_values(TERMINAL)))
    .order_by(deps.c.depends_on, deps.c.job_id)
)


def release_dependents(conn: Connection) -> int:
    """Count every open edge whose dependency has ended, what the PostgreSQL trigger
    ``queue_jobs_release_dependents`` does in the finishing statement: a ``waiting`` job
    with ``on_dependency_failure="cancel"`` whose dependency failed or was cancelled is
    cancelled (an error entry names the dependency); otherwise it loses a pending dependency
    and, at 0, is released (``queued``, or ``scheduled`` at its own time). Repeats until no
    edge is left to count (a cancelled job's own dependents next). Returns the jobs moved.

    Run in the transaction of the write that ended the dependencies (SQLite, where
    ``BEGIN IMMEDIATE`` serializes writers); each edge is counted once (``resolved IS
    NULL`` guard)."""
    moved = 0
    while True:
        ended = conn.execute(_ENDED_EDGES).all()
        if not ended:
            return moved
        for child, parent, status in ended:
            counted = conn.execute(
                update(deps)
                .where(deps.c.job_id == child, deps.c.depends_on == parent)
                .where(deps.c.resolved.is_(None))
                .values(resolved=status)
            ).rowcount
            if counted:
                moved += _count_edge(conn, child, parent, status)


def _count_edge(conn: Connection, child: uuid.UUID, parent: uuid.UUID, status: str) -> int:
    waiting = and_(jobs.c.id == child, jobs.c.status == S.WAITING.value)
    doomed = and_(waiting, jobs.c.on_dependency_failure == "cancel")
    attempt = None
    if status != S.COMPLETED.value:
        attempt = conn.execute(select(jobs.c.attempt).where(doomed)).scalar_one_or_none()
    if attempt is not None:
        entry = dependency_error(parent, status, attempt)
        cancelled = conn.execute(
            update(jobs)
            .where(doomed)
            .values(
                status=S.CANCELLED.value,
                finished_at=db_now(),
                updated_at=db_now(),
                last_error=entry["error"],
                errors=json_append(jobs.c.errors, bindparam("b_entry", entry, JSONType)),
            )
        ).rowcount
        if cancelled:
            return cancelled
    last = jobs.c.deps_pending <= 1
    return conn.execute(
        update(jobs)
        .where(waiting)
        .values(
            deps_pending=jobs.c.deps_pending - 1,
            status=case(
                (~last, literal(S.WAITING.value)),
                (jobs.c.scheduled_at > db_now(), literal(S.SCHEDULED.value)),
                else_=literal(S.QUEUED.value),
            ),
            scheduled_at=case(
                (or_(~last, jobs.c.scheduled_at > db_now()), jobs.c.scheduled_at),
                else_=db_now(),
            ),
            updated_at=db_now(),
        )
    ).rowcount


def _by_key(condition: Any) -> Any:
    """``condition`` on a job reached from an edge, as ``(…) IS TRUE``: not a qualifier the
    status index can serve, so the planner reads the job by its primary key from the edge
    (with few ``waiting`` rows in its statistics it scanned every waiting or cancelled job
    per edge instead; see migration 0011)."""
    return condition.is_(True)


def revive_dependents(conn: Connection, job_id: uuid.UUID) -> int:
    """After ``job_id`` was retried: the jobs it (and, downstream, they) cancelled as a
    dependency wait again, and ``run`` dependents still waiting count it as pending again.
    A job with another dependency that failed or was cancelled stays cancelled. Returns the
    jobs revived. A job cancelled by a dependency is told apart from one cancelled by an
    admin by ``cancel_requested_at`` (every admin cancel sets it; a dependency never does)."""
    revived = 0
    frontier = [job_id]
    while frontier:
        rows = conn.execute(
            select(deps.c.job_id, deps.c.depends_on, jobs.c.status)
            .select_from(deps.join(jobs, jobs.c.id == deps.c.job_id))
            .where(
                deps.c.depends_on.in_(frontier),
                deps.c.resolved.is_not(None),
                _by_key(
                    or_(
                        jobs.c.status == S.WAITING.value,
                        and_(
                            jobs.c.status == S.CANCELLED.value,
                            jobs.c.cancel_requested_at.is_(None),
                            deps.c.resolved.in_(_ENDED_BADLY),
                        ),
                    )
                ),
            )
        ).all()
        frontier = []
        for child, parent, status in rows:
            edge = and_(deps.c.job_id == child, deps.c.depends_on == parent)
            if status == S.WAITING.value:
                conn.execute(update(deps).where(edge).values(resolved=None))
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == child, jobs.c.status == S.WAITING.value)
                    .values(deps_pending=jobs.c.deps_pending + 1, updated_at=db_now())
                )
                continue
            # edges of ``child`` counted as failed/cancelled whose dependency ran again
            # since (retried): they are open again, as the one to ``parent``
            rerun = and_(
                deps.c.job_id == child,
                deps.c.resolved.in_(_ENDED_BADLY),
                deps.c.depends_on.in_(select(jobs.c.id).where(~jobs.c.status.in_(_ENDED_BADLY))),
            )
            still_ended = deps.c.depends_on.in_(
                select(jobs.c.id).where(jobs.c.status.in_(_ENDED_BADLY))
            )
            other_blocker = (
                select(deps.c.depends_on)
                .where(
                    deps.c.job_id == child,
                    deps.c.depends_on != parent,
                    deps.c.resolved.in_(_ENDED_BADLY),
                    still_ended,
                )
                .exists()
            )
            blocked = conn.execute(
                select(jobs.c.on_dependency_failure == "cancel").where(
                    jobs.c.id == child, other_blocker
                )
            ).scalar_one_or_none()
            if blocked:
                continue
            conn.execute(update(deps).where(or_(edge, rerun)).values(resolved=None))
            open_edges = (
                select(func.count())
                .select_from(deps)
                .where(deps.c.job_id == child, deps.c.resolved.is_(None))
                .scalar_subquery()
            )
            n = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == child,
                    _guarded(Transition.REVIVE),
                    jobs.c.cancel_requested_at.is_(None),
                )
                .values(
                    status=S.WAITING.value,
                    deps_pending=open_edges,
                    finished_at=None,
                    updated_at=db_now(),
                )
            ).rowcount
            if n:
                revived += n
                frontier.append(child)
    return revived


def dependency_cancelled(conn: Connection, job_id: uuid.UUID) -> int:
    """How many jobs downstream of ``job_id`` a dependency cancelled (``job_id`` ending
    failed or cancelled, then each of them in turn): what a cancel reports."""
    e, d = deps.alias("e"), jobs.alias("d")
    down = (
        select(e.c.job_id.label("id"))
        .join(d, d.c.id == e.c.job_id)
        .where(
            e.c.depends_on == job_id,
            e.c.resolved.in_(_ENDED_BADLY),
            _by_key(and_(d.c.status == S.CANCELLED.value, d.c.cancel_requested_at.is_(None))),
        )
        .cte("down", recursive=True)
    )
    e2, d2 = deps.alias("e2"), jobs.alias("d2")
    down = down.union(
        select(e2.c.job_id)
        .join(d2, d2.c.id == e2.c.job_id)
        .join(down, e2.c.depends_on == down.c.id)
        .where(
            e2.c.resolved.in_(_ENDED_BADLY),
            _by_key(and_(d2.c.status == S.CANCELLED.value, d2.c.cancel_requested_at.is_(None))),
        )
    )
    return int(conn.execute(select(func.count()).select_from(down)).scalar_one())


def dependencies_of(conn: Connection, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The jobs ``job_id`` depends on: ``id``, ``type``, ``status``, and ``resolved`` (the
    status the edge was counted with, None while pending), in id order."""
    rows = conn.execute(
        select(deps.c.depends_on, jobs.c.type, jobs.c.status, deps.c.resolved)
        .select_from(deps.outerjoin(jobs, jobs.c.id == deps.c.depends_on))
        .where(deps.c.job_id == job_id)
        .order_by(deps.c.depends_on)
    )
    return [{"id": i, "type": t, "status": s, "resolved": r} for i, t, s, r in rows]


def dependents_of(conn: Connection, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The jobs that depend on ``job_id``: ``id``, ``type``, ``status``, ``resolved``."""
    rows = conn.execute(
        select(deps.c.job_id, jobs.c.type, jobs.c.status, deps.c.resolved)
        .select_from(deps.outerjoin(jobs, jobs.c.id == deps.c.job_id))
        .where(deps.c.depends_on == job_id)
        .order_by(deps.c.job_id)
    )
    return [{"id": i, "type": t, "status": s, "resolved": r} for i, t, s, r in rows]


def dependency_results(conn: Connection, job_id: uuid.UUID) -> dict[uuid.UUID, Any]:
    """``{dependency id: its result}`` for a job's handler (None for a dependency that did
    not complete)."""
    rows = conn.execute(
        select(deps.c.depends_on, jobs.c.result)
        .select_from(deps.join(jobs, jobs.c.id == deps.c.depends_on))
        .where(deps.c.job_id == job_id)
    )
    return {dep: result for dep, result in rows}
