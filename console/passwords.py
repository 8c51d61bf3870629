"""Console users without Streamlit: argon2id hashing, user creation, authentication, the role
as the database has it now. ``console.auth`` (the login UI) and ``queuectl user`` use it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine

from console import argon2_slots, login_throttle, password_policy
from console.argon2_slots import LoginBusy
from console.login_throttle import LoginRefused, LoginThrottled
from db import console_sessions, users
from db.engine import read, transaction, write

__all__ = [
    "Account",
    "LoginBusy",
    "LoginRefused",
    "LoginThrottled",
    "WrongPassword",
    "account",
    "authenticate",
    "change_password",
    "create_user",
    "db_role",
    "hash_password",
]

FAST_ENV = "QUEUE_ARGON2_FAST"  # tests only: a cheap hasher so fixtures stay fast
MAX_USERNAME = 100
MAX_PASSWORD = 1024
LOCAL_CLIENT = "local"  # the client address of a login with none (loopback, tests, the CLI)


class WrongPassword(ValueError):
    """The current password given to change it is not the user's."""


@dataclass(frozen=True)
class Account:
    """A console user as the database has it now."""

    role: str
    must_change_password: bool


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


def hash_password(password: str, username: str = "") -> str:
    """The argon2id hash of a password that meets the policy (``console.password_policy``);
    raises ``ValueError`` (``WeakPassword``) otherwise."""
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password may be at most {MAX_PASSWORD} characters")
    password_policy.check(password, username)
    with argon2_slots.slots().slot():
        return password_hasher().hash(password)


def create_user(
    engine: Engine, username: str, password: str, role: str, *, must_change_password: bool = False
) -> None:
    """Add a console user (raises ``ValueError`` on bad input or a weak password,
    ``IntegrityError`` if the name is taken)."""
    username = username.strip()
    if not 1 <= len(username) <= MAX_USERNAME:
        raise ValueError(f"the username must have 1-{MAX_USERNAME} characters")
    if role not in users.ROLES:
        raise ValueError(f"role must be one of {', '.join(users.ROLES)}")
    password_hash = hash_password(password, username)
    with write(engine) as conn:
        users.create_user(
            conn, username, password_hash, role, must_change_password=must_change_password
        )


def _verify(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return bool(hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def authenticate(
    engine: Engine,
    username: str,
    password: str,
    *,
    client: str = LOCAL_CLIENT,
    now: datetime | None = None,
) -> dict[str, str] | None:
    """The user as ``{"name", "role"}`` if the password is right and the user is enabled.

    The attempt is reserved first (``console.login_throttle``): while this client, this user
    or this pair has to wait, ``LoginThrottled`` is raised and nothing is verified. The check
    then takes one of the process's argon2 slots (``console.argon2_slots``), or raises
    ``LoginBusy`` (the attempt is given back). Unknown and disabled users cost one argon2
    verification too, so the response time does not tell whether a name exists. A refused
    login of a non-empty username is audited (at most one entry per user, client and minute,
    counting them).
    """
    fast = os.environ.get(FAST_ENV) == "1"
    hasher = _hasher(fast)
    username = (username or "").strip()[:MAX_USERNAME]
    password = (password or "")[:MAX_PASSWORD]
    client = (client or LOCAL_CLIENT)[:MAX_USERNAME]
    reservation = login_throttle.reserve(engine, username, client, now)
    row = None
    if username:
        with read(engine) as conn:
            row = users.get_user(conn, username)
    try:
        with argon2_slots.slots().slot():
            stored = row["password_hash"] if row is not None else _dummy_hash(fast)
            verified = _verify(hasher, stored, password)
    except LoginBusy:
        login_throttle.unchecked(engine, reservation)
        raise
    if row is None or not verified or row["disabled"] or not password:
        if username:
            login_throttle.refused(engine, username, client, now=now)
        return None
    new_hash = None
    if hasher.check_needs_rehash(stored):
        try:
            with argon2_slots.slots().slot():
                new_hash = hasher.hash(password)
        except LoginBusy:  # upgraded at a later login
            new_hash = None
    with write(engine) as conn:
        users.record_login(conn, row["username"], new_hash)
    login_throttle.succeeded(engine, reservation, now)
    return {"name": row["username"], "role": row["role"]}


def change_password(
    engine: Engine, username: str, current: str, new: str, *, client: str = LOCAL_CLIENT
) -> int:
    """Set a user's own password after checking the current one (throttled like a login).

    Raises ``WrongPassword``, ``WeakPassword`` (a ``ValueError``) or ``LoginRefused``. Clears
    ``must_change_password`` and ends every stored session of the user; returns how many.
    """
    if new == current:
        raise password_policy.WeakPassword("choose a password other than the current one")
    password_policy.check(new, username)
    if authenticate(engine, username, current, client=client) is None:
        raise WrongPassword("the current password is wrong")
    new_hash = hash_password(new, username)
    with transaction(engine) as conn:
        users.set_password_hash(conn, username, new_hash)
        return console_sessions.end_all_of(conn, username)


def account(engine: Engine, username: str) -> Account | None:
    """The user's role and password flag as the database has them now (None if missing or
    disabled)."""
    with read(engine) as conn:
        row = users.get_user(conn, username)
    if row is None or row["disabled"]:
        return None
    return Account(str(row["role"]), bool(row["must_change_password"]))


def db_role(engine: Engine, username: str) -> str | None:
    """The user's role as the database has it now (None if missing or disabled)."""
    found = account(engine, username)
    return None if found is None else found.role
