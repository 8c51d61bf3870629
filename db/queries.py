"""Read queries over the ledger used by the job API, the CLI and the console."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import (
    Connection,
    Select,
    and_,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.exc import OperationalError

from db.driver import driver_for
from db.models import Job, Worker
from db.states import ALL_STATUSES, DELAYED, READY, TERMINAL, JobStatus, sorted_values
from db.types import db_now

jobs = Job.__table__
workers = Worker.__table__

JOB_COLUMNS = [c.name for c in jobs.columns]


def _as_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def get_job(conn: Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
    return None if row is None else _as_dict(row)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: the text form of a job id: ``str(uuid)``, lower-case hex digits in groups of 8-4-4-4-12
_ID_FORM = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_HEX = frozenset("0123456789abcdef")


def id_prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The job ids whose text form starts with ``text`` (in any case), as the inclusive range
    ``(lowest, highest)``; None when no job id can start with ``text``.

    PostgreSQL orders uuids byte by byte, which is the order of their hex text, so a prefix is
    one range of the primary key: no id is cast to text.
    """
    prefix = text.lower()
    if not prefix or len(prefix) > len(_ID_FORM):
        return None
    for char, slot in zip(prefix, _ID_FORM, strict=False):
        if (slot == "-") != (char == "-") or (slot == "x" and char not in _HEX):
            return None
    rest = _ID_FORM[len(prefix) :]
    return uuid.UUID(prefix + rest.replace("x", "0")), uuid.UUID(prefix + rest.replace("x", "f"))


def _search_match(conn: Connection, search: str) -> Any:
    """The condition of a search that is not a whole job id: text inside the payload (its JSON
    text, in any case) or, on PostgreSQL, the start of the job id."""
    driver = driver_for(conn)
    payload = driver.text_contains(jobs.c.data, f"%{_like_escape(search)}%")
    if not driver.id_prefix_search:
        return payload
    ids = id_prefix_range(search)
    return payload if ids is None else or_(jobs.c.id.between(*ids), payload)


def _filtered(
    conn: Connection,
    stmt: Select[Any],
    *,
    status: str | list[str] | None = None,
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
) -> Select[Any]:
    """``stmt`` restricted by the filters of :func:`get_jobs`."""
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        stmt = stmt.where(jobs.c.status.in_(statuses))
    if type:
        stmt = stmt.where(jobs.c.type == type)
    if queue:
        stmt = stmt.where(jobs.c.queue == queue)
    if since:
        stmt = stmt.where(jobs.c.created_at >= since)
    if until:
        stmt = stmt.where(jobs.c.created_at < until)
    if search:
        try:
            stmt = stmt.where(jobs.c.id == uuid.UUID(search.strip()))
        except ValueError:
            stmt = stmt.where(_search_match(conn, search))
    return stmt


