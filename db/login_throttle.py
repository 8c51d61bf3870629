"""SQL for ``login_throttle``: console login attempts counted per client address (``client``),
per user (``user``) and per user and client (``pair``). The policy is in
``console.login_throttle``; this module only reads, locks and writes the rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, or_, select, tuple_, update

from db.driver import driver_for
from db.models import LoginThrottle

throttle = LoginThrottle.__table__

SCOPES = ("client", "user", "pair")


@dataclass(frozen=True, order=True)
class Key:
    """One counter: ``("client", "", addr)``, ``("user", name, "")`` or ``("pair", name, addr)``."""

    scope: str
    username: str
    client: str

    def values(self) -> dict[str, str]:
        return {"scope": self.scope, "username": self.username, "client": self.client}


def lock(conn: Connection, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """The rows of ``keys`` (created empty if missing), locked until the transaction ends.

    Rows are created and locked in key order, so two attempts never wait for each other in
    a cycle. On SQLite the transaction's ``BEGIN IMMEDIATE`` already serializes writers.
    """
    ordered = sorted(set(keys))
    driver = driver_for(conn)
    for key in ordered:
        conn.execute(
            driver.insert(throttle)
            .values(**key.values(), failures=0)
            .on_conflict_do_nothing(index_elements=["scope", "username", "client"])
        )
    rows = conn.execute(
        select(throttle)
        .where(
            tuple_(throttle.c.scope, throttle.c.username, throttle.c.client).in_(
                [(k.scope, k.username, k.client) for k in ordered]
            )
        )
        .order_by(throttle.c.scope, throttle.c.username, throttle.c.client)
        .with_for_update()
    )
    found = {}
    for r in rows:
        row = dict(r._mapping)
        found[Key(row["scope"], row["username"], row["client"])] = row
    return found


def save(conn: Connection, key: Key, **values: Any) -> None:
    conn.execute(
        update(throttle)
        .where(
            throttle.c.scope == key.scope,
            throttle.c.username == key.username,
            throttle.c.client == key.client,
        )
        .values(**values)
    )


def rows_of(conn: Connection, username: str) -> list[dict[str, Any]]:
    """The user's and the user's pair rows (``queuectl user unlock`` and tests)."""
    stmt = select(throttle).where(throttle.c.username == username).order_by(throttle.c.scope)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def unlock(conn: Connection, username: str, client: str | None = None) -> int:
    """Forget the counted attempts of ``username`` (every address), and of ``client`` (every
    user) when given. Returns the number of rows cleared."""
    condition = and_(throttle.c.scope.in_(("user", "pair")), throttle.c.username == username)
    if client:
        condition = or_(condition, and_(throttle.c.scope == "client", throttle.c.client == client))
    return conn.execute(delete(throttle).where(condition)).rowcount


def prune(conn: Connection, *, idle_before: datetime, now: datetime) -> int:
    """Delete rows whose last attempt is older than ``idle_before`` (their counts are forgotten
    anyway), that delay nothing and mark no trusted client."""
    stmt = delete(throttle).where(
        or_(throttle.c.last_attempt_at.is_(None), throttle.c.last_attempt_at < idle_before),
        or_(throttle.c.next_attempt_at.is_(None), throttle.c.next_attempt_at <= now),
        or_(throttle.c.trusted_until.is_(None), throttle.c.trusted_until <= now),
    )
    return conn.execute(stmt).rowcount
