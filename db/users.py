"""SQL for the console's ``users`` table (hashing lives in ``console.auth``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from db.models import User

users = User.__table__

ROLES = ("admin", "analyst")


def get_user(conn: Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    return None if row is None else dict(row._mapping)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(users).order_by(users.c.username))
    return [dict(r._mapping) for r in rows]


def count_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def create_user(
    conn: Connection,
    username: str,
    password_hash: str,
    role: str,
    *,
    must_change_password: bool = False,
) -> int:
    """Insert a user; raises ``IntegrityError`` if the name is taken. With
    ``must_change_password`` the console asks for a new password at the first login."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    result = conn.execute(
        insert(users)
        .values(
            username=username,
            password_hash=password_hash,
            role=role,
            disabled=False,
            created_at=datetime.now(UTC),
            last_login_at=None,
            must_change_password=must_change_password,
        )
        .returning(users.c.id)
    )
    return int(result.scalar_one())


def record_login(conn: Connection, username: str, new_hash: str | None = None) -> None:
    """Stamp ``last_login_at``; store ``new_hash`` when the hash was upgraded."""
    values: dict[str, Any] = {"last_login_at": datetime.now(UTC)}
    if new_hash is not None:
        values["password_hash"] = new_hash
    conn.execute(update(users).where(users.c.username == username).values(**values))


def set_disabled(conn: Connection, username: str, disabled: bool) -> bool:
    result = conn.execute(
        update(users).where(users.c.username == username).values(disabled=disabled)
    )
    return result.rowcount == 1


def set_password_hash(
    conn: Connection, username: str, password_hash: str, *, must_change_password: bool = False
) -> bool:
    result = conn.execute(
        update(users)
        .where(users.c.username == username)
        .values(password_hash=password_hash, must_change_password=must_change_password)
    )
    return result.rowcount == 1


def set_role(conn: Connection, username: str, role: str) -> bool:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    result = conn.execute(update(users).where(users.c.username == username).values(role=role))
    return result.rowcount == 1
