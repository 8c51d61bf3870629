"""Console login against the ``users`` table: argon2id hashes, roles ``admin`` and ``analyst``.

The signed-in user lives in ``st.session_state["user"]`` (server side). Every write re-checks
the role against the database (``console.actions``), so a demoted or disabled admin loses
their rights at once, without logging out.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from sqlalchemy import Engine

from console import browser_sessions
from console.passwords import (
    MAX_PASSWORD,
    MAX_USERNAME,
    LoginThrottled,
    authenticate,
    create_user,
    db_role,
    hash_password,
)

__all__ = [
    "authenticate",
    "create_user",
    "current_user",
    "db_role",
    "hash_password",
    "is_admin",
    "login_form",
    "logout",
    "refresh_session",
    "require_admin",
    "require_user",
    "resume_session",
]

SESSION_KEY = "user"
LOGIN_ERROR = "Invalid username or password"
NOTICE_KEY = "login_notice"


def current_user() -> dict[str, str] | None:
    user = st.session_state.get(SESSION_KEY)
    return user if isinstance(user, dict) and "name" in user and "role" in user else None


def is_admin() -> bool:
    user = current_user()
    return user is not None and user.get("role") == "admin"


def login_form(engine: Engine) -> None:
    """The login form: the first (and only) thing a visitor sees."""
    st.title("EduRise Queue console")
    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.warning(notice)
    with st.form("login"):
        username = st.text_input("Username", key="login_user", max_chars=MAX_USERNAME)
        password = st.text_input(
            "Password", type="password", key="login_password", max_chars=MAX_PASSWORD
        )
        submitted = st.form_submit_button("Log in")
    if submitted:
        try:
            user = authenticate(engine, username, password)
        except LoginThrottled as exc:
            st.error(str(exc))
            return
        except Exception as exc:  # database down: say so, never a traceback
            st.error(f"Login is unavailable: {str(exc).splitlines()[0]}")
            return
        if user is None:
            st.error(LOGIN_ERROR)
            return
        st.session_state[SESSION_KEY] = user
        st.session_state.pop("login_password", None)
        browser_sessions.start(engine, user["name"])  # a reload keeps the login
        st.rerun()


def refresh_session(engine: Engine) -> dict[str, str] | None:
    """The signed-in user with the role the database has now; logs out a user who was
    disabled or deleted (returns None)."""
    user = current_user()
    if user is None:
        return None
    role = db_role(engine, user["name"])
    if role is None:
        logout(engine)
        st.session_state[NOTICE_KEY] = "Your session ended: the account is disabled or gone."
        return None
    if role != user["role"]:
        user = {**user, "role": role}
        st.session_state[SESSION_KEY] = user
    return user


def logout(engine: Engine) -> None:
    """Forget the signed-in user, end this browser's stored session and clear its cookie on
    the next run."""
    browser_sessions.end(engine)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    browser_sessions.forget_cookie()


def resume_session(engine: Engine) -> dict[str, str] | None:
    """The user of a stored session this browser's cookie names (after a reload)."""
    user = browser_sessions.resume(engine, st.context.cookies)
    if user is not None:
        st.session_state[SESSION_KEY] = user
    return user


def require_admin() -> dict[str, str]:
    """Stop the page unless an admin is signed in (pages call it first: defence in depth)."""
    user = current_user()
    if user is None or user.get("role") != "admin":
        st.error("Admin role required")
        st.stop()
    assert user is not None
    return user


def require_user() -> dict[str, str]:
    user = current_user()
    if user is None:
        st.error("Please log in")
        st.stop()
    assert user is not None
    return user


def user_summary(user: dict[str, Any]) -> str:
    return f"{user['name']} ({user['role']})"
