"""Workers: every registered worker with its heartbeat age and current jobs; stale or stopped
workers flagged, and the queues that are paused (pausing and resuming is on the Queues page).

The running jobs are read as ids, types and worker ids only (``data.running_jobs``), never
their payloads; names and other worker text are shown in a table (text), never as Markdown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from console import auth, data, ui
from db.settings import get_settings

REFRESH_SECONDS = 3

user = auth.require_user()
url = data.ledger_url()
stale_after = get_settings().queue_stale_seconds

ui.page_header(
    "Workers",
    f"A worker whose heartbeat is older than {stale_after:g} s (QUEUE_STALE_SECONDS) is "
    "flagged stale; the maintainer rescues its running jobs.",
)
c1, c2 = st.columns(2)
hide_stopped = c1.toggle("Hide stopped workers", key="workers_hide_stopped")
paused = c2.toggle("Pause live refresh", key="workers_paused")


def _state(w: dict[str, Any], age: float | None) -> str:
    if w["status"] == "stopped":
        return "stopped"
    if age is not None and age > stale_after:
        return "STALE"
    if w["status"] == "stopping":
        return "stopping"
    return "live"


def live() -> None:
    rows = data.workers(url)
    running = data.running_jobs(url)
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for job in running:
        if job.get("worker_id") is not None:
            by_worker.setdefault(str(job["worker_id"]), []).append(job)
    table = []
    for w in rows:
        now = w.get("now") or datetime.now(UTC)
        age = (now - w["last_heartbeat"]).total_seconds() if w.get("last_heartbeat") else None
        state = _state(w, age)
        if hide_stopped and state == "stopped":
            continue
        current = by_worker.get(str(w["id"]), [])
        table.append(
            {
                "state": state,
                "name": w["name"],
                "host": w["hostname"],
                "pid": w["pid"],
                "queues": ", ".join(w.get("queues") or []),
                "concurrency": w["concurrency"],
                "kind": w.get("worker_kind"),
                "heartbeat age": ui.fmt_seconds(age),
                "running jobs": len(current),
                "current jobs": ", ".join(f"{j['type']} {str(j['id'])[:8]}" for j in current[:5])
                + (" …" if len(current) > 5 else ""),
                "processed": w["jobs_processed"],
                "failed": w["jobs_failed"],
                "started": ui.fmt_time(w.get("started_at")),
            }
        )
    live_count = sum(1 for r in table if r["state"] == "live")
    stale_count = sum(1 for r in table if r["state"] == "STALE")
    m = st.columns(4)
    m[0].metric("Live workers", live_count)
    m[1].metric("Stale workers", stale_count)
    m[2].metric("Live slots", sum(r["concurrency"] for r in table if r["state"] == "live"))
    m[3].metric("Running jobs", len(running))
    if stale_count:
        st.warning(f"{stale_count} worker(s) stopped heartbeating: their jobs will be rescued.")
    if table:
        st.dataframe(ui.frame(table), hide_index=True, key="workers_table")
    else:
        st.info("No workers registered. Start one with `queuectl worker`.")
    st.caption(
        f"Updated {ui.fmt_time(datetime.now(UTC))}"
        + ("" if paused else f" · refreshes every {REFRESH_SECONDS} s")
    )


def _live_guarded() -> None:
    with ui.guard("Workers"):
        live()


st.fragment(run_every=None if paused else REFRESH_SECONDS)(_live_guarded)()

# --- which queues are paused (pause and resume on the Queues page) ---------------------------
st.subheader("Paused queues")
controls: list[dict[str, Any]] = []
with ui.guard("Queue controls"):
    controls = data.queue_controls(url)
paused_now = [c for c in controls if c.get("paused")]
if paused_now:
    st.dataframe(
        ui.frame(
            [
                {
                    "queue": c["queue_name"],
                    "since": ui.fmt_time(c.get("paused_at")),
                    "by": c.get("paused_by") or "",
                    "reason": c.get("reason") or "",
                }
                for c in paused_now
            ]
        ),
        hide_index=True,
        key="controls_table",
    )
else:
    st.caption("No queue is paused.")
st.page_link("views/queues.py", label="Pause or resume a queue on the Queues page")
