"""SQL for ``queue_job_logs``: the lines handlers log, per job and attempt."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from db.models import JobLogLine

logs = JobLogLine.__table__


@dataclass(frozen=True)
class LogLine:
    job_id: uuid.UUID
    attempt: int
    at: datetime
    level: str
    message: str


def insert_lines(conn: Connection, lines: Sequence[LogLine]) -> None:
    """Store lines (one statement for all of them)."""
    if lines:
        conn.execute(
            insert(logs),
            [
                {
                    "job_id": line.job_id,
                    "attempt": line.attempt,
                    "at": line.at,
                    "level": line.level,
                    "message": line.message,
                }
                for line in lines
            ],
        )


def lines_of(
    conn: Connection,
    job_id: uuid.UUID,
    *,
    attempt: int | None = None,
    after: int = 0,
    contains: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The lines of a job in the order they were logged: those after line id ``after`` (to
    follow a running job), of one attempt, containing a text (case-insensitive)."""
    stmt = (
        select(logs.c.id, logs.c.attempt, logs.c.at, logs.c.level, logs.c.message)
        .where(logs.c.job_id == job_id, logs.c.id > after)
        .order_by(logs.c.id)
        .limit(limit)
    )
    if attempt is not None:
        stmt = stmt.where(logs.c.attempt == attempt)
    if contains:
        stmt = stmt.where(func.lower(logs.c.message).contains(contains.lower(), autoescape=True))
    return [dict(row._mapping) for row in conn.execute(stmt)]


def delete_of_jobs(conn: Connection, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete every line of these jobs (pruned with them)."""
    if not job_ids:
        return 0
    return int(conn.execute(delete(logs).where(logs.c.job_id.in_(list(job_ids)))).rowcount)
