"""Metrics: throughput, wait and processing percentiles, error rate, depth and utilization per
queue or per job type, from the metrics rollups (never from scanning the jobs table).

A preset or custom (UTC) time range, optional live refresh, the percentiles to draw; at most
``MAX_SERIES`` series per chart (the busiest, the rest summed up as "other"); a queue's depth
is drawn from its first activity on; axis titles say what is measured and in which unit."""

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
CUSTOM = "Custom range (UTC)…"
#: the rollups are kept this long (QUEUE_METRICS_RETENTION_DAYS' default)
MAX_SPAN = timedelta(days=90)
RESOLUTIONS = ("auto", "minute", "hour", "day")
PERCENTILES = ("p50", "p95", "p99")
#: series per chart: the busiest MAX_SERIES - 1, the rest as one "other"
MAX_SERIES = 8
LIVE_SECONDS = 10
TIME_AXIS = "time (UTC)"

auth.require_user()
url = data.ledger_url()
ui.page_header("Metrics", "Per-minute rollups, merged into hours and days for longer ranges.")

type_names: list[str] = []
queue_names: list[str] = []
with ui.guard("Filters"):
    type_names = [t.name for t in data.job_types()]
    queue_names = data.known_queues(url)

c1, c2, c3, c4, c5 = st.columns(5)
range_label = c1.selectbox("Time range", [*RANGES, CUSTOM], index=1, key="metrics_range")
resolution_choice = c2.selectbox("Resolution", RESOLUTIONS, key="metrics_resolution")
by = c3.radio("Break down by", ("queue", "type"), horizontal=True, key="metrics_by")
queue_choice = c4.selectbox(
    "Queue", ["(all)", *queue_names], key="metrics_queue", accept_new_options=True
)
type_choice = c5.selectbox("Job type", ["(all)", *type_names], key="metrics_type")
o1, o2 = st.columns([3, 1])
chosen_percentiles = o1.multiselect(
    "Percentiles", PERCENTILES, default=list(PERCENTILES), key="metrics_percentiles"
)
live = o2.toggle(
    "Live refresh",
    value=False,
    key="metrics_live",
    help=f"redraw every {LIVE_SECONDS} s with the newest rollups (preset ranges)",
)


