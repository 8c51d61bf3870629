"""SQL for the ``queue_workers`` table: registration, heartbeats, shutdown."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, case, insert, update

from db.models import Worker
from db.types import db_now

workers = Worker.__table__


def register(
    conn: Connection,
    *,
    worker_id: uuid.UUID,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    worker_kind: str,
) -> None:
    conn.execute(
        insert(workers).values(
            id=worker_id,
            name=name,
            status="running",
            started_at=db_now(),
            last_heartbeat=db_now(),
            hostname=hostname,
            pid=pid,
            queues=queues,
            concurrency=concurrency,
            worker_kind=worker_kind,
            jobs_processed=0,
            jobs_failed=0,
        )
    )


def heartbeat(conn: Connection, worker_id: uuid.UUID, processed: int, failed: int) -> bool:
    """Refresh the heartbeat; False if the row is gone (the caller registers again).

    A worker that was marked stopped after a long stall comes back to ``running``: its old
    attempts were rescued meanwhile and its late writes are fenced off by attempt number.
    """
    stmt = (
        update(workers)
        .where(workers.c.id == worker_id)
        .values(
            last_heartbeat=db_now(),
            jobs_processed=processed,
            jobs_failed=failed,
            status=case((workers.c.status == "stopping", "stopping"), else_="running"),
            stopped_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def set_status(conn: Connection, worker_id: uuid.UUID, status: str) -> None:
    values: dict[str, Any] = {"status": status, "last_heartbeat": db_now()}
    if status == "stopped":
        values["stopped_at"] = db_now()
    conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))


def mark_dead(conn: Connection, stale_seconds: float) -> int:
    """Workers whose heartbeat is long stale are marked stopped (kept for history)."""
    stmt = (
        update(workers)
        .where(workers.c.status != "stopped", workers.c.last_heartbeat < db_now(-stale_seconds))
        .values(status="stopped", stopped_at=db_now())
    )
    return conn.execute(stmt).rowcount
