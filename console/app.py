"""EduRise Queue console: ``streamlit run console/app.py`` (from any folder).

The login form is the first thing a visitor sees. Admin-only pages are registered in
``st.navigation`` only for admins, so analysts can neither see nor reach them; every write
re-checks the role in the database as well (``console.actions``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # pages import console.*, tasks.*, db.*
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from console import auth, browser_sessions, data, ui  # noqa: E402
from console.actions import readable  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="EduRise Queue", page_icon=":material/inbox:", layout="wide")
#: KPI values wrap instead of ending in "…" when a card is narrow (1024 px with the sidebar)
st.html(
    "<style>[data-testid='stMetricValue'], [data-testid='stMetricValue'] * "
    "{white-space: normal !important; overflow: visible !important; "
    "text-overflow: clip !important; overflow-wrap: anywhere;}</style>"
)


def page_list(role: str) -> list[Any]:
    """The pages a role may open (admin-only pages are not registered for analysts)."""
    pages = [
        st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(VIEWS / "jobs.py", title="Jobs", icon=":material/list:"),
        st.Page(VIEWS / "queues.py", title="Queues", icon=":material/view_list:"),
    ]
    if role == "admin":
        pages.append(st.Page(VIEWS / "submit.py", title="Submit", icon=":material/add_circle:"))
    pages += [
        st.Page(VIEWS / "workers.py", title="Workers", icon=":material/engineering:"),
        st.Page(VIEWS / "metrics.py", title="Metrics", icon=":material/monitoring:"),
        st.Page(VIEWS / "periodic.py", title="Periodic", icon=":material/schedule:"),
        st.Page(VIEWS / "errors.py", title="Errors", icon=":material/error:"),
        st.Page(VIEWS / "capacity.py", title="Capacity", icon=":material/speed:"),
    ]
    if role == "admin":
        pages.append(st.Page(VIEWS / "audit.py", title="Audit", icon=":material/policy:"))
    return pages


engine = None
with ui.guard("The ledger is not reachable"):
    engine = data.engine()
if engine is None:
    st.stop()

user = auth.current_user()
if user is not None:
    # every run re-reads the session row and the role: a tab whose session was ended (logout
    # elsewhere, `queuectl user passwd` / `disable`) is logged out, a demoted user loses access
    try:
        user = auth.refresh_session(engine)
    except Exception as exc:
        st.error(f"Cannot check your account: {readable(exc)}")
        st.stop()
if user is None:
    try:  # a reload or a new tab: the browser's cookie may name a live session
        user = auth.resume_session(engine)
    except Exception as exc:
        logging.getLogger("console").warning("console session not resumed: %s", exc)
if user is None:
    # a link such as /jobs?id=… keeps its page through the login: the pages are registered,
    # hidden and not run, so the login's rerun opens that page (if the role may see it)
    st.navigation(page_list("admin"), position="hidden")
    browser_sessions.write_cookie()  # clears the cookie after a logout or an expiry
    auth.login_form(engine)
    st.stop()

assert user is not None
if auth.must_change_password():  # e.g. the generated first admin password
    auth.password_change_form(engine, user)
    st.stop()

navigation = st.navigation(page_list(user["role"]))
with st.sidebar:
    st.caption(f"Signed in as **{user['name']}** ({user['role']})")
    local_zone = ui.browser_zone()
    st.toggle(
        f"Local times ({local_zone})" if local_zone is not None else "Local times",
        key=ui.LOCAL_TIMES,
        disabled=local_zone is None,
        help="Show times in your browser's time zone instead of UTC (the Metrics charts, "
        "the Submit form and the Periodic schedules stay in UTC and say so)",
    )
    if st.button("Log out", key="logout"):
        auth.log_out(engine)
        st.rerun()
    browser_sessions.write_cookie()  # after a login: the browser keeps the session's token


def alert_banner() -> None:
    """Active alerts on top of every page (details and history on Overview)."""
    try:
        url = data.ledger_url()
        active = data.active_alerts(url)
        now = datetime.now(UTC)
        silenced = {s["rule"] for s in data.alert_silences(url) if s["silenced_until"] > now}
    except Exception as exc:  # the banner never takes a page down
        logging.getLogger("console").warning("alert banner unavailable: %s", exc)
        return
    if not active:
        return
    lines = [
        f"- **{a['rule']}**: {a['message']}" + (" *(silenced)*" if a["rule"] in silenced else "")
        for a in active[:5]
    ]
    more = f"\n\n…and {len(active) - 5} more" if len(active) > 5 else ""
    st.warning(
        f"**{len(active)} active alert(s)** (see Overview → Alerts)\n\n" + "\n".join(lines) + more,
        icon=":material/notifications_active:",
    )


alert_banner()
try:
    navigation.run()
except Exception as exc:  # a readable line, never a traceback (st.stop/st.rerun pass through)
    logging.getLogger("console").exception("page %s failed", navigation.title)
    st.error(f"This page failed: {readable(exc)}")