def get_jobs(
    conn: Connection,
    *,
    status: str | list[str] | None = None,
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Jobs newest first. ``search`` matches a whole job id, the start of a job id
    (PostgreSQL) or text inside the payload (its JSON text, in any case). ``columns``: only
    these columns (a list that shows no payload need not read one); every column by default."""
    chosen = [jobs.c[name] for name in columns] if columns else [jobs]
    if driver_for(conn).limited_union_branches and not (type or queue or search):
        return _newest_per_status(conn, chosen, status, since, until, limit, offset)
    stmt = _filtered(
        conn,
        select(*chosen),
        status=status,
        type=type,
        queue=queue,
        since=since,
        until=until,
        search=search,
    )
    stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
    return [_as_dict(r) for r in conn.execute(stmt)]


def _newest_per_status(
    conn: Connection,
    chosen: list[Any],
    status: str | list[str] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    *where: Any,
) -> list[dict[str, Any]]:
    """The newest jobs (of the given statuses, created in ``[since, until)``) without sorting
    the table: no index starts with ``created_at``, so one ``ORDER BY created_at`` over every
    job sorts all of them (0.7 s at 3,000,000 jobs). Instead, each status's newest
    ``offset + limit`` rows are read backwards along the (status, created_at) index and the
    few results merged; the same rows in the same order as the plain statement."""
    statuses = [status] if isinstance(status, str) else list(status or ALL_STATUSES)
    branches = []
    for value in dict.fromkeys(statuses):
        branch = select(*chosen).where(jobs.c.status == value)
        if since:
            branch = branch.where(jobs.c.created_at >= since)
        if until:
            branch = branch.where(jobs.c.created_at < until)
        branch = branch.where(*where)
        branches.append(branch.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(offset + limit))
    merged = union_all(*branches).subquery("newest")
    stmt = (
        select(merged).order_by(merged.c.created_at.desc(), merged.c.id).limit(limit).offset(offset)
    )
    return [_as_dict(r) for r in conn.execute(stmt)]


#: how long a payload search on PostgreSQL may read before it answers with what it found
SEARCH_BUDGET_SECONDS = 0.6
#: the newest slice of creation time a budgeted search reads first; each next one is twice as long
_FIRST_SLICE = timedelta(hours=1)


@dataclass(frozen=True)
class SearchedJobs:
    """A page of a payload search. ``searched_since`` None: the page is exact (every job the
    filters admit was searched, or the page filled with the newest matches). Otherwise only
    jobs created at or after ``searched_since`` were searched before the budget ran out: older
    matches may exist."""

    rows: list[dict[str, Any]]
    searched_since: datetime | None


def search_jobs(
    conn: Connection,
    *,
    search: str,
    status: str | list[str] | None = None,
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
    columns: Sequence[str] | None = None,
    budget_seconds: float | None = SEARCH_BUDGET_SECONDS,
) -> SearchedJobs:
    """:func:`get_jobs` with a text ``search``, answered within ``budget_seconds`` on
    PostgreSQL: a substring of the payloads has no index, so the search reads the jobs newest
    first, one slice of creation time after another (1 h, then 2 h, 4 h, …; each slice read
    per status along the (status, created_at) index), and stops when the page is full, when
    every job was read, or when the budget is spent (a slice still running is cancelled by a
    statement timeout). ``budget_seconds`` None, SQLite, or a whole job id: one plain
    statement, always exact."""
    statuses = [status] if isinstance(status, str) else list(status or ALL_STATUSES)
    plain = budget_seconds is None or not driver_for(conn).statement_timeout or _is_job_id(search)
    if plain:
        rows = get_jobs(
            conn,
            status=status,
            type=type,
            queue=queue,
            since=since,
            until=until,
            search=search,
            limit=limit,
            offset=offset,
            columns=columns,
        )
        return SearchedJobs(rows, None)
    assert budget_seconds is not None
    deadline = time.monotonic() + budget_seconds
    chosen = [jobs.c[name] for name in columns] if columns else [jobs]
    where = [_search_match(conn, search)]
    if type:
        where.append(jobs.c.type == type)
    if queue:
        where.append(jobs.c.queue == queue)
    oldest = _oldest_created(conn, statuses)
    if oldest is None:
        return SearchedJobs([], None)
    floor = max(since, oldest) if since else oldest
    now = conn.execute(select(func.now())).scalar_one() + timedelta(seconds=1)
    high = min(until, now) if until else now
    need = offset + limit
    found: list[dict[str, Any]] = []
    width = _FIRST_SLICE
    while high >= floor:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return SearchedJobs(found[offset:need], high)
        low = max(floor, high - width)
        try:
            with _statement_timeout(conn, remaining):
                rows = _newest_per_status(
                    conn, chosen, statuses, low, high, need - len(found), 0, *where
                )
        except OperationalError as exc:
            if not _cancelled(exc):
                raise
            return SearchedJobs(found[offset:need], high)  # the budget ran out in the slice
        found.extend(rows)
        if len(found) >= need or low <= floor:
            return SearchedJobs(found[offset:need], None)
        high, width = low, width * 2
    return SearchedJobs(found[offset:need], None)


def _is_job_id(search: str) -> bool:
    try:
        uuid.UUID(search.strip())
    except ValueError:
        return False
    return True


def _oldest_created(conn: Connection, statuses: Sequence[str]) -> datetime | None:
    """The creation time of the oldest job in ``statuses``: one index probe per status."""
    branches = [
        select(func.min(jobs.c.created_at).label("at")).where(jobs.c.status == value)
        for value in dict.fromkeys(statuses)
    ]
    merged = union_all(*branches).subquery("oldest")
    oldest: datetime | None = conn.execute(select(func.min(merged.c.at))).scalar_one()
    return oldest


@contextmanager
def _statement_timeout(conn: Connection, seconds: float) -> Iterator[None]:
    """PostgreSQL's ``statement_timeout`` for the statements inside (a connection in
    autocommit), reset after: the pooled connection goes back without it."""
    ms = str(max(1, int(seconds * 1000)))
    conn.execute(select(func.set_config("statement_timeout", ms, False)))
    try:
        yield
    finally:
        conn.exec_driver_sql("RESET statement_timeout")


def _cancelled(exc: OperationalError) -> bool:
    """Whether ``exc`` is PostgreSQL cancelling a statement at its timeout."""
    return isinstance(exc.orig, psycopg.errors.QueryCanceled)


def job_ids(
    conn: Connection,
    *,
    status: str | list[str] | None = None,
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    limit: int = 10_000,
) -> list[uuid.UUID]:
    """The ids (and nothing else: no payloads) of the jobs :func:`get_jobs` would return with
    the same filters, newest first, at most ``limit``."""
    stmt = _filtered(
        conn,
        select(jobs.c.id),
        status=status,
        type=type,
        queue=queue,
        since=since,
        until=until,
        search=search,
    )
    stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    return list(conn.execute(stmt).scalars())


def job_statuses(conn: Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The status of each job of ``ids`` that exists (one indexed read, no payloads)."""
    found: dict[uuid.UUID, str] = {}
    for start in range(0, len(ids), 1_000):
        chunk = ids[start : start + 1_000]
        rows = conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(chunk)))
        found.update({job_id: status for job_id, status in rows})
    return found


