"""SQL for ``console_sessions``: a console login that survives a browser reload.

The browser holds a random token in a cookie; the table holds only its SHA-256, the user and
the expiry. A session resumes while it has not expired and its user exists and is enabled;
each resume moves the expiry forward (an idle session ends after the lifetime). Logging out
deletes the row, so a copied cookie is useless afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class LiveSession:
    username: str
    role: str
    must_change_password: bool
    expires_at: datetime


def check(conn: Connection, token_hash: str, now: datetime) -> LiveSession | None:
    """The session if it is live: its row exists (not logged out, no password change or
    disable since), it has not expired, and its user exists and is enabled. One indexed
    read: every console run of a signed-in tab makes it."""
    row = conn.execute(
        select(users.c.username, users.c.role, users.c.must_change_password, sessions.c.expires_at)
        .select_from(sessions.join(users, users.c.username == sessions.c.username))
        .where(
            sessions.c.token_hash == token_hash,
            sessions.c.expires_at > now,
            users.c.disabled.is_(False),
        )
    ).first()
    if row is None:
        return None
    return LiveSession(row.username, row.role, bool(row.must_change_password), row.expires_at)


def extend(conn: Connection, token_hash: str, expires_at: datetime) -> None:
    """Move a session's expiry (it is used: the idle time starts again)."""
    conn.execute(
        update(sessions).where(sessions.c.token_hash == token_hash).values(expires_at=expires_at)
    )


def resume(
    conn: Connection, token_hash: str, now: datetime, lifetime: timedelta
) -> tuple[str, str] | None:
    """``(username, role)`` of a live session, its expiry moved to ``now + lifetime``; None
    when there is no such session, it expired, or its user is gone or disabled."""
    live = check(conn, token_hash, now)
    if live is None:
        return None
    extend(conn, token_hash, now + lifetime)
    return live.username, live.role


def end(conn: Connection, token_hash: str) -> bool:
    """Log one browser out. True if it had a session."""
    return conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash)).rowcount == 1


def end_all_of(conn: Connection, username: str) -> int:
    """Log a user out everywhere (password change, disabled account)."""
    return conn.execute(delete(sessions).where(sessions.c.username == username)).rowcount
