"""Jobs: live per-status counts, filters kept in the URL, a live table, one job opened by id
(``/jobs?id=<id or prefix>``); admins cancel or retry the opened job, the ticked rows, or every
job matching the filter.

Every action is bound to the job ids it names, never to a row position: the opened job and
the ticked rows are kept as ids, a row picked in the table is resolved against the ids that
table was drawn with (its key names them), and an action's ids are fixed when it is asked for,
shown in its confirmation, passed to the job API and written to the audit entry. A live
refresh redraws the table but never changes the opened job, the ticks or a pending action.
Job data, errors, progress messages and names are shown as text, never as Markdown.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from console import actions, auth, data, ui
from db import job_actions
from db.states import ALL_STATUSES, LEASED, TRANSITIONS, JobStatus, Transition, in_order
from tasks import api

PAGE_SIZES = (25, 50, 100, 200)
REFRESH_SECONDS = 5
#: what cancel_job accepts: the cancel transition's sources, and a running job (its cancel is
#: requested, the job API answers "cancel_requested")
CANCELLABLE = in_order(TRANSITIONS[Transition.CANCEL][0] | {JobStatus.RUNNING})
RETRYABLE = in_order(TRANSITIONS[Transition.RETRY][0])
#: every action: the statuses it applies to, its label and its past participle
ALLOWED = {
    "cancel": CANCELLABLE,
    "retry": RETRYABLE,
    "delete": job_actions.DELETABLE,
    "run_now": job_actions.RUNNABLE_NOW,
}
LABELS = {"cancel": "Cancel", "retry": "Retry", "delete": "Delete", "run_now": "Run now"}
#: (verb, what follows the jobs) of each action in questions and buttons: "Run job … now?"
PHRASES = {
    "cancel": ("cancel", ""),
    "retry": ("retry", ""),
    "delete": ("delete", ""),
    "run_now": ("run", " now"),
}
VERBS = {"cancel": "cancelled", "retry": "retried", "delete": "deleted", "run_now": "run now"}
#: what the single-job actions say when they succeed
DONE = {
    "retry": "queued again",
    "delete": "deleted",
    "run_now": "is due now (the maintainer queues it within a second)",
}
ANY = "(any)"
#: table keys whose ids are remembered (a selection event of an older table is ignored)
KEEP_SNAPSHOTS = 8
#: ids listed in a bulk confirmation (the audit entry has them all)
LISTED_IDS = 200
#: the table shows what the page read, with max_attempts folded into "attempt" (n/max), the
#: worker by its name, and the run time of the latest attempt
TABLE_COLUMNS = [
    *(c for c in data.LIST_COLUMNS if c not in ("max_attempts", "worker_id", "last_error")),
    "run time",
    "worker",
    "last_error",
]
TIME_COLUMNS = ("created_at", "scheduled_at", "started_at", "finished_at")

user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ss = st.session_state
ss.setdefault("jobs_page_no", 0)
ss.setdefault("jobs_ticked", [])  # ticked job ids, in ticking order
ss.setdefault("jobs_table_gen", 0)  # bumped when the ticks change other than by a click
ss.setdefault("jobs_snapshots", {})  # table key -> the job ids of its rows, in order


# --- the URL ----------------------------------------------------------------------------------
# Every parameter is a widget bound to the URL (``bind="query-params"``), so Streamlit keeps
# the widget and the URL in step (the browser rewrites the address as a value changes) and
# brings the value back after a reload or a page switch: the filters ``status``, ``type``,
# ``queue``, ``q``, and ``id``, the *Job id* box, which names the opened job. The opened job is
# whatever that box names; it changes only by an explicit act (a link, typing, ticking a
# single row, Close), never by a refresh.
KEPT_REFS = 50


# --- state changes (callbacks and helpers) ----------------------------------------------------


def _flash(kind: str, text: str) -> None:
    """A message for the next run; ``text`` must already be safe Markdown."""
    ss.setdefault("jobs_flashes", []).append((kind, text))


def _drop_pending(scope: str) -> None:
    """What a pending confirmation was asked about changed: ask again."""
    pending = ss.get("jobs_confirm")
    if pending and pending["scope"] == scope:
        ss.pop("jobs_confirm", None)


def _reset_page() -> None:
    """A new filter: the first page; a pending bulk on the old filter is dropped."""
    ss["jobs_page_no"] = 0
    _drop_pending("filter")


def _only_status(status: str) -> None:
    """A per-status count was clicked: filter on that status."""
    ss["status"] = [status]
    _reset_page()


def _set_ticks(ids: list[str]) -> None:
    """Change the ticks other than by a click in the table: the table is drawn anew (a new
    key), its ticked rows taken from the ids."""
    ss["jobs_ticked"] = list(dict.fromkeys(ids))
    ss["jobs_table_gen"] += 1
    _drop_pending("ticked")


def _open(job_id: str | None) -> None:
    """Open this job (by id) or none: the *Job id* box (and so the URL) names it. Call it
    before the box is drawn in a run (a callback, or the table above the box)."""
    ss["id"] = job_id or ""


def _apply_selection(key: str, rows: list[Any]) -> None:
    """Rows ticked in the table ``key`` -> job ids, through the ids that very table was drawn
    with (never the rows of a newer refresh). Ticks of rows not in that table are kept; a
    single newly ticked row is opened."""
    ids = ss["jobs_snapshots"].get(key)
    if ids is None:  # a table several refreshes old: ignore rather than guess
        return
    ticked: list[str] = list(ss["jobs_ticked"])
    before = [i for i in ids if i in ticked]
    now = [ids[r] for r in rows if isinstance(r, int) and 0 <= r < len(ids)]
    if set(before) == set(now):
        return
    added = [i for i in now if i not in ticked]
    gone = set(before) - set(now)
    ss["jobs_ticked"] = [i for i in ticked if i not in gone] + added
    _drop_pending("ticked")
    if len(added) == 1:
        _open(added[0])


def _on_table_select(key: str) -> None:
    state = ss.get(key) or {}
    selection = state.get("selection", {}) if isinstance(state, dict) else {}
    _apply_selection(key, list(selection.get("rows", [])))


def _token(op: str, scope: str, ids: list[str]) -> str:
    return hashlib.sha256(f"{op}|{scope}|{','.join(ids)}".encode()).hexdigest()[:16]


def _ask(op: str, scope: str, ids: list[str], details: dict[str, Any] | None = None) -> None:
    """Ask for a confirmation of ``op`` on exactly ``ids`` (fixed now). Ticked jobs the
    operation no longer applies to are listed as skipped."""
    skipped: list[tuple[str, str]] = []
    if scope == "ticked":
        try:
            statuses = data.job_statuses(ids)
        except Exception as exc:
            _flash("error", ui.md_text(actions.readable(exc)))
            return
        allowed = ALLOWED[op]
        skipped = [(i, statuses.get(i, "deleted")) for i in ids if statuses.get(i) not in allowed]
        ids = [i for i in ids if statuses.get(i) in allowed]
    ss["jobs_confirm"] = {
        "op": op,
        "scope": scope,
        "ids": list(ids),
        "skipped": skipped,
        "details": details or {},
        "token": _token(op, scope, list(ids)),
    }


def _ask_filter(op: str, filters: dict[str, Any]) -> None:
    """Bulk on every job matching the filter: its ids are collected now (ids only)."""
    allowed = ALLOWED[op]
    chosen = filters["statuses"]
    statuses = [s for s in chosen if s in allowed] if chosen else list(allowed)
    if not statuses:
        _flash("warning", f"No job in the selected statuses can be {VERBS[op]}.")
        return
    try:
        ids, capped = data.matching_job_ids(
            statuses=statuses,
            type=filters["type"],
            queue=filters["queue"],
            since=filters["since"],
            until=filters["until"],
            search=filters["search"],
        )
    except Exception as exc:
        _flash("error", f"Bulk {op}: {ui.md_text(actions.readable(exc))}")
        return
    details = {
        "filters": ui.jsonable({k: v for k, v in filters.items() if k != "statuses"}),
        "statuses": statuses,
        "capped": capped,
    }
    _ask(op, "filter", ids, details)


def _dismiss() -> None:
    ss.pop("jobs_confirm", None)


def _search_all(term: str) -> None:
    """The payload search of ``term`` reads every job, without its time budget."""
    ss["jobs_search_all"] = term


def _turn_page(step: int) -> None:
    ss["jobs_page_no"] = max(0, ss["jobs_page_no"] + step)


# --- running an action ------------------------------------------------------------------------


def _summary(op: str, outcome: actions.BulkResult) -> str:
    """What happened, in words, with the job API's answers counted truthfully."""
    if op == "cancel":
        cancelled = outcome.outcomes.get(api.CANCELLED, 0)
        requested = outcome.outcomes.get(api.CANCEL_REQUESTED, 0)
        text = (
            f"Cancel of {outcome.requested:,} job(s): {cancelled:,} cancelled (never started, "
            f"never will), {requested:,} cancel requested (a worker holds them: each ends "
            "cancelled if its handler stops, else it runs to its end)"
        )
    elif op == "retry":
        text = f"Retry of {outcome.requested:,} job(s): {outcome.succeeded:,} queued again"
    elif op == "delete":
        text = f"Delete of {outcome.requested:,} job(s): {outcome.succeeded:,} deleted"
    else:
        text = (
            f"Run now of {outcome.requested:,} job(s): {outcome.succeeded:,} due now (the "
            "maintainer queues them within a second)"
        )
    if outcome.failed:
        first_id, first_error = outcome.failures[0]
        text += (
            f"; {outcome.failed:,} could not be {VERBS[op]} (first: job {first_id}: "
            f"{ui.md_text(first_error)})"
        )
    return text