def ids_in_range(
    conn: Connection, lowest: uuid.UUID, highest: uuid.UUID, limit: int = 2
) -> list[uuid.UUID]:
    """Job ids between ``lowest`` and ``highest`` (inclusive), in id order, at most ``limit``:
    a range of the primary key (:func:`id_prefix_range` turns an id prefix into one). Both
    databases order ids as their lower-case hex text (PostgreSQL's uuid byte order; SQLite
    stores the 32 hex digits), so a prefix is one range on both."""
    stmt = (
        select(jobs.c.id).where(jobs.c.id.between(lowest, highest)).order_by(jobs.c.id).limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def status_counts(conn: Connection, cap: int) -> dict[str, int]:
    """Jobs per status, each counted up to ``cap + 1`` (a result above ``cap`` means "more
    than ``cap``"). One statement of one bounded index range per status (the status/created
    index), so its cost does not grow with the table."""
    parts = [
        select(literal(s.value).label("status"), func.count().label("n")).select_from(
            select(literal(1).label("one"))
            .select_from(jobs)
            .where(jobs.c.status == s.value)
            .limit(cap + 1)
            .subquery(f"capped_{s.value}")
        )
        for s in JobStatus
    ]
    rows = conn.execute(union_all(*parts))
    counts = {s.value: 0 for s in JobStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


def status_estimates(conn: Connection) -> dict[str, int]:
    """PostgreSQL: the planner's estimate of the jobs per status (``pg_class.reltuples`` x the
    most-common-value frequencies of ``pg_stats``, kept by ANALYZE/autovacuum); empty on
    SQLite or before the table was analyzed. Free at any size; for counts too big to count."""
    return driver_for(conn).value_estimates(conn, jobs.name, jobs.c.status.name)


def running_job_refs(conn: Connection, limit: int = 5_000) -> list[dict[str, Any]]:
    """The running jobs as ``id``, ``type``, ``worker_id``, ``started_at`` (no payloads), oldest
    start first, at most ``limit``; read through the partial index of running jobs."""
    stmt = (
        select(jobs.c.id, jobs.c.type, jobs.c.worker_id, jobs.c.started_at)
        .where(jobs.c.status == JobStatus.RUNNING.value)
        .order_by(jobs.c.started_at, jobs.c.id)
        .limit(limit)
    )
    return [_as_dict(r) for r in conn.execute(stmt)]


def queue_stats(conn: Connection, stale_seconds: float) -> dict[str, dict[str, Any]]:
    """Per queue: counts by status, age in seconds of the oldest due waiting job, live workers."""
    stats: dict[str, dict[str, Any]] = {}

    def entry(queue: str) -> dict[str, Any]:
        return stats.setdefault(
            queue,
            {
                "counts": {s.value: 0 for s in JobStatus},
                "oldest_waiting_seconds": None,
                "live_workers": 0,
            },
        )

    rows = conn.execute(
        select(jobs.c.queue, jobs.c.status, func.count()).group_by(jobs.c.queue, jobs.c.status)
    )
    for queue, status, n in rows:
        entry(queue)["counts"][status] = int(n)
    oldest = conn.execute(
        select(jobs.c.queue, func.min(jobs.c.scheduled_at), db_now())
        .where(jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.DISPATCHED.value]))
        .group_by(jobs.c.queue)
    )
    for queue, first_due, now in oldest:
        if first_due is not None:
            due = first_due if isinstance(first_due, datetime) else None
            if due is not None:
                entry(queue)["oldest_waiting_seconds"] = max(0.0, (now - due).total_seconds())
    live = conn.execute(
        select(workers.c.queues).where(
            workers.c.status == "running", workers.c.last_heartbeat >= db_now(-stale_seconds)
        )
    )
    for (queues,) in live:
        for q in queues or []:
            entry(q)["live_workers"] += 1
    return stats


