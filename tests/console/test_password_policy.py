"""Passwords (issue 17): at least 12 characters, not a common password, not easy to guess;
the generated first admin password has to be changed at the first login."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from console import commands, password_policy, passwords
from db.engine import engine_for, read
from db.models import ConsoleSession
from db.users import get_user

NEW = "a much better passphrase"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("x", "at least 12 characters"),
        ("short-pw-11", "at least 12 characters"),
        ("qwertyuiopasdfgh", "too easy to guess"),
        ("1q2w3e4r5t6y", "on a list of common passwords"),
        ("Password1234", "on a list of common passwords"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("carol-carol-carol", "too easy to guess"),
        ("Password1234!", "too easy to guess"),
    ],
)
def test_weak_passwords_are_refused(password: str, reason: str) -> None:
    problem = password_policy.problem(password, "carol")
    assert problem is not None and reason in problem


@pytest.mark.parametrize("password", ["correct horse battery", NEW, "Tr0ub4dor&3-xyz"])
def test_good_passwords_pass(password: str) -> None:
    assert password_policy.problem(password, "carol") is None


def test_the_cli_refuses_weak_passwords(
    sqlite_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, ``x`` was accepted."""
    from db.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    get_settings.cache_clear()
    runner = CliRunner()
    weak = runner.invoke(
        commands.user_app, ["add", "carol", "--role", "analyst", "--password-stdin"], input="x\n"
    )
    assert weak.exit_code == 2
    assert "error: the password must have at least 12 characters" in weak.output
    common = runner.invoke(
        commands.user_app,
        ["add", "carol", "--role", "analyst", "--password-stdin"],
        input="1q2w3e4r5t6y\n",
    )
    assert common.exit_code == 2 and "on a list of common passwords" in common.output
    monkeypatch.setenv(commands.ADMIN_PASSWORD_ENV, "admin")
    with pytest.raises(ValueError, match="QUEUE_ADMIN_PASSWORD: the password must have"):
        commands.ensure_admin(engine_for(sqlite_url))
    from queuectl.cli import app

    started = runner.invoke(app, ["console"])  # one line, no traceback, no console started
    assert started.exit_code == 2
    assert "error: QUEUE_ADMIN_PASSWORD: the password must have at least 12" in started.output


def _fill(at: AppTest, current: str, new: str, repeat: str | None = None) -> AppTest:
    at.text_input(key="pw_current").input(current)
    at.text_input(key="pw_new").input(new)
    at.text_input(key="pw_repeat").input(new if repeat is None else repeat)
    return at.button(key="FormSubmitter:change_password-Change password").click().run()


def test_the_generated_admin_password_must_be_changed_at_first_login(
    sqlite_url: str,
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    make_app: Callable[..., AppTest],
) -> None:
    """Before, the generated password (printed to the log) worked for good."""
    from db.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    monkeypatch.delenv(commands.ADMIN_PASSWORD_ENV, raising=False)
    get_settings.cache_clear()
    engine = engine_for(sqlite_url)
    generated = commands.ensure_admin(engine)
    assert generated
    with read(engine) as conn:
        assert get_user(conn, "admin")["must_change_password"] is True

    at = make_app(None).run()
    at.text_input(key="login_user").input("admin")
    at.text_input(key="login_password").input(generated)
    at = at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Choose your own password"
    assert not at.metric and not at.dataframe  # no page renders
    at.switch_page("views/jobs.py").run()  # no page is reachable before the change
    assert at.title[0].value == "Choose your own password"

    at = _fill(at, generated, "short")
    assert at.error[0].value == "The password must have at least 12 characters"
    at = _fill(at, generated, NEW, repeat=NEW + "!")
    assert at.error[0].value == "The new passwords differ."
    at = _fill(at, "not the current one", NEW)
    assert at.error[0].value == "The current password is wrong"
    at = _fill(at, generated, NEW)
    assert not at.exception and not at.error
    assert at.title[0].value == "Jobs"  # the page asked for earlier

    with read(engine) as conn:
        assert get_user(conn, "admin")["must_change_password"] is False
        sessions = conn.execute(select(func.count()).select_from(ConsoleSession)).scalar_one()
    assert sessions == 1  # the login's session ended with the change; this tab has a new one
    assert passwords.authenticate(engine, "admin", generated) is None
    assert passwords.authenticate(engine, "admin", NEW) == {"name": "admin", "role": "admin"}


def test_a_password_from_the_environment_need_not_be_changed(
    sqlite_url: str, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from db.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv(passwords.FAST_ENV, "1")
    monkeypatch.setenv(commands.ADMIN_PASSWORD_ENV, "chosen by the operator")
    get_settings.cache_clear()
    engine = engine_for(sqlite_url)
    assert commands.ensure_admin(engine) is None
    with read(engine) as conn:
        assert get_user(conn, "admin")["must_change_password"] is False
