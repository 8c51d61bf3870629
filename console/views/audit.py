"""Audit (admins): every console action with who, what, which jobs, when and the outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from console import auth, csv_export, data, ui

PAGE = 200

auth.require_admin()
url = data.ledger_url()
ss = st.session_state
ss.setdefault("audit_page_no", 0)
ui.page_header("Audit", "Newest first. Denied attempts are logged too.")


def _preview(ids: list[str]) -> str:
    """The first three ids in the table (the CSV download has them all)."""
    return ", ".join(ids[:3]) + (f" … (+{len(ids) - 3})" if len(ids) > 3 else "")


def _reset() -> None:
    ss["audit_page_no"] = 0


users: list[str] = []
action_names: list[str] = []
with ui.guard("Filters"):
    users = data.audit_choices(url, "username")
    action_names = data.audit_choices(url, "action")
c1, c2, c3, c4, c5 = st.columns(5)
username = c1.selectbox("User", ["(any)", *users], key="audit_user", on_change=_reset)
action = c2.selectbox("Action", ["(any)", *action_names], key="audit_action", on_change=_reset)
outcome = c3.selectbox(
    "Outcome", ["(any)", "ok", "error", "denied"], key="audit_outcome", on_change=_reset
)
range_label = c4.selectbox(
    "When",
    list(ui.TIME_RANGES),
    index=len(ui.TIME_RANGES) - 1,
    key="audit_range",
    on_change=_reset,
)
job_id = c5.text_input("Job id", key="audit_job", on_change=_reset).strip()

with ui.guard("Audit log"):
    rows = data.audit_entries(
        url,
        username=None if username == "(any)" else username,
        action=None if action == "(any)" else action,
        outcome=None if outcome == "(any)" else outcome,
        since=ui.since_of(range_label, data.floor_time(datetime.now(UTC), 5)),
        job_id=job_id or None,
        limit=PAGE + 1,
        offset=ss["audit_page_no"] * PAGE,
    )
    has_next = len(rows) > PAGE
    rows = rows[:PAGE]
    if not rows:
        st.info("No audit entries match.")
    else:
        table = [
            {
                "at": ui.fmt_time(r["at"]),
                "user": r["username"],
                "role": r["role"],
                "action": r["action"],
                "target": r.get("target") or "",
                "outcome": r["outcome"],
                "error": r.get("error") or "",
                "jobs": len(r.get("job_ids") or []),
                "job ids": ", ".join(r.get("job_ids") or []),
                "details": r.get("details") or {},
            }
            for r in rows
        ]
        df = ui.frame(table)  # the CSV has every job id of every entry
        shown = df.assign(job_ids_preview=[_preview(r.get("job_ids") or []) for r in rows])
        shown = shown.drop(columns=["job ids"]).rename(columns={"job_ids_preview": "job ids"})
        st.dataframe(shown[list(df.columns)], hide_index=True, key="audit_table")
        p1, p2, p3, p4 = st.columns([1, 1, 3, 2])
        if p1.button("◀ Previous", disabled=ss["audit_page_no"] == 0, key="audit_prev"):
            ss["audit_page_no"] -= 1
            st.rerun()
        if p2.button("Next ▶", disabled=not has_next, key="audit_next"):
            ss["audit_page_no"] += 1
            st.rerun()
        p3.caption(f"Page {ss['audit_page_no'] + 1} · {len(rows)} entries")
        p4.download_button(
            "Download CSV",
            csv_export.to_csv(df),  # cells a spreadsheet would run as formulas are escaped
            file_name="audit.csv",
            mime="text/csv",
            key="audit_csv",
            on_click="ignore",
        )