def custom_range() -> tuple[datetime, datetime] | None:
    """The custom range's [start, end) from four UTC fields; None (with a message under the
    fields) when it is empty, reversed or longer than the rollups are kept."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    st.session_state.setdefault("metrics_from_day", (now - timedelta(hours=1)).date())
    st.session_state.setdefault("metrics_from_time", (now - timedelta(hours=1)).time())
    st.session_state.setdefault("metrics_to_day", now.date())
    st.session_state.setdefault("metrics_to_time", now.time())
    f1, f2, t1, t2 = st.columns(4)
    from_day = f1.date_input("From (UTC date)", key="metrics_from_day")
    from_time = f2.time_input("From (UTC time)", key="metrics_from_time", step=60)
    to_day = t1.date_input("To (UTC date)", key="metrics_to_day")
    to_time = t2.time_input("To (UTC time)", key="metrics_to_time", step=60)
    if not (from_day and from_time and to_day and to_time):
        st.error("Choose both ends of the range.")
        return None
    first = datetime.combine(from_day, from_time, tzinfo=UTC)
    last = datetime.combine(to_day, to_time, tzinfo=UTC)
    if last <= first:
        st.error("The end of the range must come after its start.")
        return None
    if last - first > MAX_SPAN:
        st.error(f"A range spans at most {MAX_SPAN.days} days (how long rollups are kept).")
        return None
    return first, last


if range_label == CUSTOM:
    chosen = custom_range()
    if chosen is None:
        st.stop()
    start, end = chosen
    span = end - start
else:
    span = RANGES[range_label]
    end = data.floor_time(datetime.now(UTC), 10) + timedelta(seconds=10)
    start = end - span
resolution = resolution_choice
if resolution == "auto":
    resolution = (
        "minute" if span <= timedelta(hours=6) else "hour" if span <= timedelta(days=7) else "day"
    )
if resolution == "minute" and span > timedelta(days=2):
    st.info("A minute resolution over more than two days is heavy; showing hours instead.")
    resolution = "hour"
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
            "xaxis": {"title": {"text": TIME_AXIS}},
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
        "hovertemplate": f"{hover}<br>%{{x}} UTC<br>{y_label or column}=%{{y}}<extra></extra>",
    }


def _by_group(df: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """(group, its rows with a value in ``column``), groups in order of first appearance."""
    shown = df[df[column].notna()]
    return [(str(name), part) for name, part in shown.groupby(group, sort=False)]


def _percentiles(df: pd.DataFrame, prefix: str, title: str, y_title: str) -> None:
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
        if p in chosen_percentiles
        for name, part in _by_group(df, f"{prefix}_{p}")
    ]
    if not traces:
        st.caption(f"{title}: no data")
        return
    fig = _figure(traces, title, y_title, legend=f"{group}, percentile")
    st.plotly_chart(fig, key=f"chart_{prefix}")


def _line(
    df: pd.DataFrame, column: str, title: str, key: str, y_title: str, percent: bool = False
) -> None:
    colors = _colors()
    order = {name: i for i, name in enumerate(dict.fromkeys(df[group]))}
    traces = [
        _trace(part, column, name, colors[order[name] % len(colors)])
        for name, part in _by_group(df, column)
    ]
    if not traces:
        st.caption(f"{title}: no data")
        return
    fig = _figure(traces, title, y_title)
    if percent:
        fig.update_yaxes(tickformat=".0%")
    st.plotly_chart(fig, key=key)


def _fewer_series(df: pd.DataFrame) -> pd.DataFrame:
    """At most ``MAX_SERIES`` series: the busiest ``MAX_SERIES - 1`` groups (most jobs in the
    range) and the rest summed up as one "other (N)" series: counts, throughput and depth
    added, the error rate recomputed from the sums, utilization averaged and each percentile
    the highest of them (an upper bound: percentiles do not add up)."""
    totals = df.groupby(group)["job_count"].sum().sort_values(ascending=False, kind="stable")
    if len(totals) <= MAX_SERIES:
        return df
    keep = set(totals.index[: MAX_SERIES - 1])
    rest = df[~df[group].isin(keep)]
    sums = ["job_count", "error_count", "retries", "throughput", "depth"]
    highest = [c for c in df.columns if c.startswith(("wait_p", "processing_p"))]
    agg = {c: "sum" for c in sums if c in df.columns}
    agg.update({c: "max" for c in highest})
    if "utilization" in df.columns:
        agg["utilization"] = "mean"
    other = rest.groupby("bucket", as_index=False).agg(agg)
    attempts = other["job_count"] + other["retries"]
    other["error_rate"] = (other["error_count"] / attempts.where(attempts > 0)).clip(upper=1.0)
    other[group] = f"other ({len(totals) - len(keep)})"
    return pd.concat([df[df[group].isin(keep)], other], ignore_index=True).sort_values(
        ["bucket", group], kind="stable"
    )


def _from_first_activity(df: pd.DataFrame) -> pd.DataFrame:
    """Each group's rows from its first minute with a job or a waiting job on (no depth is
    drawn for the minutes before a queue had any)."""
    active = (df["job_count"].fillna(0) > 0) | (df["depth"].fillna(0) > 0)
    first = df[active].groupby(group)["bucket"].min()
    return df[df["bucket"] >= df[group].map(first)]


def charts(start: datetime, end: datetime) -> None:
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
        return
    df = pd.DataFrame(rows)
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    df[group] = df[group].fillna("(all)").astype(str)
    numeric = [c for c in df.columns if c not in ("bucket", "queue_name", "job_type")]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    df = df.sort_values(["bucket", group])
    shown = _fewer_series(df)
    groups = df[group].nunique()
    st.caption(
        f"{len(df):,} points · {resolution} buckets · {ui.fmt_time(start)} → {ui.fmt_time(end)}"
        + (
            f" · {groups} series: the {MAX_SERIES - 1} busiest drawn, the rest as other"
            if groups > MAX_SERIES
            else ""
        )
        + (f" · live, every {LIVE_SECONDS} s" if live and range_label != CUSTOM else "")
    )
    left, right = st.columns(2)
    with left:
        _line(shown, "throughput", "Throughput (jobs/s)", "chart_throughput", "jobs per second")
    with right:
        _line(
            shown,
            "error_rate",
            "Error rate",
            "chart_error_rate",
            "failed attempts (% of attempts)",
            percent=True,
        )
    left, right = st.columns(2)
    with left:
        _percentiles(shown, "wait", "Wait time p50 / p95 / p99 (ms)", "wait (milliseconds)")
    with right:
        _percentiles(
            shown,
            "processing",
            "Processing time p50 / p95 / p99 (ms)",
            "processing (milliseconds)",
        )
    left, right = st.columns(2)
    with left:
        depth = _from_first_activity(shown) if by == "queue" else shown
        _line(depth, "depth", "Depth (jobs waiting)", "chart_depth", "jobs waiting")
    with right:
        _line(
            shown,
            "utilization",
            "Utilization (busy / available slots)",
            "chart_util",
            "busy worker slots (%)",
            True,
        )
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


def _charts_guarded() -> None:
    first, last = start, end
    if live and range_label != CUSTOM:  # a live redraw moves the range to now
        last = data.floor_time(datetime.now(UTC), 10) + timedelta(seconds=10)
        first = last - span
    with ui.guard("Metrics"):
        charts(first, last)


st.fragment(run_every=LIVE_SECONDS if live and range_label != CUSTOM else None)(_charts_guarded)()
