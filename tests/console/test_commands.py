"""``queuectl user ...``, ``ensure_admin`` and the console's command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from console import commands, passwords
from db import console_sessions
from db.engine import engine_for, read, transaction
from db.models import ConsoleSession
from db.users import get_user, list_users


@pytest.fixture
def empty_ledger(
    sqlite_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> str:
    from db.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    monkeypatch.delenv(commands.ADMIN_PASSWORD_ENV, raising=False)
    get_settings.cache_clear()
    return sqlite_url


def test_ensure_admin_creates_admin_once_with_a_generated_password(empty_ledger: str) -> None:
    engine = engine_for(empty_ledger)
    password = commands.ensure_admin(engine)
    assert password and len(password) >= 16
    assert passwords.authenticate(engine, "admin", password) == {"name": "admin", "role": "admin"}
    with read(engine) as conn:  # the console asks for a new one at the first login
        assert get_user(conn, "admin")["must_change_password"] is True
    assert commands.ensure_admin(engine) is None
    with read(engine) as conn:
        assert [u["username"] for u in list_users(conn)] == ["admin"]


def test_ensure_admin_takes_the_password_from_the_environment(
    empty_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(commands.ADMIN_PASSWORD_ENV, "from-the-env")
    engine = engine_for(empty_ledger)
    assert commands.ensure_admin(engine) is None  # nothing to print
    assert passwords.authenticate(engine, "admin", "from-the-env") is not None


def test_user_add_list_disable(empty_ledger: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        commands.user_app,
        ["add", "carol", "--role", "analyst", "--password-stdin"],
        input="carol-passphrase-1\n",
    )
    assert result.exit_code == 0, result.output
    engine = engine_for(empty_ledger)
    assert passwords.authenticate(engine, "carol", "carol-passphrase-1") == {
        "name": "carol",
        "role": "analyst",
    }
    again = runner.invoke(
        commands.user_app,
        ["add", "carol", "--role", "admin", "--password-stdin"],
        input="another-passphrase\n",
    )
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(
        commands.user_app, ["add", "dave", "--role", "root", "--password-stdin"], input="x\n"
    )
    assert bad.exit_code == 2 and "--role must be one of admin, analyst" in bad.output
    prompted = runner.invoke(
        commands.user_app,
        ["add", "erin", "--role", "admin"],
        input="erin's passphrase\nerin's passphrase\n",
    )
    assert prompted.exit_code == 0, prompted.output
    assert passwords.authenticate(engine, "erin", "erin's passphrase") is not None
    now = datetime.now(UTC)
    with transaction(engine) as conn:  # carol is signed in on two browsers
        console_sessions.create(conn, "c1", "carol", now, timedelta(hours=1))
        console_sessions.create(conn, "c2", "carol", now, timedelta(hours=1))
        console_sessions.create(conn, "e1", "erin", now, timedelta(hours=1))
    assert runner.invoke(commands.user_app, ["disable", "carol"]).exit_code == 0
    changed = runner.invoke(
        commands.user_app, ["passwd", "erin", "--password-stdin"], input="erin's new passphrase\n"
    )
    assert changed.exit_code == 0, changed.output
    assert "password of erin changed; 1 console session(s) ended: open tabs are logged out" in (
        changed.output
    )
    with read(engine) as conn:  # both ended their sessions
        assert conn.execute(select(func.count()).select_from(ConsoleSession)).scalar_one() == 0
    assert passwords.authenticate(engine, "carol", "carol-passphrase-1") is None
    with read(engine) as conn:
        assert get_user(conn, "carol")["disabled"] is True
    listing = runner.invoke(commands.user_app, ["list"])
    assert "carol" in listing.output and "disabled" in listing.output


def test_run_console_execs_streamlit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(commands.os, "execv", lambda exe, argv: calls.append((exe, argv)))
    commands.run_console(8601, "0.0.0.0")
    [(exe, argv)] = calls
    assert exe == sys.executable
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert argv[4].endswith("console/app.py")
    assert argv[5:] == [
        "--server.headless",
        "true",
        "--server.port",
        "8601",
        "--server.address",
        "0.0.0.0",
        "--browser.gatherUsageStats",
        "false",
    ]
