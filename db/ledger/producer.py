"""Inserting jobs: what the job API, the periodic enqueuer and bulk submits write. One job
or many, due or scheduled, with or without an idempotency/tick/unique key, dispatched on insert
when the queue is idle (direct dispatch), and workflow graphs with their edges.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Row,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql

from db.driver import Driver, driver_for, driver_named
from db.engine import psycopg_connection
from db.ledger.core import NON_TERMINAL, HotStatement, S, deps, insert_for, jobs, queue_not_paused
from db.ledger.dependencies import UnknownDependencies, dependency_error
from db.states import TERMINAL, JobStatus
from db.types import JSONType, UTCDateTime, db_now


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


def _insert_statement(driver: Driver) -> Any:
    sched = bindparam("b_scheduled_at", type_=UTCDateTime())
    return insert_for(driver).values(
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
_INSERT_ONE_PG = HotStatement(
    _insert_statement(driver_named("postgresql")).on_conflict_do_nothing(), expanding=False
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
    driver = driver_for(conn)
    if len(plain) > 1 and driver.supports_copy:
        _copy_plain(conn, plain)
    elif len(plain) > 1:
        conn.execute(_insert_statement(driver), [_params(j) for j in plain])
    elif plain and keyed:
        conn.execute(_insert_statement(driver), _params(plain[0]))
    elif plain and driver.prepared_hot_path:  # one job, the common case: hot path
        _INSERT_ONE_PG.execute(conn, _params(plain[0]))
    elif plain:  # one job: ON CONFLICT makes a retried insert (lost reply) harmless
        stmt = _insert_statement(driver).on_conflict_do_nothing()
        conn.execute(stmt, _params(plain[0]))
    if not keyed:
        return [j.id for j in new_jobs]
    stmt = _insert_statement(driver).on_conflict_do_nothing().returning(jobs.c.id)
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
            queue_not_paused(_B_QUEUE),
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
#: dispatched row: the producer pushes its message itself (``tasks.transport.direct_dispatch``).
_INSERT_DISPATCHED_PG = HotStatement(
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
_INSERT_BATCH_PG = HotStatement(
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
        queue_not_paused(_BATCH_RANKED.c.queue, _BATCH_RANKED),
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
_INSERT_BATCH_DISPATCHED_PG = HotStatement(
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
    cursor = psycopg_connection(conn.connection).cursor()  # the same transaction
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
                jobs.c.idempotency_key.in_(keys), NON_TERMINAL
            )
        )
        by_key.update({row.idempotency_key: row for row in rows})
    by_tick: dict[str, uuid.UUID] = {}
    if ticks:
        tick_rows = conn.execute(
            select(jobs.c.tick_key, jobs.c.id).where(jobs.c.tick_key.in_(ticks))
        )
        by_tick.update({k: i for k, i in tick_rows})
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
    job_id: uuid.UUID = live.id
    return job_id


def _graph_insert_statement(driver: Driver) -> Any:
    """One job of a workflow insert: the plain insert's columns plus an explicit state
    (``waiting``/``cancelled`` when given, else ``queued``/``scheduled`` by its time)."""
    sched = bindparam("b_scheduled_at", type_=UTCDateTime())
    state = bindparam("b_state", type_=jobs.c.status.type)
    ended = state == literal(S.CANCELLED.value)
    return insert_for(driver).values(
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
    driver = driver_for(conn)
    stmt = _graph_insert_statement(driver)
    conn.execute(stmt, params[0]) if len(params) == 1 else conn.execute(stmt, params)
    if edges:
        conn.execute(_insert_edges(driver), edges)
    return [j.id for j in new_jobs]


def _insert_edges(driver: Driver) -> Any:
    return driver.insert(deps).values(
        job_id=bindparam("job_id", type_=deps.c.job_id.type),
        depends_on=bindparam("depends_on", type_=deps.c.depends_on.type),
        resolved=bindparam("resolved", type_=deps.c.resolved.type),
    )
