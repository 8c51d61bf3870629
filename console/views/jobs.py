"""Jobs: filter, page through, open one job; admins cancel/retry one job or everything that
matches the filter (after a confirmation that shows the count)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from console import actions, auth, data, ui
from db.states import ALL_STATUSES, LEASED, TRANSITIONS, JobStatus, Transition, in_order
from tasks import api

PAGE_SIZES = (25, 50, 100, 200)
#: what cancel_job accepts: the cancel transition's sources, and a running job (its cancel is
#: requested, the job API answers "cancel_requested")
CANCELLABLE = in_order(TRANSITIONS[Transition.CANCEL][0] | {JobStatus.RUNNING})
RETRYABLE = in_order(TRANSITIONS[Transition.RETRY][0])
VERBS = {"cancel": "cancelled", "retry": "retried"}
TABLE_COLUMNS = [
    "id",
    "status",
    "type",
    "queue",
    "priority",
    "attempt",
    "created_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "last_error",
]

user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ss = st.session_state
ss.setdefault("jobs_page_no", 0)

ui.page_header("Jobs", "Newest first. Select a row (or paste an id) to see the whole job.")

flash = ss.pop("jobs_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])


def _reset_page() -> None:
    """A new filter: first page, no pending bulk action, no selected row."""
    ss["jobs_page_no"] = 0
    ss.pop("jobs_bulk", None)
    ss.pop("jobs_table", None)


# --- filters ----------------------------------------------------------------------------------
type_names: list[str] = []
queue_names: list[str] = []
with ui.guard("Job types"):
    type_names = [t.name for t in data.job_types()]
    queue_names = data.known_queues(url)

c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
statuses = c1.multiselect(
    "Status", ALL_STATUSES, key="jobs_status", on_change=_reset_page, placeholder="any"
)
type_choice = c2.selectbox("Type", ["(any)", *type_names], key="jobs_type", on_change=_reset_page)
queue_choice = c3.selectbox(
    "Queue",
    ["(any)", *queue_names],
    key="jobs_queue",
    accept_new_options=True,
    on_change=_reset_page,
)
range_label = c4.selectbox(
    "Created",
    list(ui.TIME_RANGES),
    index=len(ui.TIME_RANGES) - 1,
    key="jobs_range",
    on_change=_reset_page,
)
s1, s2 = st.columns([4, 1])
search = s1.text_input(
    "Search (job id or text in the payload)", key="jobs_search", on_change=_reset_page
).strip()
page_size = s2.selectbox("Rows per page", PAGE_SIZES, index=1, key="jobs_page_size")

filters: dict[str, Any] = {
    "statuses": list(statuses),
    "type": None if type_choice == "(any)" else type_choice,
    "queue": None if queue_choice == "(any)" else queue_choice,
    "since": ui.since_of(range_label, data.floor_time(datetime.now(UTC), 5)),
    "until": None,
    "search": search or None,
}

# --- table ------------------------------------------------------------------------------------
rows: list[dict[str, Any]] = []
has_next = False
loaded = False
with ui.guard("Jobs"):
    page_no = int(ss["jobs_page_no"])
    fetched = data.jobs_page(
        url,
        status=tuple(filters["statuses"]),
        type=filters["type"],
        queue=filters["queue"],
        since=filters["since"],
        search=filters["search"],
        limit=page_size + 1,
        offset=page_no * page_size,
    )
    has_next = len(fetched) > page_size
    rows = fetched[:page_size]
    loaded = True

selected_id: str | None = None
if rows:
    table = ui.frame(
        [
            {
                **{k: r.get(k) for k in TABLE_COLUMNS},
                "attempt": f"{r['attempt']}/{r['max_attempts']}",
            }
            for r in rows
        ],
        TABLE_COLUMNS,
    )
    event = st.dataframe(
        table,
        key="jobs_table",
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        column_config={
            "id": st.column_config.TextColumn("id", width="medium"),
            "last_error": st.column_config.TextColumn("last error", width="large"),
            **{
                c: st.column_config.DatetimeColumn(
                    c.removesuffix("_at"), format="YYYY-MM-DD HH:mm:ss"
                )
                for c in ("created_at", "scheduled_at", "started_at", "finished_at")
            },
        },
    )
    selection = getattr(event, "selection", None) or {}
    picked = list(selection.get("rows", [])) if isinstance(selection, dict) else []
    if not picked and hasattr(selection, "rows"):
        picked = list(selection.rows)
    if picked and picked[0] < len(rows):
        selected_id = str(rows[picked[0]]["id"])
elif loaded:
    st.info("No jobs match these filters.")

p1, p2, p3 = st.columns([1, 1, 6])


def _turn_page(step: int) -> None:
    ss["jobs_page_no"] = max(0, ss["jobs_page_no"] + step)
    ss.pop("jobs_table", None)  # the selected row index means nothing on another page


p1.button(
    "◀ Previous",
    disabled=ss["jobs_page_no"] == 0,
    key="jobs_prev",
    on_click=_turn_page,
    args=(-1,),
)
p2.button("Next ▶", disabled=not has_next, key="jobs_next", on_click=_turn_page, args=(1,))
p3.caption(f"Page {ss['jobs_page_no'] + 1} · {len(rows)} jobs shown")


# --- bulk actions (admin) ---------------------------------------------------------------------
def _eligible(op: str) -> list[str]:
    allowed = CANCELLABLE if op == "cancel" else RETRYABLE
    chosen = filters["statuses"]
    return [s for s in chosen if s in allowed] if chosen else list(allowed)


def _prepare_bulk(op: str) -> None:
    statuses_for_op = _eligible(op)
    if not statuses_for_op:
        ss["jobs_flash"] = ("warning", f"No job in the selected statuses can be {VERBS[op]}.")
        return
    ids, capped = data.matching_job_ids(
        statuses=statuses_for_op,
        type=filters["type"],
        queue=filters["queue"],
        since=filters["since"],
        until=filters["until"],
        search=filters["search"],
    )
    ss["jobs_bulk"] = {
        "op": op,
        "ids": ids,
        "capped": capped,
        "statuses": statuses_for_op,
        "filters": ui.jsonable({k: v for k, v in filters.items() if k != "statuses"}),
    }


if admin:
    with st.expander("Bulk actions on every job matching the filter", expanded="jobs_bulk" in ss):
        b1, b2 = st.columns(2)
        if b1.button("Retry all matching…", key="jobs_bulk_retry"):
            with ui.guard("Bulk retry"):
                _prepare_bulk("retry")
                st.rerun()
        if b2.button("Cancel all matching…", key="jobs_bulk_cancel"):
            with ui.guard("Bulk cancel"):
                _prepare_bulk("cancel")
                st.rerun()
        pending = ss.get("jobs_bulk")
        if pending:
            verb = "retry" if pending["op"] == "retry" else "cancel"
            count = len(pending["ids"])
            if count == 0:
                st.info(f"No job matching the filter can be {VERBS[pending['op']]} now.")
                if st.button("OK", key="jobs_bulk_dismiss"):
                    ss.pop("jobs_bulk", None)
                    st.rerun()
            else:
                note = f" (capped at {data.BULK_CAP:,}; run it again for the rest)" * bool(
                    pending["capped"]
                )
                st.warning(
                    f"This will {verb} **{count:,} jobs** "
                    f"(status {', '.join(pending['statuses'])}){note}. Continue?"
                )
                k1, k2 = st.columns(2)
                if k1.button(
                    f"Yes, {verb} {count:,} jobs", key="jobs_bulk_confirm", type="primary"
                ):
                    bar = st.progress(0.0, text=f"{verb}…")
                    try:
                        outcome = actions.bulk(
                            f"bulk_{pending['op']}",
                            pending["op"],
                            pending["ids"],
                            target="filter",
                            details={
                                "filters": pending["filters"],
                                "statuses": pending["statuses"],
                            },
                            progress=lambda i, n: bar.progress(i / n, text=f"{verb} {i}/{n}"),
                        )
                    except actions.ActionError as exc:
                        ss.pop("jobs_bulk", None)
                        st.error(str(exc))
                    else:
                        ss.pop("jobs_bulk", None)
                        kind = "success" if not outcome.failed else "warning"
                        extra = ""
                        if outcome.failed:
                            extra = f"; {outcome.failed} could not: {outcome.failures[0][1]}"
                        ss["jobs_flash"] = (kind, f"{verb}: {outcome.succeeded} done{extra}")
                        st.rerun()
                if k2.button("No, keep them", key="jobs_bulk_abort"):
                    ss.pop("jobs_bulk", None)
                    st.rerun()

# --- one job ----------------------------------------------------------------------------------
st.divider()
typed = st.text_input("Open a job by id", key="jobs_open_id").strip()
job_id = selected_id or typed or None


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _detail(job: dict[str, Any]) -> None:
    jid = str(job["id"])
    st.subheader(f"Job {jid}")
    m = st.columns(5)
    m[0].metric("Status", job["status"])
    m[1].metric("Type", job["type"])
    m[2].metric("Queue", job["queue"])
    m[3].metric("Priority", job["priority"])
    m[4].metric("Attempt", f"{job['attempt']}/{job['max_attempts']}")
    if job["cancel_requested_at"] is not None and job["status"] in LEASED:
        st.warning(f"Cancel requested at {ui.fmt_time(job['cancel_requested_at'])}")
    if job.get("progress") is not None:
        fraction = float(job["progress"])
        fraction = fraction / 100 if fraction > 1 else fraction
        st.progress(
            min(1.0, max(0.0, fraction)),
            text=f"Progress {fraction * 100:.0f} % {job.get('progress_message') or ''}".strip(),
        )

    if admin:
        a1, a2, _ = st.columns([1, 1, 6])
        if job["status"] in CANCELLABLE and a1.button("Cancel job", key="job_cancel"):
            try:
                outcome = actions.cancel(jid)
            except actions.ActionError as exc:
                st.error(str(exc))
            else:
                message = api.CANCEL_MESSAGES.get(outcome, outcome)
                ss["jobs_flash"] = ("success", f"Job {jid}: {message}")
                st.rerun()
        if job["status"] in RETRYABLE and a2.button("Retry job", key="job_retry"):
            try:
                actions.retry(jid)
            except actions.ActionError as exc:
                st.error(str(exc))
            else:
                ss["jobs_flash"] = ("success", f"Job {jid} queued again")
                st.rerun()
    else:
        st.caption("Read-only: cancelling and retrying need the admin role.")

    now = datetime.now(UTC)
    finished = job.get("finished_at") or job.get("completed_at")
    timing = {
        "created": ui.fmt_time(job["created_at"]),
        "scheduled (due)": ui.fmt_time(job["scheduled_at"]),
        "dispatched": ui.fmt_time(job.get("dispatched_at")),
        "started (latest attempt)": ui.fmt_time(job.get("started_at")),
        "completed": ui.fmt_time(job.get("completed_at")),
        "finished": ui.fmt_time(job.get("finished_at")),
        "wait (due → start)": ui.fmt_seconds(_duration(job["scheduled_at"], job.get("started_at"))),
        "run time": ui.fmt_seconds(
            _duration(
                job.get("started_at"),
                finished or (now if job["status"] == JobStatus.RUNNING else None),
            )
        ),
        "worker": str(job["worker_id"]) if job.get("worker_id") else "—",
        "timeout": ui.fmt_seconds(job.get("timeout_seconds")),
        "idempotency key": job.get("idempotency_key") or "—",
    }
    left, right = st.columns(2)
    with left:
        st.markdown("**Timing**")
        st.table({"": list(timing.keys()), "value": [str(v) for v in timing.values()]})
    with right:
        st.markdown("**Data**")
        st.json(ui.jsonable(job["data"]), expanded=True)
        st.markdown("**Result**")
        if job.get("result") is None:
            st.caption("no result")
        else:
            st.json(ui.jsonable(job["result"]), expanded=True)
    errors = job.get("errors") or []
    st.markdown(f"**Errors ({len(errors)})**")
    if not errors:
        st.caption("no failed attempt")
    for entry in errors:
        title = f"Attempt {entry.get('attempt')} · {entry.get('at', '')} · {entry.get('error', '')}"
        with st.expander(title[:300]):
            st.code(entry.get("traceback") or entry.get("error") or "", language="text")
            if entry.get("worker"):
                st.caption(f"worker {entry['worker']} · {entry.get('kind', 'error')}")


if job_id:
    with ui.guard("Job"):
        _detail(data.job(url, job_id))
