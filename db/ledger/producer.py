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

from db.driver import Driver, driver_for
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
    def keyless(self) -> bool:
        """No idempotency, tick or unique key to resolve before it is written and no
        dependencies: nothing to answer but its own id, so single submits of such jobs are
        group-committed (``insert_batch_dbapi``)."""
        keys = self.idempotency_key or self.tick_key or self.unique_key
        return not keys and not self.depends_on

    @property
    def due_without_keys(self) -> bool:
        """Keyless, due now and without a partition (the dispatcher's fair pass decides when
        a partitioned job starts): such a job may be sent on insert (direct dispatch,
        ``insert_batch_dbapi`` with a window)."""
        return self.keyless and self.scheduled_at is None and self.partition_key is None


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
    """The insert of new jobs where the driver has no arrays (SQLite; executed once per row
    by SQLAlchemy's executemany): what ``_insert_pg`` writes for jobs that are not sent on
    insert. Also the base of the workflow insert (``_graph_insert_statement``)."""
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


def insert_jobs(conn: Connection, new_jobs: Sequence[NewJob]) -> list[uuid.UUID]:
    """Insert jobs (``queued`` when due, else ``scheduled``) in the caller's transaction.
    Returns one id per input, in input order.

    A job whose ``idempotency_key`` matches a live (non-terminal) job is not inserted: the
    live job's id is returned in its place. A periodic tick already present is skipped the
    same way. Jobs without such keys cannot conflict (their ids are fresh UUIDs; a row with
    the id already there is this insert retried after a lost reply). Many of them go in with
    COPY where the database has it (``_copy_plain``); everything else is the one insert
    statement, ``_insert_pg`` (on SQLite its portable form, ``_insert_statement``).
    """
    if not new_jobs:
        return []
    driver = driver_for(conn)
    keyed: list[NewJob] = []
    plain: list[NewJob] = []  # no key that can conflict with another job
    for j in new_jobs:
        (keyed if j.idempotency_key or j.tick_key else plain).append(j)
    rest: Sequence[NewJob] = new_jobs
    if driver.supports_copy and len(plain) >= COPY_FROM:
        _copy_plain(conn, plain)
        rest = keyed
    inserted = _insert_rows(conn, driver, rest) if rest else set()
    if all(j.id in inserted for j in keyed):
        return [j.id for j in new_jobs]
    return _resolve_conflicts(conn, new_jobs, inserted | {j.id for j in plain})


#: from this many jobs without keys on, ``insert_jobs`` sends them with COPY (``_copy_plain``)
#: rather than the insert statement: the two are even at 20 jobs, COPY is 1.2 times as fast at
#: 100, 1.5 at 1,000 and 1.8 at 10,000 (docs/benchmarks.md, "Eleventh session")
COPY_FROM = 20


def _insert_rows(conn: Connection, driver: Driver, new_jobs: Sequence[NewJob]) -> set[uuid.UUID]:
    """The one insert statement for ``new_jobs``; the ids of the rows it wrote (on
    PostgreSQL, without keys among them, every id: nothing to tell apart, so no RETURNING)."""
    if driver.array_sql:
        keyed = not all(j.keyless for j in new_jobs)
        stmt, params = _run_insert(new_jobs, 0, keyed=keyed)
        result = stmt.execute(conn, params)
        return {row[0] for row in result} if keyed else {j.id for j in new_jobs}
    portable = _insert_statement(driver).on_conflict_do_nothing().returning(jobs.c.id)
    rows = [_params(j) for j in new_jobs]
    result = conn.execute(portable, rows[0]) if len(rows) == 1 else conn.execute(portable, rows)
    return set(result.scalars())


def insert_batch_dbapi(
    dbapi_conn: Any, dialect: Any, new_jobs: Sequence[NewJob], window: int = 0
) -> dict[uuid.UUID, int]:
    """PostgreSQL, on a psycopg connection in autocommit (``db.engine.driver_write``): the
    group commit of single submits. Inserts jobs without idempotency, tick or unique keys
    (those go through :func:`insert_jobs`, which answers their conflicts) with
    ``_insert_pg``, as one statement and one commit.

    With ``window`` > 0 (direct dispatch; due jobs without keys only) a job of an idle queue
    goes in already ``dispatched`` under lease 1 while the queue's window has room. Returns
    the lease of each job inserted ``dispatched``: the caller pushes their messages (a push
    that never happens is repaired by ``requeue_lost``, as for the dispatcher's). The others
    went in ``queued``/``scheduled`` (their NOTIFY wakes the dispatcher), or were there
    already (a retried insert whose first reply was lost).
    """
    for new in new_jobs:
        if not new.keyless:
            raise ValueError("a job with keys or dependencies goes through insert_jobs")
        if window and not new.due_without_keys:
            raise ValueError("only due jobs without keys can be dispatched on insert")
    stmt, params = _run_insert(new_jobs, window)
    if not window:
        stmt.execute_dbapi(dbapi_conn, dialect, params)
        return {}
    rows = stmt.fetch_all_dbapi(dbapi_conn, dialect, params)
    return {job_id: lease for job_id, lease in rows if lease}


