"""SQL for ``console_sessions``: a console login that survives a browser reload.

The browser holds a random token in a cookie; the table holds only its SHA-256, the user and
the expiry. A session resumes while it has not expired and its user exists and is enabled;
each resume moves the expiry forward (an idle session ends after the lifetime). Logging out
deletes the row, so a copied cookie is useless afterwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from db.models import ConsoleSession, User

sessions = ConsoleSession.__table__
users = User.__table__


def create(
    conn: Connection, token_hash: str, username: str, now: datetime, lifetime: timedelta
) -> None:
    """Store a new session, and drop every expired one (sessions are few: one per browser)."""
    conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
    conn.execute(
        insert(sessions).values(
            token_hash=token_hash, username=username, created_at=now, expires_at=now + lifetime
        )
    )


def resume(
    conn: Connection, token_hash: str, now: datetime, lifetime: timedelta
) -> tuple[str, str] | None:
    """``(username, role)`` of a live session, its expiry moved to ``now + lifetime``; None
    when there is no such session, it expired, or its user is gone or disabled."""
    row = conn.execute(
        select(users.c.username, users.c.role)
        .select_from(sessions.join(users, users.c.username == sessions.c.username))
        .where(
            sessions.c.token_hash == token_hash,
            sessions.c.expires_at > now,
            users.c.disabled.is_(False),
        )
    ).first()
    if row is None:
        return None
    conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == token_hash)
        .values(expires_at=now + lifetime)
    )
    return row.username, row.role


def end(conn: Connection, token_hash: str) -> bool:
    """Log one browser out. True if it had a session."""
    return conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash)).rowcount == 1


def end_all_of(conn: Connection, username: str) -> int:
    """Log a user out everywhere (password change, disabled account)."""
    return conn.execute(delete(sessions).where(sessions.c.username == username)).rowcount
