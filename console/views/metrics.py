"""Metrics: throughput, wait and processing percentiles, error rate, depth and utilization per
queue or per job type, from the metrics rollups (never from scanning the jobs table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from plotly.colors import qualitative

from console import auth, csv_export, data, ui

RANGES: dict[str, timedelta] = {
    "Last 15 minutes": timedelta(minutes=15),
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}
RESOLUTIONS = ("auto", "minute", "hour", "day")
PERCENTILES = ("p50", "p95", "p99")

auth.require_user()
url = data.ledger_url()
ui.page_header("Metrics", "Per-minute rollups, merged into hours and days for longer ranges.")

type_names: list[str] = []
queue_names: list[str] = []
with ui.guard("Filters"):
    type_names = [t.name for t in data.job_types()]
    queue_names = data.known_queues(url)

c1, c2, c3, c4, c5 = st.columns(5)
range_label = c1.selectbox("Time range", list(RANGES), index=1, key="metrics_range")
resolution_choice = c2.selectbox("Resolution", RESOLUTIONS, key="metrics_resolution")
by = c3.radio("Break down by", ("queue", "type"), horizontal=True, key="metrics_by")
queue_choice = c4.selectbox(
    "Queue", ["(all)", *queue_names], key="metrics_queue", accept_new_options=True
)
type_choice = c5.selectbox("Job type", ["(all)", *type_names], key="metrics_type")

span = RANGES[range_label]
resolution = resolution_choice
if resolution == "auto":
    resolution = (
        "minute" if span <= timedelta(hours=6) else "hour" if span <= timedelta(days=7) else "day"
    )
if resolution == "minute" and span > timedelta(days=2):
    st.info("A minute resolution over more than two days is heavy; showing hours instead.")
    resolution = "hour"
end = data.floor_time(datetime.now(UTC), 10) + timedelta(seconds=10)
start = end - span
group = "queue_name" if by == "queue" else "job_type"


#: line styles of the percentile traces (plotly express's default dash sequence)
DASHES = {"p50": "solid", "p95": "dot", "p99": "dash"}


def _colors() -> list[str]:
    """The active plotly template's colorway (what plotly express would use)."""
    name = pio.templates.default
    colorway = pio.templates[name].layout.colorway if name else None
    return list(colorway or qualitative.Plotly)


def _figure(
    traces: list[dict[str, Any]], title: str, y_title: str, legend: str = group
) -> go.Figure:
    """One chart, laid out like ``plotly.express.line`` (title, axis and legend titles).

    Traces are plain dicts of numpy arrays, validated once by the figure: ``px.line`` regroups
    the frame with pandas for every chart, which was most of a 30-day render
    (docs/benchmarks.md, "Console first render")."""
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": title},
            "xaxis": {"title": {"text": "bucket"}},
            "yaxis": {"title": {"text": y_title}},
            "legend": {"title": {"text": legend}, "tracegroupgap": 0},
            "margin": {"t": 60},
        },
    )


def _trace(
    part: pd.DataFrame,
    column: str,
    name: str,
    color: str,
    *,
    dash: str = "solid",
    hover: str = "",
    y_label: str = "",
) -> dict[str, Any]:
    """One line of a chart: ``part``'s ``column`` over its buckets."""
    hover = hover or f"{group}={name}"
    return {
        "type": "scatter",
        "x": part["bucket"].dt.tz_convert(None).to_numpy(),  # UTC, as px.line sends it
        "y": part[column].to_numpy(dtype=float),
        "name": name,
        "legendgroup": name,
        "showlegend": True,  # also for a single trace, like px.line
        "mode": "lines",
        "line": {"color": color, "dash": dash},
        "hovertemplate": f"{hover}<br>bucket=%{{x}}<br>{y_label or column}=%{{y}}<extra></extra>",
    }


def _by_group(df: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """(group, its rows with a value in ``column``), groups in order of first appearance."""
    shown = df[df[column].notna()]
    return [(str(name), part) for name, part in shown.groupby(group, sort=False)]


def _percentiles(df: pd.DataFrame, prefix: str, title: str) -> None:
    colors = _colors()
    order = {name: i for i, name in enumerate(dict.fromkeys(df[group]))}
    traces = [
        _trace(
            part,
            f"{prefix}_{p}",
            f"{name}, {p}",
            colors[order[name] % len(colors)],
            dash=dash,
            hover=f"{group}={name}<br>percentile={p}",
            y_label="ms",
        )
        for p, dash in DASHES.items()
        for name, part in _by_group(df, f"{prefix}_{p}")
    ]
    if not traces:
        st.caption(f"{title}: no data")
        return
    fig = _figure(traces, title, "ms", legend=f"{group}, percentile")
    st.plotly_chart(fig, key=f"chart_{prefix}")


def _line(df: pd.DataFrame, column: str, title: str, key: str, percent: bool = False) -> None:
    colors = _colors()
    order = {name: i for i, name in enumerate(dict.fromkeys(df[group]))}
    traces = [
        _trace(part, column, name, colors[order[name] % len(colors)])
        for name, part in _by_group(df, column)
    ]
    if not traces:
        st.caption(f"{title}: no data")
        return
    fig = _figure(traces, title, column)
    if percent:
        fig.update_yaxes(tickformat=".0%")
    st.plotly_chart(fig, key=key)


rows: list[dict] = []
with ui.guard("Metrics"):
    rows = data.time_series(
        url,
        start=start,
        end=end,
        resolution=resolution,
        by=by,
        queue=None if queue_choice == "(all)" else queue_choice,
        job_type=None if type_choice == "(all)" else type_choice,
    )
    if not rows:
        st.info("No metrics in this range. The maintainer rolls up finished jobs every minute.")
    else:
        df = pd.DataFrame(rows)
        df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
        df[group] = df[group].fillna("(all)").astype(str)
        numeric = [c for c in df.columns if c not in ("bucket", "queue_name", "job_type")]
        df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
        df = df.sort_values(["bucket", group])
        st.caption(
            f"{len(df):,} points · {resolution} buckets · {ui.fmt_time(start)} → {ui.fmt_time(end)}"
        )
        left, right = st.columns(2)
        with left:
            _line(df, "throughput", "Throughput (jobs/s)", "chart_throughput")
        with right:
            _line(df, "error_rate", "Error rate", "chart_error_rate", percent=True)
        left, right = st.columns(2)
        with left:
            _percentiles(df, "wait", "Wait time p50 / p95 / p99 (ms)")
        with right:
            _percentiles(df, "processing", "Processing time p50 / p95 / p99 (ms)")
        left, right = st.columns(2)
        with left:
            _line(df, "depth", "Depth (jobs waiting)", "chart_depth")
        with right:
            _line(df, "utilization", "Utilization (busy / available slots)", "chart_util", True)
        st.download_button(
            "Download CSV of this data",
            csv_export.to_csv(df),
            file_name=f"metrics-{by}-{resolution}-{start:%Y%m%dT%H%M}.csv",
            mime="text/csv",
            key="metrics_csv",
            on_click="ignore",
        )
        with st.expander("Data table"):
            st.dataframe(df, hide_index=True, key="metrics_table")
