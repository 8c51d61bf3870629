"""Login throttling: a progressive delay per client address, per user and per (user, client).

Every login attempt is **reserved** before its password is verified: in one transaction the
attempt's rows of ``login_throttle`` are locked, checked and counted. An attempt that comes
before a row's ``next_attempt_at`` is refused unchecked (``LoginThrottled``), so however many
guesses arrive at once, at most the free attempts of a counter are verified.

Each counter allows ``free`` attempts, then delays the next one by ``base`` seconds, doubling
with every further attempt up to ``cap``; a successful login gives its own attempt back, resets
its (user, client) pair and marks that client as *trusted* for the user. Counts are forgotten
after ``FORGET`` without an attempt. Nothing is a hard lock: the delay ends by itself, and
``queuectl user unlock NAME`` clears it at once.

The per-user counter (attempts from every address) does not delay a trusted client of the
user, and one address adds at most its pair's free attempts to it (while they are remembered),
far below the per-user allowance: a stranger guessing from their address does not lock the
user out at another one.

Refused logins are written to the audit log at most once per user, client and minute: the
entry of that minute counts the refusals (``details.count``, of which ``details.throttled``
were refused unchecked).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from db import audit
from db import login_throttle as sql
from db.engine import transaction
from db.login_throttle import Key


@dataclass(frozen=True)
class Limit:
    free: int  # attempts counted without a delay
    base: float  # seconds before the attempt after the free ones; doubles per further attempt
    cap: float  # the longest delay, seconds


LIMITS: dict[str, Limit] = {
    "pair": Limit(free=5, base=2.0, cap=900.0),
    "client": Limit(free=20, base=2.0, cap=900.0),
    "user": Limit(free=50, base=2.0, cap=900.0),
}
FORGET = timedelta(hours=1)  # a counter with no attempt for this long starts again at zero
TRUST = timedelta(days=30)  # a client the user logged in from skips the per-user delay
AUDIT_EVERY = timedelta(minutes=1)  # one audit entry per user, client and minute


class LoginRefused(Exception):
    """A login that was not checked; the message is meant for the visitor."""


class LoginThrottled(LoginRefused):
    """Too many attempts lately from this address or for this user: try again later."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        wait = max(1, round(retry_after))
        super().__init__(f"Too many failed logins: try again in {wait} s.")


def delay(limit: Limit, attempts: int) -> float:
    """Seconds before the attempt after ``attempts`` counted ones."""
    if attempts < limit.free:
        return 0.0
    return min(limit.cap, limit.base * 2 ** (attempts - limit.free))


@dataclass(frozen=True)
class Reservation:
    username: str
    client: str
    keys: tuple[Key, ...]  # the counters this attempt was counted in
    at: datetime


def keys_of(username: str, client: str) -> tuple[Key, ...]:
    keys = [Key("client", "", client)]
    if username:
        keys += [Key("pair", username, client), Key("user", username, "")]
    return tuple(keys)


def _counted(row: dict[str, Any], now: datetime) -> int:
    last = row["last_attempt_at"]
    return 0 if last is None or now - last >= FORGET else int(row["failures"])


def reserve(engine: Engine, username: str, client: str, now: datetime | None = None) -> Reservation:
    """Count one attempt of ``username`` from ``client`` before it is verified; raises
    ``LoginThrottled`` (and counts nothing) while any of its counters delays it."""
    now = now or datetime.now(UTC)
    keys = keys_of(username, client)
    with transaction(engine) as conn:
        rows = sql.lock(conn, keys)
        pair = rows.get(Key("pair", username, client))
        trusted = bool(pair and pair["trusted_until"] and pair["trusted_until"] > now)
        wait = 0.0
        for key in keys:
            row = rows[key]
            if key.scope == "user" and trusted:
                continue
            if _counted(row, now) and row["next_attempt_at"] and row["next_attempt_at"] > now:
                wait = max(wait, (row["next_attempt_at"] - now).total_seconds())
        counted: list[Key] = []
        if wait <= 0:
            pair_attempts = _counted(pair, now) + 1 if pair is not None else 0
            for key in keys:
                if key.scope == "user" and pair_attempts > LIMITS["pair"].free:
                    continue  # one address adds at most its free attempts to the user's count
                attempts = _counted(rows[key], now) + 1
                pause = delay(LIMITS[key.scope], attempts)
                sql.save(
                    conn,
                    key,
                    failures=attempts,
                    last_attempt_at=now,
                    next_attempt_at=now + timedelta(seconds=pause) if pause else None,
                )
                counted.append(key)
    if wait > 0:
        if username:
            refused(engine, username, client, throttled=True, now=now)
        raise LoginThrottled(wait)
    return Reservation(username, client, tuple(counted), now)


def _give_back(conn: Connection, rows: dict[Key, dict[str, Any]], key: Key) -> None:
    row = rows[key]
    attempts = max(0, int(row["failures"]) - 1)
    values: dict[str, Any] = {"failures": attempts}
    if delay(LIMITS[key.scope], attempts) == 0:
        values["next_attempt_at"] = None
    sql.save(conn, key, **values)


def succeeded(engine: Engine, reservation: Reservation, now: datetime | None = None) -> None:
    """The password was right: give the attempt back, reset the pair, trust the client."""
    now = now or datetime.now(UTC)
    with transaction(engine) as conn:
        rows = sql.lock(conn, reservation.keys)
        for key in reservation.keys:
            if key.scope == "pair":
                sql.save(
                    conn,
                    key,
                    failures=0,
                    next_attempt_at=None,
                    trusted_until=now + TRUST,
                )
            else:
                _give_back(conn, rows, key)


def unchecked(engine: Engine, reservation: Reservation) -> None:
    """The password was not verified (the console was busy): give the attempt back."""
    with transaction(engine) as conn:
        rows = sql.lock(conn, reservation.keys)
        for key in reservation.keys:
            _give_back(conn, rows, key)


def refused(
    engine: Engine,
    username: str,
    client: str,
    *,
    throttled: bool = False,
    now: datetime | None = None,
) -> None:
    """Audit a refused login of a non-empty username: the entry of this user, client and
    minute counts it, or a new entry starts counting."""
    now = now or datetime.now(UTC)
    with transaction(engine) as conn:
        key = Key("pair", username, client)
        row = sql.lock(conn, [key])[key]
        entry = audit.get(conn, row["audit_id"]) if row["audit_id"] is not None else None
        if entry is not None and now - entry["at"] < AUDIT_EVERY:
            details = dict(entry["details"] or {})
            details["count"] = int(details.get("count", 1)) + 1
            details["throttled"] = int(details.get("throttled", 0)) + int(throttled)
            details["last_at"] = now.isoformat()
            audit.set_details(conn, entry["id"], details)
            return
        entry_id = audit.record(
            conn,
            username=username,
            role="-",
            action="login",
            outcome="denied",
            target=client,
            details={"client": client, "count": 1, "throttled": int(throttled)},
            at=now,
        )
        sql.save(conn, key, audit_id=entry_id)


def unlock(engine: Engine, username: str, client: str | None = None) -> int:
    """``queuectl user unlock``: forget the user's counted attempts (and the client's)."""
    with transaction(engine) as conn:
        return sql.unlock(conn, username, client)
