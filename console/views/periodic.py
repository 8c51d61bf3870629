"""Periodic: the periodic job types defined in code, with schedule (and time zone), overlap
and catch-up policies, next and last run, missed, late and skipped ticks flagged, and whether
each is paused. Admins can run one now, and pause or resume one; every action asks for a
confirmation that names the periodic job and is audited."""

from __future__ import annotations

from typing import Any

import streamlit as st

from console import actions, auth, data, ui
from db.states import TERMINAL, JobStatus
from tasks import registry
from tasks.steering import list_periodic, pause_periodic, resume_periodic

#: a last run that ended without completing is flagged
UNSUCCESSFUL = TERMINAL - {JobStatus.COMPLETED}

ss = st.session_state
user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ui.page_header(
    "Periodic",
    "One job per tick, submitted by the maintainer. Times are UTC; a crontab runs in the time "
    "zone its schedule names.",
)

if flash := ss.pop("periodic_flash", None):
    st.success(flash)

schedules: list[tuple[str, Any, str]] = []
with ui.guard("Periodic job types"):
    schedules = data.periodic_schedules()

steering: dict[str, dict[str, Any]] = {}
with ui.guard("Periodic job state"):
    steering = {r["name"]: r for r in list_periodic(data.get_engine(url))}

if not schedules and not steering:
    st.info("No periodic job types are registered.")
    st.stop()


def _flag(row: dict[str, Any], state: dict[str, Any]) -> str:
    if state.get("paused"):
        return "PAUSED"
    skipped = state.get("last_skipped_tick")
    if skipped is not None and (row.get("last_tick") is None or skipped > row["last_tick"]):
        return "SKIPPING: previous run unfinished"  # its newest tick was skipped (overlap=skip)
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
    table = []
    for r in health:
        s = steering.get(r["name"], {})
        table.append(
            {
                "health": _flag(r, s),
                "name": r["name"],
                "schedule": r.get("schedule"),
                "queue": r.get("queue"),
                "paused": bool(s.get("paused")),
                "next run": "paused" if s.get("paused") else ui.fmt_time(r.get("next_tick")),
                "last tick": ui.fmt_time(r.get("last_tick")),
                "last status": r.get("last_status") or "never ran",
                "last finished": ui.fmt_time(r.get("last_finished_at")),
                "missed ticks": int(r.get("missed_ticks") or 0),
                "late": bool(r.get("late")),
                "overlap": s.get("overlap") or "",
                "catch-up": s.get("catch_up") or "",
                "skipped ticks": int(s.get("skipped_count") or 0),
                "last skipped": ui.fmt_time(s.get("last_skipped_tick")),
                "caught up": int(s.get("caught_up_count") or 0),
            }
        )
    st.dataframe(ui.frame(table), hide_index=True, key="periodic_table")
    bad = [r for r in table if r["health"] not in ("on time", "PAUSED")]
    if bad:
        st.warning(
            f"{len(bad)} periodic job type(s) need attention: missed, late, skipping or failing."
        )
    skipping = [r for r in table if r["skipped ticks"]]
    if skipping:
        st.caption(
            "Skipped ticks: with overlap=skip a tick is not enqueued while an earlier run of "
            "the job is unfinished. "
            + "; ".join(
                f"{r['name']}: {r['skipped ticks']}, the newest at {r['last skipped']}"
                f" (run {steering[r['name']].get('last_skipped_for')} was unfinished)"
                for r in skipping
            )
        )

paused_rows = [s for s in steering.values() if s.get("paused")]
for s in paused_rows:
    why = f": {s['reason']}" if s.get("reason") else ""
    gone = "" if s.get("registered") else " (no longer defined in code)"
    st.info(
        f"Periodic job {ui.md_code(s['name'])}{gone} is paused since "
        f"{ui.fmt_time(s.get('paused_at'))} by {ui.md_text(s.get('paused_by') or '?')}"
        f"{ui.md_text(why)}"
    )

if not admin:
    st.caption("Read-only: running, pausing or resuming a periodic job needs the admin role.")
    st.stop()

# --- pause / resume ------------------------------------------------------------------------------
st.subheader("Pause or resume")
control_names = sorted(steering)
c1, c2 = st.columns([3, 2])
control = c1.selectbox("Periodic job", control_names, key="periodic_control_name")
reason = c2.text_input("Reason (for pausing)", key="periodic_reason", max_chars=500)
pending = ss.get("periodic_pending")
if pending and pending.get("name") != control:
    ss.pop("periodic_pending", None)  # asked about another periodic job: ask again
    pending = None
current = steering.get(control or "", {})
if control and not pending:
    if current.get("paused"):
        if st.button(f"Resume {control}…", key="periodic_resume"):
            ss["periodic_pending"] = {"op": "resume", "name": control}
            st.rerun()
    elif st.button(f"Pause {control}…", key="periodic_pause"):
        ss["periodic_pending"] = {"op": "pause", "name": control, "reason": reason or None}
        st.rerun()
elif pending:
    name = pending["name"]
    if pending["op"] == "pause":
        why = f" Reason: {ui.md_text(pending['reason'])}." if pending.get("reason") else ""
        st.warning(
            f"Pause periodic job {ui.md_code(name)}? Its ticks are not enqueued until it is "
            f"resumed (runs already enqueued go on); this survives restarts.{why}"
        )
    else:
        st.warning(
            f"Resume periodic job {ui.md_code(name)}? It runs again from its next tick; the "
            "ticks due while it was paused are not caught up."
        )
    k1, k2 = st.columns(2)
    if k1.button(f"Yes, {pending['op']} {name}", key="periodic_confirm_yes", type="primary"):
        ss.pop("periodic_pending", None)
        try:
            if pending["op"] == "pause":
                changed = actions.perform(
                    "periodic_pause",
                    lambda: pause_periodic(
                        name, by=user["name"], reason=pending.get("reason"), engine=data.engine()
                    ),
                    target=name,
                    details={"reason": pending.get("reason")},
                    result_details=lambda done: {"changed": done},
                )
                ss["periodic_flash"] = (
                    f"Paused periodic job {name}."
                    if changed
                    else f"Periodic job {name} was paused already."
                )
            else:
                changed = actions.perform(
                    "periodic_resume",
                    lambda: resume_periodic(name, engine=data.engine()),
                    target=name,
                    result_details=lambda done: {"changed": done},
                )
                ss["periodic_flash"] = (
                    f"Resumed periodic job {name}." if changed else f"{name} was not paused."
                )
        except actions.ActionError as exc:
            st.error(ui.md_text(str(exc)))
        else:
            st.rerun()
    if k2.button("No", key="periodic_confirm_no"):
        ss.pop("periodic_pending", None)
        st.rerun()

# --- run now -------------------------------------------------------------------------------------
if schedules:
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
            ss["periodic_flash"] = f"Submitted {name} now: job {job_id}"
            st.rerun()
