"""SQL for ``queue_maintainers``: each maintainer process's heartbeat, and who is alive."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from db.models import MaintainerProcess
from db.types import db_now

maintainers = MaintainerProcess.__table__

#: a row silent (or stopped) for this long is deleted by any maintainer's heartbeat
FORGET_AFTER_SECONDS = 24 * 3600


def heartbeat(conn: Connection, maintainer_id: uuid.UUID, hostname: str, pid: int) -> None:
    """Refresh ``maintainer_id``'s heartbeat (its row is written on the first beat, and again
    if it was deleted meanwhile), and forget maintainers silent for a day."""
    refreshed = conn.execute(
        update(maintainers)
        .where(maintainers.c.id == maintainer_id)
        .values(last_heartbeat=db_now(), stopped_at=None)
    ).rowcount
    if not refreshed:
        conn.execute(
            insert(maintainers).values(
                id=maintainer_id,
                hostname=hostname[:255],
                pid=pid,
                started_at=db_now(),
                last_heartbeat=db_now(),
            )
        )
    conn.execute(
        delete(maintainers).where(
            or_(
                maintainers.c.last_heartbeat < db_now(-FORGET_AFTER_SECONDS),
                maintainers.c.stopped_at < db_now(-FORGET_AFTER_SECONDS),
            )
        )
    )


def stopped(conn: Connection, maintainer_id: uuid.UUID) -> None:
    """A maintainer that stops cleanly says so (the console then does not wait for its
    heartbeat to go stale)."""
    conn.execute(
        update(maintainers).where(maintainers.c.id == maintainer_id).values(stopped_at=db_now())
    )


def newest(conn: Connection, stale_seconds: float) -> dict[str, Any]:
    """``live``: maintainers not stopped whose heartbeat is younger than ``stale_seconds``;
    ``last_seen``: the newest heartbeat of any maintainer (None: none ever ran here)."""
    live = func.count().filter(
        maintainers.c.stopped_at.is_(None),
        maintainers.c.last_heartbeat >= db_now(-stale_seconds),
    )
    row = conn.execute(select(live, func.max(maintainers.c.last_heartbeat))).one()
    last: datetime | None = row[1]
    return {"live": int(row[0] or 0), "last_seen": last}
