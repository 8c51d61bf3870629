"""Read queries over the ledger used by the job API, the CLI and the console."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Text, cast, func, or_, select

from db.models import Job, Worker
from db.states import JobStatus
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
    pattern = f"%{_like_escape(search)}%"
    if conn.dialect.name != "postgresql":
        return cast(jobs.c.data, String).like(pattern, escape="\\")  # SQLite: ASCII any case
    text_of_data = cast(jobs.c.data, Text)
    if search.isascii():
        # ASCII case folding (COLLATE "C"): ILIKE under the database's UTF-8 collation lowers
        # every row through the C library's wide characters, half the time of a search over
        # 1,000,000 jobs (docs/benchmarks.md, "Console first render"). The one difference:
        # non-ASCII letters that lower-case to ASCII (Kelvin sign, capital dotted I) no longer
        # match their ASCII look-alike.
        payload = func.lower(text_of_data.collate("C")).like(pattern.lower(), escape="\\")
    else:
        payload = text_of_data.ilike(pattern, escape="\\")
    ids = id_prefix_range(search)
    return payload if ids is None else or_(jobs.c.id.between(*ids), payload)


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
) -> list[dict[str, Any]]:
    """Jobs newest first. ``search`` matches a whole job id, the start of a job id
    (PostgreSQL) or text inside the payload (its JSON text, in any case)."""
    stmt = select(jobs)
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
    stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
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
