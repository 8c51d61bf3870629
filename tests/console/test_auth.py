"""Login against the users table; roles decide which pages exist."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import streamlit as st
from argon2 import PasswordHasher
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from console import browser_sessions, passwords
from db.engine import engine_for, read, write
from db.models import ConsoleSession, User
from db.users import set_disabled
from tests.console.conftest import PASSWORD

ADMIN_PAGES = ("views/submit.py", "views/audit.py")


def log_in(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="login_user").input(username)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def test_the_login_form_is_the_first_thing_a_visitor_sees(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = make_app(None).run()
    assert not at.exception
    assert [t.value for t in at.text_input] == ["", ""]
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert at.button[0].label == "Log in"
    assert len(at.sidebar.button) == 0  # no navigation, no logout
    assert not at.dataframe and not at.metric


def test_admin_logs_in_and_sees_admin_pages(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = log_in(make_app(None).run(), "alice", PASSWORD)
    assert not at.exception
    assert at.session_state["user"] == {"name": "alice", "role": "admin"}
    assert at.title[0].value == "Overview"
    for page in ADMIN_PAGES:
        at.switch_page(page).run()
        assert not at.exception
    with read(engine_for(console_db)) as conn:
        stamp = conn.execute(
            select(User.last_login_at).where(User.username == "alice")
        ).scalar_one()
    assert stamp is not None


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password"), ("nobody", PASSWORD), ("", ""), ("alice", "")],
)
def test_wrong_credentials_are_refused(
    console_db: str, make_app: Callable[..., AppTest], username: str, password: str
) -> None:
    at = log_in(make_app(None).run(), username, password)
    assert not at.exception
    assert at.error[0].value == "Invalid username or password"
    assert "user" not in at.session_state


def test_a_disabled_user_cannot_log_in(console_db: str, make_app: Callable[..., AppTest]) -> None:
    with write(engine_for(console_db)) as conn:
        set_disabled(conn, "alice", True)
    at = log_in(make_app(None).run(), "alice", PASSWORD)
    assert at.error[0].value == "Invalid username or password"
    assert "user" not in at.session_state


def test_an_analyst_cannot_reach_admin_pages(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = log_in(make_app(None).run(), "bob", PASSWORD)
    assert at.session_state["user"] == {"name": "bob", "role": "analyst"}
    for page in ADMIN_PAGES:
        with pytest.raises(ValueError):
            at.switch_page(page)
    at.switch_page("views/jobs.py").run()  # read-only pages are there
    assert at.title[0].value == "Jobs"


@pytest.mark.parametrize("page", ["submit.py", "audit.py"])
def test_admin_pages_stop_an_analyst_run_directly(console_db: str, page: str) -> None:
    """Defence in depth: even run without navigation, an admin page renders nothing."""
    from tests.console.conftest import APP

    at = AppTest.from_file(APP.replace("app.py", f"views/{page}"), default_timeout=20)
    at.session_state["user"] = {"name": "bob", "role": "analyst"}
    at.run()
    assert [e.value for e in at.error] == ["Admin role required"]
    assert not at.text_area and not at.dataframe


def test_log_out(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = make_app("admin").run()
    at.sidebar.button(key="logout").click().run()
    assert "user" not in at.session_state
    assert at.button[0].label == "Log in"


def test_unknown_users_cost_one_verification_too(
    console_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing safety: an unknown name runs argon2 verify like a known one."""
    calls: list[str] = []
    original = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str, password: str) -> bool:
        calls.append(hash)
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    engine = engine_for(console_db)
    assert passwords.authenticate(engine, "nobody", "x") is None
    assert passwords.authenticate(engine, "alice", "x") is None
    assert passwords.authenticate(engine, "alice", PASSWORD) == {"name": "alice", "role": "admin"}
    assert len(calls) == 3
    assert calls[0].startswith("$argon2id$")


def test_hashes_are_argon2id_and_upgraded_on_login(console_db: str) -> None:
    engine = engine_for(console_db)
    with read(engine) as conn:
        old = conn.execute(select(User.password_hash).where(User.username == "bob")).scalar_one()
    assert old.startswith("$argon2id$")
    strong = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    with write(engine) as conn:
        conn.execute(
            User.__table__.update()
            .where(User.username == "bob")
            .values(password_hash=strong.hash(PASSWORD))
        )
    assert passwords.authenticate(engine, "bob", PASSWORD) is not None
    with read(engine) as conn:
        new = conn.execute(select(User.password_hash).where(User.username == "bob")).scalar_one()
    assert "m=8,t=1,p=1" in new  # rehashed with the current (test) parameters


def _sessions(url: str) -> list[tuple[str, str]]:
    with read(engine_for(url)) as conn:
        rows = conn.execute(select(ConsoleSession.username, ConsoleSession.token_hash))
        return [(r.username, r.token_hash) for r in rows]


def test_a_login_is_stored_for_a_reload_and_a_logout_ends_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = log_in(make_app(None).run(), "alice", PASSWORD)
    assert not at.exception
    token = at.session_state[browser_sessions.TOKEN_KEY]
    [(username, token_hash)] = _sessions(console_db)
    assert username == "alice" and token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in token_hash  # only the hash is stored
    at.sidebar.button(key="logout").click().run()
    assert not at.exception and at.button[0].label == "Log in"
    assert _sessions(console_db) == []


def test_a_reload_resumes_a_live_session_only(console_db: str) -> None:
    """What the app does with the cookie of a new browser session (AppTest cannot send
    cookies; tests/browser covers the real reload)."""
    engine = engine_for(console_db)
    cookie = browser_sessions.COOKIE
    browser_sessions.start(engine, "bob")
    token = st.session_state[browser_sessions.TOKEN_KEY]
    st.session_state.clear()
    assert browser_sessions.resume(engine, {cookie: token}) == {"name": "bob", "role": "analyst"}
    for bad in ({}, {cookie: "forged"}, {cookie: "x" * 5000}):
        st.session_state.clear()  # a new browser session
        assert browser_sessions.resume(engine, bad) is None
    with write(engine) as conn:
        set_disabled(conn, "bob", True)
    st.session_state.clear()
    assert browser_sessions.resume(engine, {cookie: token}) is None