def _run(pending: dict[str, Any]) -> None:
    """Do the confirmed action on exactly ``pending["ids"]``, then rerun the page."""
    op, scope, ids = pending["op"], pending["scope"], list(pending["ids"])
    ss.pop("jobs_confirm", None)
    if scope == "job":
        [job_id] = ids
        try:
            if op == "cancel":
                answer = actions.cancel(job_id)
                message = api.CANCEL_MESSAGES.get(answer, answer)
                _flash("success", f"Job {job_id}: {message}")
            else:
                {"retry": actions.retry, "delete": actions.delete, "run_now": actions.run_now}[op](
                    job_id
                )
                _flash("success", f"Job {job_id} {DONE[op]}")
                if op == "delete":
                    ss["jobs_close"] = True  # nothing left to show
        except actions.ActionError as exc:
            _flash("error", ui.md_text(str(exc)))
        st.rerun()
    bar = st.progress(0.0, text=f"{op}…")
    details = {**pending["details"], "scope": scope}
    if pending["skipped"]:
        details["skipped"] = [{"job_id": i, "status": s} for i, s in pending["skipped"][:50]]
    try:
        outcome = actions.bulk(
            f"bulk_{op}",
            op,
            ids,
            target="selection" if scope == "ticked" else "filter",
            details=details,
            progress=lambda i, n: bar.progress(i / n, text=f"{op} {i}/{n}"),
        )
    except actions.ActionError as exc:
        _flash("error", ui.md_text(str(exc)))
    else:
        _flash("success" if not outcome.failed else "warning", _summary(op, outcome))
        if scope == "ticked":
            _set_ticks([i for i in ss["jobs_ticked"] if i not in set(ids)])
    st.rerun()


