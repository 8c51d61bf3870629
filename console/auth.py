"""Console login against the ``users`` table: argon2id hashes, roles ``admin`` and ``analyst``.

The signed-in user lives in ``st.session_state["user"]`` (server side), with the token of the
stored session (``console.browser_sessions``). Every run re-reads the session row and the role
(``refresh_session``) and every write checks them again (``console.actions`` calls
``db_role``), so a logout elsewhere, a password change, a disabled account or a demotion take
effect at the tab's next action.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from console import browser_sessions, client_address
from console.passwords import (
    MAX_PASSWORD,
    MAX_USERNAME,
    Account,
    LoginRefused,
    WrongPassword,
    account,
    authenticate,
    change_password,
    create_user,
    hash_password,
)
from db import audit
from db.engine import write

__all__ = [
    "authenticate",
    "create_user",
    "current_client",
    "current_user",
    "db_role",
    "ensure_live_session",
    "hash_password",
    "is_admin",
    "log_out",
    "login_form",
    "logout",
    "must_change_password",
    "password_change_form",
    "refresh_session",
    "require_admin",
    "require_user",
    "resume_session",
]

log = logging.getLogger(__name__)

SESSION_KEY = "user"
LOGIN_ERROR = "Invalid username or password"
NOTICE_KEY = "login_notice"
MUST_CHANGE_KEY = "_must_change_password"
SESSION_ENDED = (
    "Your session ended: you logged out elsewhere, your password was changed or the account"
    " was disabled. Please log in again."
)


def current_client() -> str:
    """The address of this tab's browser, as the throttle counts it."""
    return client_address.current()


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
            user = authenticate(engine, username, password, client=current_client())
            if user is not None:  # every signed-in tab has a stored session row
                browser_sessions.start(engine, user["name"])
        except LoginRefused as exc:  # throttled, or too many checks at once
            st.error(str(exc))
            return
        except Exception as exc:  # database down: say so, never a traceback
            st.error(f"Login is unavailable: {str(exc).splitlines()[0]}")
            return
        if user is None:
            st.error(LOGIN_ERROR)
            return
        audit_sign(engine, "login", user)
        st.session_state[SESSION_KEY] = user
        st.session_state.pop("login_password", None)
        st.rerun()


def account_now(engine: Engine, username: str) -> Account | None:
    """The signed-in user's account as the database has it now; None when the user is
    disabled or gone, or when this tab's stored session was deleted (logout in another tab,
    ``queuectl user passwd`` or ``disable``) or expired."""
    token = st.session_state.get(browser_sessions.TOKEN_KEY)
    if not token:  # only sessions seeded by tests have no token (a login always stores one)
        return account(engine, username)
    live = browser_sessions.check(engine, token)
    if live is None or live.username != username:
        return None
    return Account(live.role, live.must_change_password)


def db_role(engine: Engine, username: str) -> str | None:
    """The signed-in user's role now (None: no right at all). Every write checks it
    (``console.actions.authorize``), so a write from a tab whose session ended is refused."""
    found = account_now(engine, username)
    return None if found is None else found.role


def refresh_session(engine: Engine) -> dict[str, str] | None:
    """The signed-in user with the role the database has now; logs out a tab whose session
    ended or whose user was disabled or deleted (returns None)."""
    user = current_user()
    if user is None:
        return None
    found = account_now(engine, user["name"])
    if found is None:
        logout(engine)
        st.session_state[NOTICE_KEY] = SESSION_ENDED
        return None
    st.session_state[MUST_CHANGE_KEY] = found.must_change_password
    if found.role != user["role"]:
        user = {**user, "role": found.role}
        st.session_state[SESSION_KEY] = user
    return user


def ensure_live_session(engine: Engine) -> None:
    """For live refreshes (fragments rerun without the entry script): once this tab's
    session has ended, rerun the whole app, which logs the tab out."""
    token = st.session_state.get(browser_sessions.TOKEN_KEY)
    if token and not browser_sessions.still_live(engine, token):
        st.rerun(scope="app")


def must_change_password() -> bool:
    return bool(st.session_state.get(MUST_CHANGE_KEY))


def password_change_form(engine: Engine, user: dict[str, str]) -> None:
    """The only thing a user whose password was set for them sees until they choose one."""
    st.title("Choose your own password")
    st.info(
        "Your password was set for you (for example the generated first admin password). "
        "Choose your own before using the console: at least 12 characters, not a common one."
    )
    with st.form("change_password"):
        current = st.text_input(
            "Current password", type="password", key="pw_current", max_chars=MAX_PASSWORD
        )
        new = st.text_input("New password", type="password", key="pw_new", max_chars=MAX_PASSWORD)
        repeat = st.text_input(
            "Repeat the new password", type="password", key="pw_repeat", max_chars=MAX_PASSWORD
        )
        submitted = st.form_submit_button("Change password")
    if st.button("Log out", key="logout_forced"):
        log_out(engine)
        st.rerun()
    if not submitted:
        return
    if new != repeat:
        st.error("The new passwords differ.")
        return
    try:
        change_password(engine, user["name"], current, new, client=current_client())
    except (WrongPassword, LoginRefused, ValueError) as exc:
        st.error(str(exc)[:1].upper() + str(exc)[1:])
        return
    except Exception as exc:
        st.error(f"The password was not changed: {str(exc).splitlines()[0]}")
        return
    for key in ("pw_current", "pw_new", "pw_repeat"):
        st.session_state.pop(key, None)
    st.session_state[MUST_CHANGE_KEY] = False
    try:  # the change ended every session of the user, this tab's too: start a new one
        browser_sessions.start(engine, user["name"])
    except Exception:
        logout(engine)
        st.session_state[NOTICE_KEY] = "Your password was changed. Please log in again."
    st.rerun()


def audit_sign(engine: Engine, action: str, user: dict[str, str]) -> None:
    """Audit a successful ``login`` or a ``logout`` (target: the browser's address). A failure
    to write the entry is logged and never blocks signing in or out."""
    try:
        with write(engine) as conn:
            audit.record(
                conn,
                username=user["name"],
                role=user["role"],
                action=action,
                outcome="ok",
                target=current_client(),
            )
    except Exception:
        log.exception("could not audit the %s of %s", action, user.get("name"))


def log_out(engine: Engine) -> None:
    """The user's own *Log out*: audited, then :func:`logout`."""
    user = current_user()
    if user is not None:
        audit_sign(engine, "logout", user)
    logout(engine)


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
