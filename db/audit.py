"""SQL for the ``audit_log`` table: one row per console admin action (or denied attempt)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, String, cast, func, insert, select, update

from db.models import AuditEntry

audit_log = AuditEntry.__table__

OUTCOMES = ("ok", "error", "denied")


def record(
    conn: Connection,
    *,
    username: str,
    role: str,
    action: str,
    outcome: str,
    target: str | None = None,
    job_ids: Iterable[Any] = (),
    details: dict[str, Any] | None = None,
    error: str | None = None,
    at: datetime | None = None,
) -> int:
    """Append one audit entry; returns its id."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    result = conn.execute(
        insert(audit_log)
        .values(
            at=at or datetime.now(UTC),
            username=username[:100],
            role=role[:20],
            action=action[:50],
            target=None if target is None else str(target)[:300],
            job_ids=[str(j) for j in job_ids],
            details=details or {},
            outcome=outcome,
            error=error,
        )
        .returning(audit_log.c.id)
    )
    return int(result.scalar_one())


def entries(
    conn: Connection,
    *,
    username: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    job_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Audit entries matching every given filter, newest first."""
    stmt = select(audit_log)
    if username:
        stmt = stmt.where(audit_log.c.username == username)
    if action:
        stmt = stmt.where(audit_log.c.action == action)
    if outcome:
        stmt = stmt.where(audit_log.c.outcome == outcome)
    if since is not None:
        stmt = stmt.where(audit_log.c.at >= since)
    if until is not None:
        stmt = stmt.where(audit_log.c.at < until)
    if job_id:
        # job_ids is a JSON array of id strings; a LIKE on its text works on both databases
        needle = job_id.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(cast(audit_log.c.job_ids, String).like(f'%"{needle}"%', escape="\\"))
    stmt = stmt.order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit).offset(offset)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def count_since(
    conn: Connection, *, username: str, action: str, outcome: str, since: datetime
) -> int:
    """How many entries of ``username`` with this action and outcome are newer than ``since``."""
    stmt = select(func.count()).where(
        audit_log.c.username == username[:100],
        audit_log.c.action == action,
        audit_log.c.outcome == outcome,
        audit_log.c.at >= since,
    )
    return int(conn.execute(stmt).scalar_one())


def get(conn: Connection, entry_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(audit_log).where(audit_log.c.id == entry_id)).first()
    return None if row is None else dict(row._mapping)


def set_details(conn: Connection, entry_id: int, details: dict[str, Any]) -> None:
    """Replace an entry's details (a rate-limited entry counts the events it stands for)."""
    conn.execute(update(audit_log).where(audit_log.c.id == entry_id).values(details=details))


def distinct_values(conn: Connection, column: str) -> list[str]:
    """The distinct usernames or actions seen in the log (for filter drop-downs)."""
    if column not in ("username", "action"):
        raise ValueError("column must be username or action")
    col = audit_log.c[column]
    return [r[0] for r in conn.execute(select(col).distinct().order_by(col).limit(500))]
