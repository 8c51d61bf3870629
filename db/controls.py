"""SQL for ``queue_controls``: pausing and resuming queues (survives every restart)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from db.driver import driver_for
from db.models import QueueControl
from db.types import db_now

controls = QueueControl.__table__


def set_paused(
    conn: Connection, queue: str, paused: bool, by: str | None, reason: str | None
) -> None:
    values = {
        "queue_name": queue,
        "paused": paused,
        "paused_at": db_now() if paused else None,
        "paused_by": by if paused else None,
        "reason": reason if paused else None,
        "updated_at": db_now(),
    }
    stmt = driver_for(conn).insert(controls).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[controls.c.queue_name],
        set_={k: stmt.excluded[k] for k in values if k != "queue_name"},
    )
    conn.execute(stmt)


def paused_queues(conn: Connection) -> set[str]:
    rows = conn.execute(select(controls.c.queue_name).where(controls.c.paused.is_(True)))
    return set(rows.scalars())


def list_controls(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(controls).order_by(controls.c.queue_name))
    return [dict(r._mapping) for r in rows]
