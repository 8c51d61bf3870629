"""A console login that survives a browser reload or a new tab.

Streamlit keeps ``st.session_state`` per browser tab connection, so a reload used to start a
new, logged-out session. After a login the console writes a cookie with a random token (by a
one-pixel ``st.iframe`` whose script runs in the browser: ``st.context.cookies`` is read-only)
and keeps the token's SHA-256 in ``console_sessions`` (``db.console_sessions``). A new session
that brings the cookie resumes the login while the row lives: not expired
(``QUEUE_CONSOLE_SESSION_HOURS`` after the last use), user enabled. Logging out deletes the row
and clears the cookie; disabling a user or changing their password ends all their sessions.
Every run of a signed-in tab checks its row (``check``), so a deleted row ends every tab that
holds its token at the tab's next action, not only at a reload.

The cookie is ``SameSite=Strict`` (``Secure`` on HTTPS) but readable by scripts, as any cookie
set from the page must be: the console renders no HTML of its own from job data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import streamlit as st
from sqlalchemy import Engine

from console.settings import get_console_settings
from db import console_sessions
from db.engine import read, transaction, write

COOKIE = "edurise_console_session"
TOKEN_KEY = "_console_session_token"
_PENDING = "_console_cookie_write"  # the cookie value to write on the next run ("" clears it)
_TRIED = "_console_session_tried"
_MAX_TOKEN = 128
SLIDE_EVERY = timedelta(minutes=1)  # a session in use moves its expiry at most this often
CHECK_CACHE_SECONDS = 5.0  # live refreshes look a live session up again after this long

_checked: dict[str, float] = {}  # token hash -> monotonic time its check is good until
_CHECKED_MAX = 10_000
_checked_lock = threading.Lock()

log = logging.getLogger("console")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lifetime() -> timedelta:
    return timedelta(hours=get_console_settings().queue_console_session_hours)


def start(engine: Engine, username: str) -> None:
    """After a login: store a new session and have the browser keep its token.

    Raises if the row cannot be stored: every signed-in tab has a row, so deleting it ends
    the tab (the login fails instead of holding a session nothing can end)."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with transaction(engine) as conn:
        console_sessions.create(conn, _hash(token), username, now, lifetime())
    st.session_state[TOKEN_KEY] = token
    st.session_state[_PENDING] = token


def check(
    engine: Engine, token: str, now: datetime | None = None
) -> console_sessions.LiveSession | None:
    """The live session of ``token`` (None once it was deleted or expired, or its user
    disabled). A session in use has its expiry moved forward, at most once per
    ``SLIDE_EVERY`` (a write), so an active tab never reaches its idle limit."""
    now = now or datetime.now(UTC)
    token_hash = _hash(token)
    with read(engine) as conn:
        live = console_sessions.check(conn, token_hash, now)
    if live is None:
        _forget_checked(token_hash)
        return None
    if live.expires_at < now + lifetime() - SLIDE_EVERY:
        with write(engine) as conn:
            console_sessions.extend(conn, token_hash, now + lifetime())
    with _checked_lock:
        clock = time.monotonic()
        if len(_checked) > _CHECKED_MAX:  # drop the stale entries of sessions long gone
            for stale in [h for h, until in _checked.items() if until <= clock]:
                del _checked[stale]
        _checked[token_hash] = clock + CHECK_CACHE_SECONDS
    return live


def still_live(engine: Engine, token: str) -> bool:
    """``check`` for live refreshes (fragments, every few seconds per tab): a session found
    live is not looked up again for ``CHECK_CACHE_SECONDS``."""
    token_hash = _hash(token)
    with _checked_lock:
        if _checked.get(token_hash, 0.0) > time.monotonic():
            return True
    return check(engine, token) is not None


def _forget_checked(token_hash: str) -> None:
    with _checked_lock:
        _checked.pop(token_hash, None)


def resume(engine: Engine, cookies: Mapping[str, str]) -> dict[str, str] | None:
    """The user of the session whose token ``cookies`` carry, if it is still live."""
    token = cookies.get(COOKIE)
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
        return None
    if st.session_state.get(_TRIED):
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
        _forget_checked(_hash(token))
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
