"""Periodic: the periodic job types defined in code, with schedule, next and last run, and
missed or late ticks flagged. Admins can run one now (audited)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from console import actions, auth, data, ui
from db.states import TERMINAL, JobStatus
from tasks import registry

#: a last run that ended without completing is flagged
UNSUCCESSFUL = TERMINAL - {JobStatus.COMPLETED}

user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ui.page_header("Periodic", "One job per tick, submitted by the maintainer. Times are UTC.")

if flash := st.session_state.pop("periodic_flash", None):
    st.success(flash)

schedules: list[tuple[str, Any, str]] = []
with ui.guard("Periodic job types"):
    schedules = data.periodic_schedules()
if not schedules:
    st.info("No periodic job types are registered.")
    st.stop()


def _flag(row: dict[str, Any]) -> str:
    missed = int(row.get("missed_ticks") or 0)
    if missed and row.get("late"):
        return f"MISSED {missed}, late"
    if missed:
        return f"MISSED {missed}"
    if row.get("late"):
        return "LATE"
    if row.get("last_status") in UNSUCCESSFUL:
        return f"last run {row['last_status']}"
    return "on time"


with ui.guard("Periodic health"):
    health = data.periodic_health(url)
    table = [
        {
            "health": _flag(r),
            "name": r["name"],
            "schedule": r.get("schedule"),
            "queue": r.get("queue"),
            "next run": ui.fmt_time(r.get("next_tick")),
            "last tick": ui.fmt_time(r.get("last_tick")),
            "last status": r.get("last_status") or "never ran",
            "last finished": ui.fmt_time(r.get("last_finished_at")),
            "missed ticks": int(r.get("missed_ticks") or 0),
            "late": bool(r.get("late")),
        }
        for r in health
    ]
    st.dataframe(ui.frame(table), hide_index=True, key="periodic_table")
    bad = [r for r in table if r["health"] != "on time"]
    if bad:
        st.warning(f"{len(bad)} periodic job type(s) need attention: missed, late or failing.")

if admin:
    st.subheader("Run now")
    names = [name for name, _, _ in schedules]
    c1, c2 = st.columns([3, 1])
    name = c1.selectbox("Periodic job", names, key="periodic_name")
    jt = registry.get(name)
    c1.caption(f"{jt.description or ''} · data {jt.periodic_data or '{}'}")
    if c2.button("Run now", key="periodic_run", type="primary"):
        try:
            job_id = actions.run_periodic_now(name, dict(jt.periodic_data))
        except actions.ActionError as exc:
            st.error(str(exc))
        else:
            st.session_state["periodic_flash"] = f"Submitted {name} now: job {job_id}"
            st.rerun()
else:
    st.caption("Read-only: running a periodic job now needs the admin role.")