_WINDOW = bindparam("window", 0, type_=Integer())


def _const(value: Any) -> Any:
    """A constant rendered into the statement's text (not a parameter sent per call)."""
    return literal(value, literal_execute=True)


def _jobs_of_queue(status: JobStatus, queue: Any) -> Any:
    """The jobs of ``queue`` in ``status`` (inline, not a parameter, so a generic plan can
    use the partial index of that status)."""
    return select(jobs.c.id).where(jobs.c.queue == queue, jobs.c.status == _const(status.value))


#: what an insert binds per job: ``NewJob``'s fields, in this order (``_values``), named after
#: the columns they fill, with their types
_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", postgresql.UUID(as_uuid=True)),
    ("type", Text()),
    ("queue", Text()),
    ("priority", Integer()),
    ("data", Text()),
    ("max_attempts", Integer()),
    ("timeout_seconds", Float()),
    ("scheduled_at", postgresql.TIMESTAMP(timezone=True)),
    ("partition_key", Text()),
    ("idempotency_key", Text()),
    ("tick_key", Text()),
    ("unique_key", Text()),
)
#: the keyless statement binds the fields before the keys (the keys stay NULL)
_KEYLESS_FIELDS = _FIELDS[:9]


def _values(j: NewJob) -> tuple[Any, ...]:
    return (
        j.id,
        j.type,
        j.queue,
        j.priority,
        j.data_text,
        j.max_attempts,
        j.timeout_seconds,
        j.scheduled_at,
        j.partition_key,
        j.idempotency_key,
        j.tick_key,
        j.unique_key,
    )


def _one_row(fields: Sequence[tuple[str, Any]]) -> Any:
    """One new job as a row of scalar parameters (the first of its queue: rank 1)."""
    return select(
        *(cast(bindparam(name, None, type_=kind), kind).label(name) for name, kind in fields),
        _const(1).label("ord"),
        _const(1).label("rank"),
    ).subquery("new")


def _array_rows(fields: Sequence[tuple[str, Any]]) -> Any:
    """Many new jobs as rows: ``fields`` in parallel arrays, in input order."""
    return (
        func.unnest(*(bindparam(name, [], type_=postgresql.ARRAY(kind)) for name, kind in fields))
        .table_valued(*(name for name, _ in fields), with_ordinality="ord")
        .render_derived(name="batch")
    )


def _ranked(rows: Any) -> Any:
    """Array rows with each one's place among the rows of its queue (1, 2, ...), for the
    window of direct dispatch."""
    rank = func.row_number().over(partition_by=rows.c.queue, order_by=rows.c.ord)
    return select(rows, rank.label("rank")).subquery("new")


def _direct(rows: Any) -> Any:
    """Direct dispatch, per row of ``rows``: whether its queue's jobs may be sent on insert
    (no ``queued`` job waits there, so nothing it would overtake is left in the ledger, and
    the queue is not paused) and how many of the queue's jobs are ``dispatched`` already
    (counted up to ``:window``). Probes by index, with LIMIT so that PostgreSQL does not turn
    them into a scan of every queued job (it hashed a NOT EXISTS here)."""
    queued = _jobs_of_queue(S.QUEUED, rows.c.queue).correlate(rows).limit(1)
    sent = _jobs_of_queue(S.DISPATCHED, rows.c.queue).correlate(rows).limit(_WINDOW)
    return select(
        and_(
            queued.scalar_subquery().is_(None),
            queue_not_paused(rows.c.queue, rows),
        ).label("ok"),
        select(func.count()).select_from(sent.subquery("sent")).scalar_subquery().label("sent"),
    ).lateral("direct")


def _direct_one() -> Any:
    """:func:`_direct` for one job, on its ``:queue`` parameter, evaluated once (a
    materialized CTE: 7 % faster than the lateral probe of a one-row insert, measured)."""
    queue = bindparam("queue", None, type_=Text())
    queued = _jobs_of_queue(S.QUEUED, queue).limit(1)
    sent = _jobs_of_queue(S.DISPATCHED, queue).limit(_WINDOW)
    return (
        select(
            and_(~queued.exists(), queue_not_paused(queue)).label("ok"),
            select(func.count()).select_from(sent.subquery("sent")).scalar_subquery().label("sent"),
        )
        .cte("direct")
        .prefix_with("MATERIALIZED")
    )


