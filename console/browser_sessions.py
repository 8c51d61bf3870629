"""A console login that survives a browser reload or a new tab.

Streamlit keeps ``st.session_state`` per browser tab connection, so a reload used to start a
new, logged-out session. After a login the console writes a cookie with a random token (by a
one-pixel ``st.iframe`` whose script runs in the browser: ``st.context.cookies`` is read-only)
and keeps the token's SHA-256 in ``console_sessions`` (``db.console_sessions``). A new session
that brings the cookie resumes the login while the row lives: not expired
(``QUEUE_CONSOLE_SESSION_HOURS`` after the last use), user enabled. Logging out deletes the row
and clears the cookie; disabling a user or changing their password ends all their sessions.

The cookie is ``SameSite=Strict`` (``Secure`` on HTTPS) but readable by scripts, as any cookie
set from the page must be: the console renders no HTML of its own from job data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import streamlit as st
from sqlalchemy import Engine

from db import console_sessions
from db.engine import transaction, write
from db.settings import get_settings

COOKIE = "edurise_console_session"
TOKEN_KEY = "_console_session_token"
_PENDING = "_console_cookie_write"  # the cookie value to write on the next run ("" clears it)
_TRIED = "_console_session_tried"
_MAX_TOKEN = 128

log = logging.getLogger("console")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lifetime() -> timedelta:
    return timedelta(hours=get_settings().queue_console_session_hours)


def start(engine: Engine, username: str) -> None:
    """After a login: store a new session and have the browser keep its token."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    try:
        with transaction(engine) as conn:
            console_sessions.create(conn, _hash(token), username, now, lifetime())
    except Exception as exc:  # the login still holds for this tab
        log.warning("console session not stored, a reload will ask to log in again: %s", exc)
        return
    st.session_state[TOKEN_KEY] = token
    st.session_state[_PENDING] = token


def resume(engine: Engine, cookies: Mapping[str, str]) -> dict[str, str] | None:
    """The user of the session whose token ``cookies`` carry, if it is still live."""
    token = cookies.get(COOKIE)
    if not token or len(token) > _MAX_TOKEN or st.session_state.get(_TRIED):
        return None
    st.session_state[_TRIED] = True  # once per session: the cookies are those of its start
    with transaction(engine) as conn:
        found = console_sessions.resume(conn, _hash(token), datetime.now(UTC), lifetime())
    if found is None:
        st.session_state[_PENDING] = ""  # expired or ended: clear the cookie
        return None
    st.session_state[TOKEN_KEY] = token
    return {"name": found[0], "role": found[1]}


def end(engine: Engine) -> None:
    """At logout: delete this browser's session (a copied cookie is useless after it)."""
    token = st.session_state.get(TOKEN_KEY)
    if token:
        with write(engine) as conn:
            console_sessions.end(conn, _hash(token))


def forget_cookie() -> None:
    """Clear the cookie on the next run (call after ``st.session_state`` was emptied)."""
    st.session_state[_PENDING] = ""


def write_cookie() -> None:
    """Send the pending cookie write to the browser, if there is one."""
    value = st.session_state.pop(_PENDING, None)
    if value is None:
        return
    max_age = int(lifetime().total_seconds()) if value else 0
    cookie = json.dumps(f"{COOKIE}={value}; path=/; max-age={max_age}; SameSite=Strict")
    st.iframe(  # Streamlit runs the HTML in a same-origin frame: the cookie is the app's
        "<script>"
        'const secure = window.location.protocol === "https:" ? "; Secure" : "";'
        f"document.cookie = {cookie} + secure;"
        "</script>",
        height=1,  # the smallest it may be
        alt="console session",
    )