def list_workers(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(workers, db_now().label("now")).order_by(workers.c.started_at))
    return [_as_dict(r) for r in rows]


#: the statuses the Queues page counts per queue
QUEUE_PAGE_STATUSES = (
    JobStatus.QUEUED.value,
    JobStatus.DISPATCHED.value,
    JobStatus.RUNNING.value,
    JobStatus.SCHEDULED.value,
    JobStatus.RETRYING.value,
)


def queue_status_counts(
    conn: Connection, cap: int, statuses: Sequence[str] = QUEUE_PAGE_STATUSES
) -> dict[str, tuple[dict[str, int], bool]]:
    """Per status: jobs per queue, and whether those counts are exact.

    One statement reads at most ``cap + 1`` rows of each status (a bounded range of the status
    index: the partial index of queued jobs holds the queue, the others are few), so the cost
    does not grow with the table. When a status has more than ``cap`` jobs its per-queue counts
    are lower bounds (``exact`` False); :func:`queued_per_queue` then counts the queued jobs of
    each queue on their own (one bounded range of the queue-leading dispatch index each)."""
    parts = []
    for value in dict.fromkeys(statuses):
        JobStatus(value)  # only ever a status
        capped = (
            select(jobs.c.queue).where(jobs.c.status == value).limit(cap + 1).subquery(f"c_{value}")
        )
        parts.append(
            select(literal(value).label("status"), capped.c.queue, func.count().label("n"))
            .select_from(capped)
            .group_by(capped.c.queue)
        )
    out: dict[str, tuple[dict[str, int], bool]] = {s: ({}, True) for s in statuses}
    if not parts:
        return out
    per_status: dict[str, dict[str, int]] = {s: {} for s in statuses}
    for status, queue, n in conn.execute(union_all(*parts)):
        per_status[status][queue] = int(n)
    for status, by_queue in per_status.items():
        out[status] = (by_queue, sum(by_queue.values()) <= cap)
    return out


def queued_per_queue(conn: Connection, queues: Sequence[str], cap: int) -> dict[str, int]:
    """Queued jobs of each of ``queues``, each counted up to ``cap + 1`` along the partial
    index of queued jobs, which starts with the queue (``ix_queue_jobs_dispatch_order``)."""
    if not queues:
        return {}
    parts = [
        select(literal(name).label("queue"), func.count().label("n")).select_from(
            select(literal(1).label("one"))
            .select_from(jobs)
            .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.queue == name)
            .limit(cap + 1)
            .subquery(f"q_{i}")
        )
        for i, name in enumerate(dict.fromkeys(queues))
    ]
    return {queue: int(n) for queue, n in conn.execute(union_all(*parts))}


def live_job_with_key(conn: Connection, key: str) -> uuid.UUID | None:
    """The live (not finished) job holding idempotency key ``key``, if any (the unique partial
    index of live keys)."""
    stmt = select(jobs.c.id).where(
        jobs.c.idempotency_key == key, jobs.c.status.not_in(sorted_values(TERMINAL))
    )
    return conn.execute(stmt.limit(1)).scalar_one_or_none()


# --- state now: waiting jobs and live workers per queue (rollups, gauges, alerts) ---------


def current_depth(conn: Connection, now: datetime) -> dict[str, int]:
    """Jobs waiting per queue: queued or dispatched, or scheduled/retrying and due."""
    waiting = or_(
        jobs.c.status.in_(sorted_values(READY)),
        and_(jobs.c.status.in_(sorted_values(DELAYED)), jobs.c.scheduled_at <= now),
    )
    rows = conn.execute(select(jobs.c.queue, func.count()).where(waiting).group_by(jobs.c.queue))
    return {q: int(n) for q, n in rows}


def live_workers(
    conn: Connection, now: datetime, stale_seconds: float
) -> dict[str, tuple[int, int]]:
    """Per queue: (live workers, their slots). A worker on two queues counts in both."""
    rows = conn.execute(
        select(workers.c.queues, workers.c.concurrency).where(
            workers.c.status == "running",
            workers.c.last_heartbeat >= now - timedelta(seconds=stale_seconds),
        )
    )
    out: dict[str, tuple[int, int]] = {}
    for queues, concurrency in rows:
        for q in queues or []:
            count, slots = out.get(q, (0, 0))
            out[q] = (count + 1, slots + int(concurrency))
    return out
