"""Capacity: utilization now, and how many workers a queue needs to keep its p95 wait under a
target, with a what-if slider for more (or less) load. Each queue is credited only with (its
share of) the slots of the workers serving it; the modelled p95 wait stands next to the
measured one; with too few finished jobs the page says "not enough data"."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from console import auth, data, ui

WHAT_IF_LOADS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
MIN_JOBS = 20  # metrics.read.capacity.MIN_JOBS_FOR_CAPACITY
VERDICT_WORDS = {
    "info": "not enough data",
    "error": "saturated",
    "warning": "short of slots",
    "success": "meets target",
}

auth.require_user()
url = data.ledger_url()
ui.page_header(
    "Capacity",
    "Arrival rate and service time measured over a window; a queueing model gives the wait.",
)

queues: list[str] = []
with ui.guard("Queues"):
    queues = data.known_queues(url)
if not queues:
    st.info("No queues yet.")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
queue = c1.selectbox("Queue", queues, key="capacity_queue", accept_new_options=True)
window = c2.select_slider(
    "Measured over (minutes)", options=[15, 30, 60, 180, 360, 1440], value=60, key="capacity_window"
)
target = c3.number_input(
    "Target p95 wait (s)",
    min_value=0.1,
    max_value=3600.0,
    value=5.0,
    step=0.5,
    key="capacity_target",
)
load = c4.slider(
    "What if the load were x",
    min_value=0.5,
    max_value=5.0,
    value=1.0,
    step=0.1,
    key="capacity_load",
)


def _cap(q: str, load_factor: float) -> dict[str, Any]:
    return data.capacity(
        url,
        queue=q,
        window_minutes=int(window),
        target_p95_wait_seconds=float(target),
        load_factor=round(float(load_factor), 2),
    )


def slots_text(seen: dict[str, Any]) -> str:
    return f"{seen['credited_slots']:.1f} of {seen['serving_slots']}"


def verdict(cap: dict[str, Any], seen: dict[str, Any], load_factor: float) -> tuple[str, str]:
    """(kind, text): not enough data, saturated, short of slots, the measured wait above the
    target, or meeting it (modelled and, at the measured load, measured)."""
    q = ui.md_code(cap["queue"])
    if not seen["enough_data"]:
        return (
            "info",
            f"Not enough data for {q}: {seen['finished_jobs']} job(s) finished in the last "
            f"{window} minutes (the model needs at least {MIN_JOBS}).",
        )
    util, needed, slots = cap.get("utilization"), cap.get("workers_needed"), cap["live_slots"]
    if util is not None and util >= 1:
        return (
            "error",
            f"At x{load_factor:g} load, {q} is saturated: work arrives faster than its "
            f"{seen['credited_slots']:.1f} credited slot(s) finish it; the backlog grows.",
        )
    if needed is not None and needed > slots:
        return (
            "warning",
            f"{q} needs {needed} worker slot(s) for a p95 wait under {target:g} s at "
            f"x{load_factor:g}; it is credited with {seen['credited_slots']:.1f}.",
        )
    measured = seen["measured_p95_wait_seconds"]
    if load_factor == 1 and measured is not None and measured > target:
        return (
            "warning",
            f"The model says {q} meets the {target:g} s target, but its jobs waited "
            f"{ui.fmt_seconds(measured)} (p95, measured): the model assumes random arrivals "
            "and immediate dispatch, so trust the measurement (bursts, a paused queue, "
            "slow dispatch or rate limits).",
        )
    if needed is None:
        return ("info", f"No model for {q}: its service time is unknown.")
    return ("success", f"{q} meets the {target:g} s p95 wait target at x{load_factor:g} load.")


enough = False
with ui.guard("Capacity"):
    cap = _cap(queue, load)
    seen = data.capacity_measured(url, queue=queue, window_minutes=int(window))
    enough = seen["enough_data"]
    m = st.columns(4) + st.columns(4)
    m[0].metric("Arrivals", ui.fmt_rate(cap.get("arrival_rate")), border=True)
    m[1].metric("Mean service time", ui.fmt_seconds(cap.get("mean_service_seconds")), border=True)
    m[2].metric(
        "Worker slots credited",
        slots_text(seen),
        help="the live slots of the workers serving this queue; a worker serving several "
        "queues shares its slots between them by the handler time each used",
        border=True,
    )
    m[3].metric(
        "Finished jobs", f"{seen['finished_jobs']:,}", help=f"last {window} min", border=True
    )
    m[4].metric(f"Utilization at x{load:g}", ui.fmt_pct(cap.get("utilization")), border=True)
    m[5].metric(
        f"p95 wait modelled at x{load:g}",
        ui.fmt_seconds(cap.get("p95_wait_seconds")) if enough else "—",
        help="M/M/c (Erlang C) with the credited slots",
        border=True,
    )
    m[6].metric(
        "p95 wait measured",
        ui.fmt_seconds(seen["measured_p95_wait_seconds"]),
        help=f"what the jobs of the last {window} minutes waited (due → start)",
        border=True,
    )
    needed = cap.get("workers_needed")
    m[7].metric(
        f"Slots needed for p95 ≤ {target:g} s",
        "—" if needed is None or not enough else needed,
        help="worker slots (the sum of worker concurrency) the M/M/c model needs",
        border=True,
    )
    kind, text = verdict(cap, seen, load)
    getattr(st, kind)(text)

with ui.guard("What-if"):
    curve = [{**_cap(queue, f), "load": f} for f in WHAT_IF_LOADS] if enough else []
    df = pd.DataFrame(curve)
    if not df.empty and df["workers_needed"].notna().any():  # needs a measured service time
        fig = px.line(
            df,
            x="load",
            y="workers_needed",
            markers=True,
            title=f"Worker slots needed on {queue} for p95 wait ≤ {target:g} s",
            labels={"load": "load factor (x measured arrivals)", "workers_needed": "slots"},
        )
        fig.add_vline(x=load, line_dash="dot")
        st.plotly_chart(fig, key="capacity_curve")

with ui.guard("All queues"):
    st.subheader(f"Every queue at x{load:g} load")
    table = []
    for q in queues:
        c = _cap(q, load)
        measured = data.capacity_measured(url, queue=q, window_minutes=int(window))
        kind, text = verdict(c, measured, load)
        table.append(
            {
                "queue": q,
                "arrivals": ui.fmt_rate(c.get("arrival_rate")),
                "mean service": ui.fmt_seconds(c.get("mean_service_seconds")),
                "slots credited": slots_text(measured),
                "utilization": ui.fmt_pct(c.get("utilization")),
                "p95 wait modelled": ui.fmt_seconds(c.get("p95_wait_seconds"))
                if measured["enough_data"]
                else "—",
                "p95 wait measured": ui.fmt_seconds(measured["measured_p95_wait_seconds"]),
                "slots needed": c.get("workers_needed") if measured["enough_data"] else None,
                "verdict": "measured wait above target"
                if kind == "warning" and "measured" in text
                else VERDICT_WORDS.get(kind, "no model"),
            }
        )
    st.dataframe(ui.frame(table), hide_index=True, key="capacity_table")
