"""``console_sessions`` on SQLite and PostgreSQL: a stored console login resumes while it is
live and its user enabled, slides its expiry, and ends at logout, disable or password change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from console import passwords
from db import console_sessions
from db.engine import engine_for, transaction
from db.models import ConsoleSession
from db.users import set_disabled

HOUR = timedelta(hours=1)
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def engine(use_ledger: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    eng = engine_for(use_ledger)
    passwords.create_user(eng, "alice", "alice passphrase 1", "admin")
    passwords.create_user(eng, "bob", "bob passphrase 22", "analyst")
    return eng


def _count(engine: Engine) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(ConsoleSession)).scalar_one())


def test_a_session_resumes_and_slides_until_it_is_idle_too_long(engine: Engine) -> None:
    with transaction(engine) as conn:
        console_sessions.create(conn, "h-alice", "alice", T0, HOUR)
    with transaction(engine) as conn:  # used after 50 minutes: good for another hour
        assert console_sessions.resume(conn, "h-alice", T0 + 50 * timedelta(minutes=1), HOUR) == (
            "alice",
            "admin",
        )
    with transaction(engine) as conn:
        assert console_sessions.resume(conn, "h-alice", T0 + 100 * timedelta(minutes=1), HOUR)
    with transaction(engine) as conn:  # then idle for more than the lifetime
        assert console_sessions.resume(conn, "h-alice", T0 + 4 * HOUR, HOUR) is None
        assert console_sessions.resume(conn, "unknown", T0, HOUR) is None


def test_a_new_login_drops_expired_sessions(engine: Engine) -> None:
    with transaction(engine) as conn:
        console_sessions.create(conn, "old", "alice", T0, HOUR)
        console_sessions.create(conn, "live", "bob", T0 + HOUR / 2, HOUR)
    with transaction(engine) as conn:
        console_sessions.create(conn, "new", "alice", T0 + HOUR + timedelta(seconds=1), HOUR)
    assert _count(engine) == 2  # "old" expired and went


def test_logout_disable_and_password_change_end_sessions(engine: Engine) -> None:
    with transaction(engine) as conn:
        for token in ("a1", "a2"):
            console_sessions.create(conn, token, "alice", T0, HOUR)
        console_sessions.create(conn, "b1", "bob", T0, HOUR)
    with transaction(engine) as conn:
        assert console_sessions.end(conn, "a1") is True
        assert console_sessions.end(conn, "a1") is False
        assert console_sessions.resume(conn, "a1", T0, HOUR) is None
    with transaction(engine) as conn:  # a disabled user's sessions do not resume
        set_disabled(conn, "bob", True)
        assert console_sessions.resume(conn, "b1", T0, HOUR) is None
    with transaction(engine) as conn:
        assert console_sessions.end_all_of(conn, "alice") == 1
    assert _count(engine) == 1  # bob's row stays until it expires (or he is disabled by CLI)
