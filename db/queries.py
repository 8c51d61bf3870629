"""Read queries over the ledger used by the job API, the CLI and the console."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, cast, func, or_, select

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
    """Jobs newest first. ``search`` matches a job id or text inside the payload."""
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
            pattern = f"%{_like_escape(search)}%"
            text_of_data = cast(jobs.c.data, String)
            if conn.dialect.name == "postgresql":
                match = or_(
                    text_of_data.ilike(pattern, escape="\\"),
                    cast(jobs.c.id, String).like(f"{_like_escape(search)}%", escape="\\"),
                )
            else:
                match = text_of_data.like(pattern, escape="\\")
            stmt = stmt.where(match)
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
