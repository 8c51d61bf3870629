"""Console users without Streamlit: argon2id hashing, user creation, authentication, the role
as the database has it now. ``console.auth`` (the login UI) and ``queuectl user`` use it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine

from db import audit, users
from db.engine import read, write

FAST_ENV = "QUEUE_ARGON2_FAST"  # tests only: a cheap hasher so fixtures stay fast
MAX_USERNAME = 100
MAX_PASSWORD = 1024
#: refused logins of one username within ``LOGIN_LOCK`` after which its logins are refused
#: unchecked until the oldest of them is ``LOGIN_LOCK`` old (password guessing)
LOGIN_FAILURES_ALLOWED = 5
LOGIN_LOCK = timedelta(minutes=15)


class LoginThrottled(Exception):
    """Too many refused logins for this username lately; try again later."""

    def __init__(self, username: str) -> None:
        minutes = int(LOGIN_LOCK.total_seconds() // 60)
        super().__init__(
            f"Too many failed logins for {username!r}: try again in up to {minutes} minutes."
        )


@lru_cache(maxsize=2)
def _hasher(fast: bool) -> PasswordHasher:
    if fast:
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)


def password_hasher() -> PasswordHasher:
    return _hasher(os.environ.get(FAST_ENV) == "1")


@lru_cache(maxsize=2)
def _dummy_hash(fast: bool) -> str:
    """A hash of a random secret: unknown users are verified against it (same cost)."""
    return _hasher(fast).hash(os.urandom(16).hex())


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password may be at most {MAX_PASSWORD} characters")
    return password_hasher().hash(password)


def create_user(engine: Engine, username: str, password: str, role: str) -> None:
    """Add a console user (raises ``ValueError`` on bad input, ``IntegrityError`` if taken)."""
    username = username.strip()
    if not 1 <= len(username) <= MAX_USERNAME:
        raise ValueError(f"the username must have 1-{MAX_USERNAME} characters")
    if role not in users.ROLES:
        raise ValueError(f"role must be one of {', '.join(users.ROLES)}")
    password_hash = hash_password(password)
    with write(engine) as conn:
        users.create_user(conn, username, password_hash, role)


def authenticate(engine: Engine, username: str, password: str) -> dict[str, str] | None:
    """The user as ``{"name", "role"}`` if the password is right and the user is enabled.

    Unknown and disabled users cost one argon2 verification too, so the response time does
    not tell whether a name exists. Every refused login of a non-empty username is written
    to the audit log (action ``login``, outcome ``denied``); after
    ``LOGIN_FAILURES_ALLOWED`` of them within ``LOGIN_LOCK``, the username's logins raise
    ``LoginThrottled`` without checking the password, whether or not the user exists.
    """
    fast = os.environ.get(FAST_ENV) == "1"
    hasher = _hasher(fast)
    username = (username or "").strip()[:MAX_USERNAME]
    password = (password or "")[:MAX_PASSWORD]
    row = None
    if username:
        with read(engine) as conn:
            refused = audit.count_since(
                conn,
                username=username,
                action="login",
                outcome="denied",
                since=datetime.now(UTC) - LOGIN_LOCK,
            )
            if refused >= LOGIN_FAILURES_ALLOWED:
                raise LoginThrottled(username)
            row = users.get_user(conn, username)
    stored = row["password_hash"] if row is not None else _dummy_hash(fast)
    try:
        hasher.verify(stored, password)
        verified = True
    except (VerificationError, InvalidHashError):
        verified = False
    if row is None or not verified or row["disabled"] or not password:
        if username:
            with write(engine) as conn:
                audit.record(conn, username=username, role="-", action="login", outcome="denied")
        return None
    new_hash = hasher.hash(password) if hasher.check_needs_rehash(stored) else None
    with write(engine) as conn:
        users.record_login(conn, row["username"], new_hash)
    return {"name": row["username"], "role": row["role"]}


def db_role(engine: Engine, username: str) -> str | None:
    """The user's role as the database has it now (None if missing or disabled)."""
    with read(engine) as conn:
        row = users.get_user(conn, username)
    if row is None or row["disabled"]:
        return None
    return str(row["role"])
