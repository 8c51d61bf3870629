"""Capacity: utilization now, and how many workers a queue needs to keep its p95 wait under a
target, with a what-if slider for more (or less) load."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from console import auth, data, ui

WHAT_IF_LOADS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)

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


with ui.guard("Capacity"):
    cap = _cap(queue, load)
    m = st.columns(3) + st.columns(3)
    m[0].metric("Arrivals", ui.fmt_rate(cap.get("arrival_rate")), border=True)
    m[1].metric("Mean service time", ui.fmt_seconds(cap.get("mean_service_seconds")), border=True)
    m[2].metric("Live worker slots", cap.get("live_slots") or 0, border=True)
    m[3].metric(f"Utilization at x{load:g}", ui.fmt_pct(cap.get("utilization")), border=True)
    m[4].metric(f"p95 wait at x{load:g}", ui.fmt_seconds(cap.get("p95_wait_seconds")), border=True)
    needed = cap.get("workers_needed")
    m[5].metric(
        f"Slots needed for p95 ≤ {target:g} s",
        "—" if needed is None else needed,
        help="worker slots (the sum of worker concurrency) the M/M/c model needs",
        border=True,
    )
    util = cap.get("utilization")
    slots = cap.get("live_slots") or 0
    if util is not None and util >= 1:
        st.error(
            f"At x{load:g} load, {queue} is saturated: work arrives faster than "
            f"{slots} slot(s) finish it, so the backlog grows without bound."
        )
    elif needed is not None and needed > slots:
        st.warning(
            f"{queue} needs {needed} worker slot(s) for a p95 wait under {target:g} s; "
            f"it has {slots}."
        )
    elif needed is not None:
        st.success(f"{queue} meets the {target:g} s p95 wait target at x{load:g} load.")

with ui.guard("What-if"):
    curve = [{**_cap(queue, f), "load": f} for f in WHAT_IF_LOADS]
    df = pd.DataFrame(curve)
    if df["workers_needed"].notna().any():
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
        table.append(
            {
                "queue": q,
                "arrivals": ui.fmt_rate(c.get("arrival_rate")),
                "mean service": ui.fmt_seconds(c.get("mean_service_seconds")),
                "live slots": c.get("live_slots"),
                "utilization": ui.fmt_pct(c.get("utilization")),
                "p95 wait": ui.fmt_seconds(c.get("p95_wait_seconds")),
                "slots needed": c.get("workers_needed"),
            }
        )
    st.dataframe(ui.frame(table), hide_index=True, key="capacity_table")
