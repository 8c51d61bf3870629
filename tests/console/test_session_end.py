"""A console session ends everywhere once its row is deleted (issue 17): every run of a tab
checks its stored session, so logout in another tab, ``queuectl user passwd`` and
``queuectl user disable`` end open tabs at their next action, and writes are refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from console import auth, browser_sessions, commands
from db import console_sessions
from db.engine import engine_for, read, transaction
from db.models import ConsoleSession
from tests.console.conftest import PASSWORD


def _logged_in(make_app: Callable[..., AppTest]) -> AppTest:
    at = make_app(None).run()
    at.text_input(key="login_user").input("alice")
    at.text_input(key="login_password").input(PASSWORD)
    at = at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"] == {"name": "alice", "role": "admin"}
    return at


def _logout_in_another_tab(at: AppTest, make_app: Callable[..., AppTest]) -> None:
    """A second tab of the same browser (it resumed the same stored session from the cookie)."""
    other = make_app("admin")
    other.session_state[browser_sessions.TOKEN_KEY] = at.session_state[browser_sessions.TOKEN_KEY]
    other.run()
    other.sidebar.button(key="logout").click().run()
    assert other.button[0].label == "Log in"


def _cli(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(commands.user_app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("how", ["logout elsewhere", "user passwd", "user disable"])
def test_an_open_tab_is_logged_out_at_its_next_action(
    console_db: str, make_app: Callable[..., AppTest], how: str
) -> None:
    """Before, logout and ``user passwd`` deleted the row but the open tab stayed signed in
    (each run re-checked only the role and the disabled flag)."""
    at = _logged_in(make_app)
    if how == "logout elsewhere":
        _logout_in_another_tab(at, make_app)
    elif how == "user passwd":
        out = _cli("passwd", "alice", "--password-stdin", stdin="a brand new passphrase\n")
        assert "1 console session(s) ended: open tabs are logged out at their next action" in out
    else:
        out = _cli("disable", "alice")
        assert "user alice disabled; 1 console session(s) ended" in out
    at.switch_page("views/jobs.py").run()  # the next click
    assert not at.exception
    assert "user" not in at.session_state
    assert at.button[0].label == "Log in"
    assert at.warning[0].value == auth.SESSION_ENDED


def test_a_write_from_an_ended_session_is_refused(console_db: str) -> None:
    """``console.actions.authorize`` asks ``auth.db_role``: it answers None once the tab's
    session row is gone, so even a button inside a live fragment cannot act."""
    engine = engine_for(console_db)
    st.session_state.clear()
    browser_sessions.start(engine, "alice")
    st.session_state[auth.SESSION_KEY] = {"name": "alice", "role": "admin"}
    assert auth.db_role(engine, "alice") == "admin"
    with transaction(engine) as conn:
        console_sessions.end_all_of(conn, "alice")
    assert auth.db_role(engine, "alice") is None
    st.session_state.clear()


def test_live_refreshes_check_the_session_every_few_seconds(
    console_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(console_db)
    st.session_state.clear()
    browser_sessions.start(engine, "alice")
    token = st.session_state[browser_sessions.TOKEN_KEY]
    assert browser_sessions.still_live(engine, token)
    with transaction(engine) as conn:
        console_sessions.end_all_of(conn, "alice")
    assert browser_sessions.still_live(engine, token)  # cached for CHECK_CACHE_SECONDS
    monkeypatch.setattr(browser_sessions, "CHECK_CACHE_SECONDS", 0.0)
    browser_sessions._checked.clear()
    assert not browser_sessions.still_live(engine, token)
    st.session_state.clear()


def test_a_session_in_use_keeps_moving_its_expiry(console_db: str) -> None:
    engine = engine_for(console_db)
    st.session_state.clear()
    browser_sessions.start(engine, "alice")
    token = st.session_state[browser_sessions.TOKEN_KEY]

    def expiry() -> datetime:
        with read(engine) as conn:
            return conn.execute(select(ConsoleSession.expires_at)).scalar_one()

    first = expiry()
    later = datetime.now(UTC) + timedelta(hours=2)
    live = browser_sessions.check(engine, token, now=later)
    assert live is not None and live.username == "alice"
    assert expiry() == later + browser_sessions.lifetime() > first
    idle = later + browser_sessions.lifetime() + timedelta(seconds=1)
    assert browser_sessions.check(engine, token, now=idle) is None
    st.session_state.clear()
