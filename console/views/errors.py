"""Errors: failures grouped by fingerprint (exception type + location), with counts and first
and last seen. Admins can retry every failed job of a group (audited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from console import actions, auth, data, ui

RANGES = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}

user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ss = st.session_state
ui.page_header("Errors", "Failed attempts grouped by exception type and where it was raised.")

if flash := ss.pop("errors_flash", None):
    getattr(st, flash[0])(flash[1])

type_names: list[str] = []
queue_names: list[str] = []
with ui.guard("Filters"):
    type_names = [t.name for t in data.job_types()]
    queue_names = data.known_queues(url)
c1, c2, c3 = st.columns(3)
range_label = c1.selectbox("Seen in", list(RANGES), index=1, key="errors_range")
queue_choice = c2.selectbox(
    "Queue", ["(all)", *queue_names], key="errors_queue", accept_new_options=True
)
type_choice = c3.selectbox("Job type", ["(all)", *type_names], key="errors_type")
since = data.floor_time(datetime.now(UTC), 10) - RANGES[range_label]

groups: list[dict[str, Any]] = []
with ui.guard("Error groups"):
    groups = data.error_groups(
        url,
        since=since,
        queue=None if queue_choice == "(all)" else queue_choice,
        job_type=None if type_choice == "(all)" else type_choice,
    )
    if not groups:
        st.success("No failures in this range.")

selected: dict[str, Any] | None = None
if groups:
    table = [
        {
            "count": g["count"],
            "exception": g["exception_type"],
            "location": g.get("location") or "",
            "message": (g.get("message_sample") or "")[:200],
            "first seen": ui.fmt_time(g.get("first_seen")),
            "last seen": ui.fmt_time(g.get("last_seen")),
            "failed jobs": len(g.get("job_ids") or []),
        }
        for g in groups
    ]
    event = st.dataframe(
        ui.frame(table),
        hide_index=True,
        key="errors_table",
        on_select="rerun",
        selection_mode="single-row",
    )
    selection = getattr(event, "selection", None) or {}
    picked = list(selection.get("rows", [])) if isinstance(selection, dict) else []
    if picked and picked[0] < len(groups):
        selected = groups[picked[0]]
    else:
        st.caption("Select a group to see an example and act on it.")

if selected is not None:
    fingerprint = str(selected["fingerprint"])
    job_ids = [str(j) for j in selected.get("job_ids") or []]
    st.subheader(f"{ui.md_text(selected['exception_type'])} · {selected['count']} occurrence(s)")
    st.markdown(f"**Where:** {ui.md_code(selected.get('location') or 'unknown')}")
    st.code(selected.get("message_sample") or "", language="text")
    st.caption(
        f"Fingerprint {fingerprint} · example job {selected.get('example_job_id')} "
        "(open it on the Jobs page)"
    )
    if admin:
        pending = ss.get("errors_pending")
        if pending and pending.get("fingerprint") != fingerprint:
            ss.pop("errors_pending", None)
            pending = None
        if not job_ids:
            st.caption("No job of this group is still failed: nothing to retry.")
        elif not pending:
            if st.button(
                f"Retry the {len(job_ids)} failed job(s) of this group…", key="errors_retry"
            ):
                ss["errors_pending"] = {"fingerprint": fingerprint, "job_ids": job_ids}
                st.rerun()
        else:
            count = len(pending["job_ids"])
            st.warning(f"Retry **{count} failed job(s)** of this group?")
            k1, k2 = st.columns(2)
            if k1.button(f"Yes, retry {count} jobs", key="errors_confirm", type="primary"):
                ss.pop("errors_pending", None)
                try:
                    outcome = actions.bulk(
                        "retry_group",
                        "retry",
                        pending["job_ids"],
                        target=fingerprint,
                        details={
                            "exception_type": selected["exception_type"],
                            "location": selected.get("location"),
                        },
                    )
                except actions.ActionError as exc:
                    st.error(str(exc))
                else:
                    if outcome.failed:
                        ss["errors_flash"] = (
                            "warning",
                            f"Retried {outcome.succeeded}; {outcome.failed} could not be "
                            f"retried: {outcome.failures[0][1]}",
                        )
                    else:
                        ss["errors_flash"] = ("success", f"Retried {outcome.succeeded} job(s).")
                    data.error_groups.clear()
                    st.rerun()
            if k2.button("No", key="errors_abort"):
                ss.pop("errors_pending", None)
                st.rerun()
    else:
        st.caption("Read-only: retrying a group needs the admin role.")
