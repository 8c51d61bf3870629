"""Metrics: throughput, wait and processing percentiles, error rate, depth and utilization per
queue or per job type, from the metrics rollups (never from scanning the jobs table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from console import auth, data, ui

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


def _percentiles(df: pd.DataFrame, prefix: str, title: str) -> None:
    cols = [f"{prefix}_{p}" for p in PERCENTILES]
    long = df.melt(
        id_vars=["bucket", group], value_vars=cols, var_name="percentile", value_name="ms"
    ).dropna(subset=["ms"])
    if long.empty:
        st.caption(f"{title}: no data")
        return
    long["percentile"] = long["percentile"].str.replace(f"{prefix}_", "", regex=False)
    fig = px.line(
        long, x="bucket", y="ms", color=group, line_dash="percentile", title=title, markers=False
    )
    st.plotly_chart(fig, key=f"chart_{prefix}")


def _line(df: pd.DataFrame, column: str, title: str, key: str, percent: bool = False) -> None:
    shown = df.dropna(subset=[column])
    if shown.empty:
        st.caption(f"{title}: no data")
        return
    fig = px.line(shown, x="bucket", y=column, color=group, title=title)
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
            df.to_csv(index=False).encode("utf-8"),
            file_name=f"metrics-{by}-{resolution}-{start:%Y%m%dT%H%M}.csv",
            mime="text/csv",
            key="metrics_csv",
            on_click="ignore",
        )
        with st.expander("Data table"):
            st.dataframe(df, hide_index=True, key="metrics_table")