def _confirmation(pending: dict[str, Any], what: str) -> None:
    """The pending action with its count and every id it will touch; Yes / No."""
    op, ids, token = pending["op"], pending["ids"], pending["token"]
    skipped = pending["skipped"]
    if skipped:
        listed = ", ".join(f"{i} ({s})" for i, s in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        st.caption(
            f"{len(skipped):,} ticked job(s) cannot be {VERBS[op]} now and are left out: "
            f"{listed}{more}"
        )
    if not ids:
        st.info(f"No job {what} can be {VERBS[op]} now.")
        st.button("OK", key=f"jobs_confirm_no_{token}", on_click=_dismiss)
        return
    verb, tail = PHRASES[op]
    if len(ids) == 1:
        question = f"{verb.capitalize()} job {ids[0]}{tail}?"
        yes_label = f"Yes, {verb} job {ids[0][:8]}{tail}"
    else:
        capped = pending["details"].get("capped")
        note = f" (capped at {data.BULK_CAP:,}; run it again for the rest)" if capped else ""
        question = f"This will {verb} **{len(ids):,} jobs**{tail}{note}, exactly these ids:"
        yes_label = f"Yes, {verb} {len(ids):,} jobs{tail}"
    if op == "delete":
        question += " Deleting cannot be undone."
    st.warning(question)
    if len(ids) > 1:
        listed_ids = "\n".join(ids[:LISTED_IDS])
        if len(ids) > LISTED_IDS:
            listed_ids += f"\n… and {len(ids) - LISTED_IDS:,} more (the audit entry lists all)"
        st.code(listed_ids, language=None, height=min(300, 40 + 21 * min(len(ids), 12)))
    k1, k2, _ = st.columns([2, 2, 4])
    if k1.button(yes_label, key=f"jobs_confirm_yes_{token}", type="primary"):
        _run(pending)
    k2.button(
        "No, keep them" if len(ids) > 1 else "No", key=f"jobs_confirm_no_{token}", on_click=_dismiss
    )


# --- parts of the page ------------------------------------------------------------------------


def _filters_form() -> dict[str, Any]:
    """The filters; the first four are in the URL (``?status=…&type=…&queue=…&q=…``)."""
    type_names: list[str] = []
    queue_names: list[str] = []
    with ui.guard("Job types"):
        type_names = [t.name for t in data.job_types()]
        queue_names = data.known_queues(url)
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    statuses = c1.multiselect(
        "Status",
        ALL_STATUSES,
        key="status",
        bind="query-params",
        on_change=_reset_page,
        placeholder="any",
    )
    type_choice = c2.selectbox(
        "Type", [ANY, *type_names], key="type", bind="query-params", on_change=_reset_page
    )
    queue_choice = c3.selectbox(
        "Queue",
        [ANY, *queue_names],
        key="queue",
        bind="query-params",
        accept_new_options=True,
        on_change=_reset_page,
    )
    range_label = c4.selectbox(
        "Created",
        list(ui.TIME_RANGES),
        index=len(ui.TIME_RANGES) - 1,
        key="jobs_range",
        persist_state="session",
        on_change=_reset_page,
    )
    s1, s2 = st.columns([4, 1])
    search = s1.text_input(
        "Search (job id or text in the payload)",
        key="q",
        bind="query-params",
        on_change=_reset_page,
    ).strip()
    s2.selectbox(
        "Rows per page",
        PAGE_SIZES,
        index=1,
        key="jobs_page_size",
        persist_state="session",
        on_change=_reset_page,
    )
    return {
        "statuses": list(statuses),
        "type": None if type_choice in (ANY, None) else type_choice,
        "queue": None if queue_choice in (ANY, None) else queue_choice,
        "since": ui.since_of(range_label, data.floor_time(datetime.now(UTC), 5)),
        "until": None,
        "search": search or None,
    }


def _counts(chosen: list[str]) -> None:
    """Jobs per status in the whole ledger (exact up to data.COUNT_CAP, then an estimate);
    a click filters on that status."""
    with ui.guard("Counts"):
        counts = data.status_counts(url)
        cols = st.columns(len(ALL_STATUSES))
        for col, status in zip(cols, ALL_STATUSES, strict=True):
            count = counts[status]
            col.button(
                f"{status} {count.label()}",
                key=f"jobs_count_{status}",
                type="secondary" if chosen == [status] else "tertiary",
                help=(
                    f"{status}: {count.n:,} jobs in the ledger; click to show only them"
                    if count.exact
                    else f"{status}: more than {data.COUNT_CAP:,} jobs"
                    + (" (the planner's estimate)" if count.estimated else "")
                    + "; click to show only them"
                ),
                on_click=_only_status,
                args=(status,),
                width="stretch",
            )


def _table(filters: dict[str, Any], page_size: int) -> list[str]:
    """The page of jobs; returns the ids it shows, in order."""
    rows: list[dict[str, Any]] = []
    has_next = False
    loaded = False
    searched_since = None
    with ui.guard("Jobs"):
        page = {
            "status": tuple(filters["statuses"]),
            "type": filters["type"],
            "queue": filters["queue"],
            "since": filters["since"],
            "limit": page_size + 1,
            "offset": int(ss["jobs_page_no"]) * page_size,
        }
        if filters["search"]:  # answered within a budget: the payloads have no index
            fetched, searched_since = data.jobs_search_page(
                url,
                search=filters["search"],
                everything=ss.get("jobs_search_all") == filters["search"],
                **page,
            )
        else:
            fetched = data.jobs_page(url, **page)
        has_next = len(fetched) > page_size
        rows = fetched[:page_size]
        loaded = True
    ids = [str(r["id"]) for r in rows]
    if rows:
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
        key = f"jobs_table_{ss['jobs_table_gen']}_{digest}"  # new rows or new ticks: new key
        snapshots: dict[str, list[str]] = ss["jobs_snapshots"]
        snapshots.pop(key, None)
        snapshots[key] = ids
        for old in list(snapshots)[:-KEEP_SNAPSHOTS]:
            del snapshots[old]
        ticked = set(ss["jobs_ticked"])
        default_rows = [i for i, jid in enumerate(ids) if jid in ticked]
        names = _names()
        table = ui.frame(
            [
                {
                    **{k: r.get(k) for k in TABLE_COLUMNS},
                    "id": ui.job_href(r["id"]),
                    "attempt": f"{r['attempt']}/{r['max_attempts']}",
                    "run time": ui.fmt_seconds(
                        _duration(r.get("started_at"), r.get("finished_at"))
                    ),
                    "worker": _worker(r.get("worker_id"), names) if r.get("worker_id") else "",
                }
                for r in rows
            ],
            TABLE_COLUMNS,
        )
        event = st.dataframe(
            table,
            key=key,
            on_select=functools.partial(_on_table_select, key),
            selection_mode="multi-row",
            selection_default={"selection": {"rows": default_rows}} if default_rows else None,
            hide_index=True,
            column_config={
                "id": st.column_config.LinkColumn(
                    "id",
                    display_text=r"id=([0-9a-f-]+)$",
                    width=290,  # a whole id
                    help="Opens the job's own page (/jobs?id=…) in a new tab",
                ),
                "last_error": st.column_config.TextColumn("last error", width="large"),
                "run time": st.column_config.TextColumn(help="of the latest attempt"),
                **{
                    c: st.column_config.DatetimeColumn(
                        c.removesuffix("_at"),
                        format="distance" if relative else "YYYY-MM-DD HH:mm:ss",
                        help=ui.zone_label()
                        + (" (turn Relative times off for the time)" if relative else ""),
                    )
                    for c in TIME_COLUMNS
                },
            },
        )
        selection = getattr(event, "selection", None) or {}
        picked = selection.get("rows", []) if isinstance(selection, dict) else []
        _apply_selection(key, list(picked))  # AppTest writes the state without a callback
    elif loaded:
        st.info(
            "No jobs match these filters"
            + (" among the jobs searched." if searched_since is not None else ".")
        )
    if searched_since is not None:
        s1, s2 = st.columns([4, 1])
        s1.caption(
            f"The payload search stopped after {data.SEARCH_BUDGET_SECONDS:g} s: it searched "
            f"the jobs created since {ui.fmt_time(searched_since)}, newest first; older "
            "jobs may match too. Narrow it (status, type, queue, time range) or search them all."
        )
        s2.button(
            "Search all jobs",
            key="jobs_search_all_button",
            help="reads every job's payload: may take seconds on a large ledger",
            on_click=_search_all,
            args=(filters["search"],),
        )
    p1, p2, p3 = st.columns([1, 1, 6])
    p1.button(
        "◀ Previous",
        disabled=ss["jobs_page_no"] == 0,
        key="jobs_prev",
        on_click=_turn_page,
        args=(-1,),
    )
    p2.button("Next ▶", disabled=not has_next, key="jobs_next", on_click=_turn_page, args=(1,))
    p3.caption(
        f"Page {ss['jobs_page_no'] + 1} · {len(rows)} jobs shown · tick rows to act on them "
        "together (a single ticked row opens below) · an id opens its own page"
    )
    return ids


def _ticked(shown: list[str]) -> None:
    ticked: list[str] = ss["jobs_ticked"]
    if not ticked:
        return
    off_page = sum(1 for i in ticked if i not in set(shown))
    note = f" ({off_page} not on this page)" if off_page else ""
    t1, t2 = st.columns([5, 1])
    t1.markdown(f"**{len(ticked)} job(s) ticked**{note}")
    with t1.expander("Ticked job ids"):
        st.markdown("\n".join(f"- [{i}]({ui.job_href(i)})" for i in ticked))
    t2.button("Clear", key="jobs_ticked_clear", on_click=_set_ticks, args=([],))
    if admin:
        for col, op in zip(st.columns(4), ("retry", "cancel", "run_now", "delete"), strict=True):
            col.button(
                ("Run ticked now" if op == "run_now" else f"{LABELS[op]} ticked")
                + f" ({len(ticked)})…",
                key=f"jobs_ticked_{op}",
                on_click=_ask,
                args=(op, "ticked", list(ticked)),
            )
    pending = ss.get("jobs_confirm")
    if admin and pending and pending["scope"] == "ticked":
        _confirmation(pending, "of the ticked ones")


def _bulk(filters: dict[str, Any]) -> None:
    pending = ss.get("jobs_confirm")
    open_now = bool(pending and pending["scope"] == "filter")
    with st.expander("Bulk actions on every job matching the filter", expanded=open_now):
        b1, b2 = st.columns(2)
        b1.button(
            "Retry all matching…",
            key="jobs_bulk_retry",
            on_click=_ask_filter,
            args=("retry", filters),
        )
        b2.button(
            "Cancel all matching…",
            key="jobs_bulk_cancel",
            on_click=_ask_filter,
            args=("cancel", filters),
        )
        if open_now:
            assert pending is not None
            st.caption(
                f"Statuses the action applies to: {', '.join(pending['details']['statuses'])}"
            )
            _confirmation(pending, "matching the filter")


def _opened() -> str | None:
    """The *Job id* box and the job it names: a whole id, or a prefix of 8 or more hex digits
    naming one job (looked up once per text). Shows why when it names none."""
    ref = st.text_input(
        "Job id (the whole id, or its first 8 or more characters; empty: no job open)",
        key="id",
        bind="query-params",
    ).strip()
    if not ref:
        return None
    names: dict[str, str] = ss.setdefault("jobs_ref_names", {})
    if ref in names:
        return names[ref]
    try:
        found = data.resolve_job_ref(url, ref)
    except Exception as exc:
        st.error(f"Cannot look the job up: {ui.md_text(actions.readable(exc))}")
        return None
    if found.job_id is not None:
        names[ref] = found.job_id
        for old in list(names)[:-KEPT_REFS]:
            del names[old]
        return found.job_id
    if found.candidates:
        many = len(found.candidates) > data.PREFIX_CANDIDATES
        shown = found.candidates[: data.PREFIX_CANDIDATES]
        st.warning(
            f"{'More than ' if many else ''}{len(shown)} jobs have an id starting with "
            f"{ui.md_code(found.text)}: give more characters, or pick one:\n\n"
            + "\n".join(f"- [{i}]({ui.job_href(i)})" for i in shown)
        )
    else:
        st.error(f"No job opened: {ui.md_text(found.problem or 'no such job')}. It was asked for:")
        st.code(found.text, language=None)
    return None


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _worker(worker_id: Any, names: dict[str, str]) -> str:
    """A worker by its name (its id's first digits only tell two of one name apart)."""
    if not worker_id:
        return "—"
    wid = str(worker_id)
    name = names.get(wid)
    return f"{name} ({wid[:8]})" if name else f"unregistered worker {wid[:8]}"


def _attempt_title(entry: dict[str, Any]) -> str:
    """An expander label made only of numbers, a parsed time and the error escaped."""
    try:
        attempt = str(int(entry.get("attempt")))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        attempt = "?"
    try:
        at = ui.fmt_time(datetime.fromisoformat(str(entry.get("at"))))
    except ValueError:
        at = "time unknown"
    error = " ".join(str(entry.get("error") or "").split())[:150]
    return f"Attempt {attempt} · {at} · {ui.md_text(error)}"


def _detail(job_id: str) -> None:
    """The opened job: everything is about ``job_id``, and every button names it."""
    job = data.job(url, job_id)
    jid = str(job["id"])
    st.subheader(f"Job {jid}")
    h1, h2 = st.columns([6, 1])
    h1.markdown(f"[Link to this job]({ui.job_href(jid)}) · `{jid}`")
    h2.button("Close", key=f"jobs_close_{jid}", on_click=_open, args=(None,))
    partition = job.get("partition_key")
    m = iter(st.columns(5 if partition is None else 6))
    next(m).metric("Status", job["status"])
    next(m).metric("Type", ui.md_code(job["type"]))
    next(m).metric("Queue", ui.md_code(job["queue"]))
    if partition is not None:  # fair share: the job's partition (@job(partition_by=...))
        next(m).metric(
            "Partition",
            ui.md_code(partition),
            help=f"fair share partition of this job: {ui.md_code(partition)}",
        )
    next(m).metric("Priority", job["priority"])
    next(m).metric("Attempt", f"{job['attempt']}/{job['max_attempts']}")
    if job["cancel_requested_at"] is not None and job["status"] in LEASED:
        st.warning(f"Cancel requested at {ui.fmt_time(job['cancel_requested_at'])}")
    if job.get("progress") is not None:
        fraction = float(job["progress"])
        fraction = fraction / 100 if fraction > 1 else fraction
        st.progress(min(1.0, max(0.0, fraction)), text=f"Progress {fraction * 100:.0f} %")
        if job.get("progress_message"):
            st.text(str(job["progress_message"]))

    if admin:
        slots = iter(st.columns([1, 1, 1, 1, 3]))
        for op in ("cancel", "retry", "run_now", "delete"):
            if job["status"] in ALLOWED[op]:
                next(slots).button(
                    f"{PHRASES[op][0].capitalize()} job{PHRASES[op][1]}…",
                    key=f"job_{op}_{jid}",
                    help=f"{PHRASES[op][0].capitalize()} job {jid}{PHRASES[op][1]} (asks first)",
                    on_click=_ask,
                    args=(op, "job", [jid]),
                )
        pending = ss.get("jobs_confirm")
        if pending and pending["scope"] == "job" and pending["ids"] == [jid]:
            _confirmation(pending, "")
    else:
        st.caption("Read-only: cancelling, retrying, running now and deleting need the admin role.")

    now = datetime.now(UTC)
    finished = job.get("finished_at") or job.get("completed_at")
    timing = {
        "created": ui.fmt_when(job["created_at"], now),
        "scheduled (due)": ui.fmt_when(job["scheduled_at"], now),
        "dispatched": ui.fmt_when(job.get("dispatched_at"), now),
        "started (latest attempt)": ui.fmt_when(job.get("started_at"), now),
        "completed": ui.fmt_when(job.get("completed_at"), now),
        "finished": ui.fmt_when(job.get("finished_at"), now),
        "wait (due → start)": ui.fmt_seconds(_duration(job["scheduled_at"], job.get("started_at"))),
        "run time (latest attempt)": ui.fmt_seconds(
            _duration(
                job.get("started_at"),
                finished or (now if job["status"] == JobStatus.RUNNING else None),
            )
        ),
        "worker": _worker(job.get("worker_id"), _names()),
        "timeout": ui.fmt_seconds(job.get("timeout_seconds")),
        "idempotency key": job.get("idempotency_key") or "—",
    }
    left, right = st.columns(2)
    with left:
        st.markdown("**Timing**")
        st.dataframe(  # cells are text: nothing from the job is interpreted
            ui.frame([{"": k, "value": str(v)} for k, v in timing.items()]),
            hide_index=True,
            key=f"jobs_timing_{jid}",
        )
    with right:
        st.markdown("**Data**")
        st.json(ui.jsonable(job["data"]), expanded=True)
        st.markdown("**Result**")
        if job.get("result") is None:
            st.caption("no result")
        else:
            st.json(ui.jsonable(job["result"]), expanded=True)
    if job.get("last_error") and not job.get("errors"):
        st.markdown("**Last error**")
        st.code(str(job["last_error"]), language=None)
    _workflow(job)
    _log(job)
    errors = job.get("errors") or []
    st.markdown(f"**Errors ({len(errors)})**")
    if not errors:
        st.caption("no failed attempt")
    for entry in errors:
        with st.expander(_attempt_title(entry)):
            st.code(str(entry.get("traceback") or entry.get("error") or ""), language=None)
            if entry.get("worker"):
                st.text(
                    f"worker {_worker(entry['worker'], _names())} · {entry.get('kind', 'error')}"
                )


#: fill colour of a job in the workflow graph, by status
GRAPH_COLOURS = {
    "completed": "#c8e6c9",
    "failed": "#ffcdd2",
    "cancelled": "#e0e0e0",
    "running": "#bbdefb",
    "dispatched": "#bbdefb",
    "waiting": "#fff9c4",
}


def _dot_text(value: object) -> str:
    """A DOT string literal's content: nothing in it can end the literal or add markup."""
    return (
        "".join(ch for ch in str(value) if ch.isprintable())
        .replace("\\", "\\\\")
        .replace('"', '\\"')
    )


def _workflow(job: dict[str, Any]) -> None:
    """The job's place in its workflow: what it waits for and what waits for it, drawn as a
    graph coloured by status, and listed with links."""
    upstream = job.get("depends_on") or []
    downstream = job.get("dependents") or []
    if not upstream and not downstream:
        return
    st.markdown(f"**Workflow** · waits for {len(upstream)} · {len(downstream)} wait for it")
    jid = str(job["id"])

    def node(j: dict[str, Any], this: bool = False) -> str:
        status = str(j["status"])
        label = f"{str(j['id'])[:8]}\\n{_dot_text(j['type'])}\\n{status}"
        colour = GRAPH_COLOURS.get(status, "#ffffff")
        pen = ", penwidth=3" if this else ""
        return (
            f'"{j["id"]}" [label="{label}", style=filled, fillcolor="{colour}", '
            f'href="{ui.job_href(j["id"])}", target="_top"{pen}];'
        )

    lines = ["digraph workflow {", "rankdir=LR;", "node [shape=box, fontsize=10];"]
    lines.append(node(job, this=True))
    for dep in upstream:
        lines += [node(dep), f'"{dep["id"]}" -> "{jid}";']
    for dep in downstream:
        lines += [node(dep), f'"{jid}" -> "{dep["id"]}";']
    lines.append("}")
    st.graphviz_chart("\n".join(lines))
    rows = [
        {
            "direction": direction,
            "job": ui.job_href(dep["id"]),
            "type": str(dep["type"]),
            "status": str(dep["status"]),
            "counted as": str(dep.get("resolved") or "—"),
        }
        for direction, deps in (("waits for", upstream), ("waits for it", downstream))
        for dep in deps
    ]
    st.dataframe(
        ui.frame(rows),
        hide_index=True,
        key=f"jobs_workflow_{jid}",
        column_config={"job": st.column_config.LinkColumn("job", display_text=r"id=(.{8})")},
    )


def _log(job: dict[str, Any]) -> None:
    """The lines the job's handler logged (ctx.log), searchable, per attempt; read again at
    every refresh while the job runs."""
    jid = str(job["id"])
    c1, c2 = st.columns([3, 1])
    search = c1.text_input("Search the log", key=f"jobs_log_q_{jid}", max_chars=200)
    attempts = ["all attempts"] + [f"attempt {n}" for n in range(job["attempt"], 0, -1)]
    chosen = c2.selectbox("Attempt", attempts, key=f"jobs_log_attempt_{jid}")
    attempt = None if chosen == attempts[0] else int(chosen.split()[1])
    lines = data.job_log(url, jid, attempt=attempt, contains=search)
    st.markdown(f"**Log ({len(lines)} line(s){' matching' if search else ''})**")
    if not lines:
        st.caption("nothing logged" + (" that matches" if search else ""))
        return
    text = "\n".join(
        f"{line['at'].strftime('%H:%M:%S.%f')[:12]} {line['level']:7} "
        f"[{line['attempt']}] {line['message']}"
        for line in lines
    )
    st.code(text, language=None)


def _names() -> dict[str, str]:
    try:
        return data.worker_names(url)
    except Exception:  # names are a nicety: ids are shown without them
        return {}


def _live_page() -> None:
    with ui.guard("Jobs"):
        _page()


def _page() -> None:
    """Everything below the header; reruns alone every REFRESH_SECONDS while live."""
    for kind, text in ss.pop("jobs_flashes", []):
        getattr(st, kind)(text)
    if ss.pop("jobs_close", False):  # the opened job was deleted
        _open(None)
    filters = _filters_form()
    _counts(filters["statuses"])
    shown = _table(filters, int(ss.get("jobs_page_size") or PAGE_SIZES[1]))
    _ticked(shown)
    if admin:
        _bulk(filters)
    st.divider()
    job_id = _opened()
    pending = ss.get("jobs_confirm")
    if pending and pending["scope"] == "job" and pending["ids"] != [job_id]:
        ss.pop("jobs_confirm", None)  # it was asked under another job
    if job_id:
        with ui.guard("Job"):
            _detail(job_id)
    st.caption(
        f"Updated {datetime.now(UTC).strftime('%H:%M:%S')} UTC"
        + (f" · refreshes every {REFRESH_SECONDS} s" if live else " · live refresh paused")
    )


ui.page_header(
    "Jobs",
    "Newest first. Tick rows to act on them, or open one job by its id; "
    "the URL keeps the filters and the opened job.",
)
o1, o2, _ = st.columns([1, 1, 4])
live = o1.toggle(
    "Live refresh",
    value=True,
    key="jobs_live",
    persist_state="session",
    help=f"every {REFRESH_SECONDS} s",
)
relative = o2.toggle(
    "Relative times",
    value=True,
    key="jobs_relative",
    persist_state="session",
    help="times in the table as '3 minutes ago' (the opened job shows both)",
)
st.fragment(run_every=REFRESH_SECONDS if live else None)(_live_page)()
