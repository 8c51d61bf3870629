"""Queues: per queue its waiting, scheduled and running jobs, failures of the last hour, p95
wait, throughput, whether it is paused, the live workers serving it and the limits of its job
types; admins pause or resume each queue after a confirmation that names it (audited). A queue
with partitioned jobs (fair share, ``@job(partition_by=...)``) can be broken down by partition:
its top partitions, most waiting first (``metrics.partitions``).

The counts are bounded index reads (exact up to ``data.COUNT_CAP`` jobs of a status, then a
lower bound), the rest comes from the rollups and the workers table (``queue_summary``), so
the table costs the same at any number of jobs. The breakdown by partition reads the chosen
queue's partitioned jobs through their partial indexes: it grows with that queue's partitioned
backlog, not with the ledger (cached 10 s)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from console import actions, auth, data, ui

REFRESH_SECONDS = 5
COLUMNS = (
    "queue",
    "state",
    "waiting",
    "scheduled",
    "running",
    "blocked",
    "failed (1 h)",
    "p95 wait",
    "throughput",
    "workers",
    "slots",
    "limits",
)
#: partitions shown per queue, most waiting first
PARTITIONS_SHOWN = 20
PARTITION_COLUMNS = (
    "type",
    "partition",
    "waiting",
    "running",
    "completed (1 h)",
    "failed (1 h)",
    "oldest wait",
)

user = auth.require_user()
admin = user["role"] == "admin"
url = data.ledger_url()
ss = st.session_state


def _count(n: int, exact: bool) -> str:
    return f"{n:,}" if exact else f"{n:,}+"


def _failed(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _paused(url: str) -> dict[str, dict[str, Any]]:
    return {c["queue_name"]: c for c in data.queue_controls(url) if c.get("paused")}


def table_rows(url: str) -> list[dict[str, Any]]:
    """The rows of the table, in words (counts that are lower bounds end in ``+``)."""
    paused = _paused(url)
    limits = data.queue_limits()
    out = []
    for r in data.queue_summary(url):
        name = r["queue"]
        control = paused.get(name)
        out.append(
            {
                "queue": name,
                "state": "PAUSED" if control else "dispatching",
                "waiting": _count(r["waiting"], r["waiting_exact"]),
                "scheduled": _count(r["scheduled"], r["scheduled_exact"]),
                "running": _count(r["running"], r["running_exact"]),
                **({"blocked": _count(r["blocked"], r["blocked_exact"])} if "blocked" in r else {}),
                "failed (1 h)": "—"
                if r["failed_last_hour"] is None
                else f"{r['failed_last_hour']:,}",
                "p95 wait": ui.fmt_ms(r["p95_wait_ms"]),
                "throughput": ui.fmt_rate(r["throughput_per_s"]),
                "workers": r["workers"],
                "slots": r["slots"],
                "limits": "; ".join(limits.get(name, [])) or "—",
            }
        )
    return out


def partition_rows(url: str, queue: str) -> tuple[list[dict[str, Any]], int]:
    """The top ``PARTITIONS_SHOWN`` partitions of ``queue`` as table rows, and how many
    partitions it has in all."""
    found = data.partition_breakdown(url, queue, PARTITIONS_SHOWN)
    rows = [
        {
            "type": r["type"],
            "partition": r["partition"],
            "waiting": r["waiting"],
            "running": r["running"],
            "completed (1 h)": r["completed_1h"],
            "failed (1 h)": r["failed_1h"],
            "oldest wait": ui.fmt_seconds(r["oldest_wait_seconds"]),
        }
        for r in found.rows
    ]
    return rows, found.total_partitions


def partitions(names: list[str]) -> None:
    """The breakdown by partition of one queue (chosen among those with partitioned jobs)."""
    queues = data.partitioned_queues(url, tuple(names))
    if not queues:
        return
    st.subheader("Partitions")
    queue = st.selectbox(
        "Queue to break down by partition",
        queues,
        key="queues_partitions_queue",
        help="queues with partitioned jobs (fair share: @job(partition_by=...))",
    )
    if queue is None:
        return
    rows, total = partition_rows(url, queue)
    if not rows:
        st.info(
            f"No partitioned job of queue {ui.md_code(queue)} is waiting, running or finished "
            "in the last hour."
        )
        return
    st.dataframe(
        ui.frame(rows, list(PARTITION_COLUMNS)),
        hide_index=True,
        key="queues_partitions_table",
        column_config={
            "partition": st.column_config.TextColumn(help="the job's partition key"),
            "waiting": st.column_config.NumberColumn(
                help="queued: due, waiting for the dispatcher's fair share"
            ),
            "running": st.column_config.NumberColumn(
                help="sent to a worker or running (what a per-partition concurrency counts)"
            ),
            "completed (1 h)": st.column_config.NumberColumn(help="completed in the last hour"),
            "failed (1 h)": st.column_config.NumberColumn(help="failed in the last hour"),
            "oldest wait": st.column_config.TextColumn(
                help="how long its oldest queued job has been due"
            ),
        },
    )
    shown = (
        f"Top {len(rows)} of {total:,} partitions"
        if total > len(rows)
        else f"{total:,} partition{'s' if total != 1 else ''}"
    )
    st.caption(
        f"{shown} of queue {ui.md_code(queue)}, most waiting first, then most running. "
        "Scheduled and retrying jobs (not due yet) are not counted."
    )


def _ask(op: str, queue: str) -> None:
    ss["queues_confirm"] = {"op": op, "queue": queue}


def _dismiss() -> None:
    ss.pop("queues_confirm", None)


def _do(op: str, queue: str, was_paused: bool) -> None:
    """The confirmed pause or resume of exactly ``queue``."""
    ss.pop("queues_confirm", None)
    try:
        if op == "pause":
            reason = str(ss.get(f"queues_reason_{queue}") or "").strip()
            taken_back = actions.pause_queue(queue, reason or None)
            ss["queues_flash"] = (
                "success",
                f"Queue {ui.md_code(queue)} paused ({taken_back} dispatched job(s) taken back).",
            )
        else:
            actions.resume_queue(queue, was_paused=was_paused)
            ss["queues_flash"] = ("success", f"Queue {ui.md_code(queue)} resumed.")
    except actions.ActionError as exc:
        ss["queues_flash"] = ("error", ui.md_text(str(exc)))


def _confirmation(op: str, queue: str, was_paused: bool) -> None:
    if op == "pause":
        st.warning(
            f"Pause queue {ui.md_code(queue)}? Its jobs stay queued until it is resumed; jobs "
            "already sent to Redis that no worker has taken are taken back; running jobs finish."
        )
        st.text_input("Reason (optional)", key=f"queues_reason_{queue}", max_chars=500)
    else:
        st.warning(f"Resume queue {ui.md_code(queue)}? Its queued jobs are dispatched again.")
    y, n, _ = st.columns([2, 1, 4])
    y.button(
        f"Yes, {op} {queue}",
        key=f"queues_yes_{op}_{queue}",
        type="primary",
        on_click=_do,
        args=(op, queue, was_paused),
    )
    n.button("No", key=f"queues_no_{queue}", on_click=_dismiss)


def controls(rows: list[dict[str, Any]]) -> None:
    """One line per queue with its Pause… or Resume… button (admins)."""
    st.subheader("Pause or resume")
    pending = ss.get("queues_confirm")
    for row in rows:
        name, paused = row["queue"], row["state"] == "PAUSED"
        op = "resume" if paused else "pause"
        c1, c2, c3 = st.columns([3, 2, 2])
        c1.markdown(ui.md_code(name))
        c2.caption("paused" if paused else "dispatching")
        c3.button(
            f"{op.capitalize()} {name}…",
            key=f"queues_{op}_{name}",
            help=f"{op.capitalize()} queue {name} (asks first)",
            on_click=_ask,
            args=(op, name),
        )
        if pending and pending["queue"] == name:
            if pending["op"] != op:  # the queue changed state meanwhile: ask again
                _dismiss()
            else:
                _confirmation(op, name, paused)


def live() -> None:
    rows = table_rows(url)
    if not rows:
        st.info("No queue is declared yet.")
        return
    columns = [c for c in COLUMNS if c != "blocked" or "blocked" in rows[0]]
    st.dataframe(
        ui.frame(rows, columns),
        hide_index=True,
        key="queues_table",
        column_config={
            "waiting": st.column_config.TextColumn(help="queued or sent to a worker"),
            "scheduled": st.column_config.TextColumn(
                help="scheduled or retrying: waiting for their due time"
            ),
            "blocked": st.column_config.TextColumn(
                help="held back until the jobs they depend on end (status waiting)"
            ),
            "failed (1 h)": st.column_config.TextColumn(
                help="jobs that failed in the last hour (rollups)"
            ),
            "p95 wait": st.column_config.TextColumn(help="due → start, last 15 minutes"),
            "throughput": st.column_config.TextColumn(help="finished jobs, last 5 minutes"),
            "workers": st.column_config.NumberColumn(help="live workers serving the queue"),
            "slots": st.column_config.NumberColumn(help="their concurrency, summed"),
            "limits": st.column_config.TextColumn(
                help="concurrency and rate limits of the queue's job types", width="large"
            ),
        },
    )
    st.caption(
        f"Counts are exact up to {data.COUNT_CAP:,} jobs of a status; a count ending in + is "
        f"at least that many. Updated {ui.fmt_time(datetime.now(UTC))}"
        + (f" · refreshes every {REFRESH_SECONDS} s" if live_on else " · live refresh paused")
    )
    with ui.guard("Partitions"):  # the table above stays whatever happens here
        partitions([r["queue"] for r in rows])


def _live_guarded() -> None:
    with ui.guard("Queues"):
        live()


ui.page_header("Queues", "Every queue: what waits, what runs, how fast, who serves it.")
if flash := ss.pop("queues_flash", None):
    getattr(st, flash[0])(flash[1])
live_on = st.toggle("Live refresh", value=True, key="queues_live", persist_state="session")
st.fragment(run_every=REFRESH_SECONDS if live_on else None)(_live_guarded)()
if admin:
    with ui.guard("Pause or resume"):
        controls(table_rows(url))
else:
    st.caption("Read-only: pausing and resuming a queue need the admin role.")