def _insert_pg(*, keyed: bool, many: bool, sends: bool = False) -> HotStatement:
    """THE insert of new jobs on PostgreSQL, as a prepared statement: ``queued`` when due,
    ``scheduled`` when later. ON CONFLICT DO NOTHING: a retried insert (lost reply) is
    harmless, and a job whose idempotency or tick key is taken is not written.

    ``keyed``: the keyed statement also binds the idempotency, tick and unique keys, and
    RETURNING names the rows written (the caller answers a taken key with the live job); the
    keyless one leaves them NULL and returns nothing. ``many``: the jobs come as one array
    per field (``unnest``), else as scalar parameters. ``sends`` (keyless; direct dispatch):
    a job goes in ``dispatched`` (attempt 1, lease 1) when its queue may take it now and its
    window of ``:window`` has room, the earlier jobs of the same queue in this insert counted
    (the statement trigger sends no NOTIFY for a dispatched row: its producer pushes the
    message itself, ``tasks.transport.direct_dispatch``), and RETURNING gives the leases.

    The six forms are one statement: the direct-dispatch check costs a one-row insert 10 %
    when it is not needed, arrays cost it 20 % more than scalar parameters, and RETURNING
    and the key columns a batch of five 5 % and 1.5 % (docs/benchmarks.md, "Eleventh
    session")."""
    fields = _FIELDS if keyed else _KEYLESS_FIELDS
    rows = (
        _one_row(fields)
        if not many
        else _ranked(_array_rows(fields))
        if sends
        else _array_rows(fields)
    )
    bound = [name for name, _ in fields if name != "scheduled_at"]
    source = rows
    status = case(
        (rows.c.scheduled_at > db_now(), _const(S.SCHEDULED.value)),
        else_=_const(S.QUEUED.value),
    )
    taken: Any = _const(0)
    dispatched_at: Any = null()
    if sends:
        direct = _direct(rows) if many else _direct_one()
        source = rows.join(direct, true())
        sent = and_(direct.c.ok, direct.c.sent + rows.c.rank <= _WINDOW)
        status = case((sent, _const(S.DISPATCHED.value)), else_=status)
        taken = case((sent, _const(1)), else_=_const(0))
        dispatched_at = case((sent, db_now()), else_=null())
    insert = (
        postgresql.insert(jobs)
        .from_select(
            [
                *bound,
                "status",
                "scheduled_at",
                "attempt",
                "lease",
                "errors",
                "created_at",
                "updated_at",
                "dispatched_at",
            ],
            select(
                *(
                    cast(rows.c.data, postgresql.JSONB()) if name == "data" else rows.c[name]
                    for name in bound
                ),
                status,
                func.coalesce(rows.c.scheduled_at, db_now()),
                taken,
                taken,
                cast(_const("[]"), postgresql.JSONB()),
                db_now(),
                db_now(),
                dispatched_at,
            )
            .select_from(source)
            .order_by(rows.c.ord),
        )
        .on_conflict_do_nothing()
    )
    if keyed or sends:
        return HotStatement(insert.returning(jobs.c.id, jobs.c.lease))
    return HotStatement(insert)


#: the forms, by (keyed, many jobs, sent on insert)
_FORMS = {
    (keyed, many, sends): _insert_pg(keyed=keyed, many=many, sends=sends)
    for keyed in (False, True)
    for many in (False, True)
    for sends in (False, True)
    if not (keyed and sends)
}


def _run_insert(
    new_jobs: Sequence[NewJob], window: int, *, keyed: bool = False
) -> tuple[HotStatement, dict[str, Any]]:
    """The form of the insert for ``new_jobs`` and its parameters."""
    many = len(new_jobs) > 1
    width = len(_FIELDS if keyed else _KEYLESS_FIELDS)
    names = [name for name, _ in _FIELDS[:width]]
    params: dict[str, Any]
    if many:
        columns = zip(*(_values(j)[:width] for j in new_jobs), strict=True)
        params = {name: list(column) for name, column in zip(names, columns, strict=True)}
    else:
        params = dict(zip(names, _values(new_jobs[0])[:width], strict=True))
    if window:
        params["window"] = window
    return _FORMS[(keyed, many, bool(window))], params


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
