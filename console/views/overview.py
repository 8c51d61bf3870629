"""Overview: live KPIs, a sparkline per queue, success criteria against their thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from console import auth, data, ui

REFRESH_SECONDS = 5

auth.require_user()
ui.page_header("Overview", "Live state of every queue, from the metrics read models.")
paused = st.toggle("Pause live refresh", key="overview_paused")


def _kpis(url: str) -> None:
    k = data.overview_kpis(url)
    cols = st.columns(7)
    cols[0].metric("Waiting", f"{int(k.get('waiting') or 0):,}", border=True)
    cols[1].metric("Running", f"{int(k.get('running') or 0):,}", border=True)
    cols[2].metric(
        "Failed (1 h)",
        f"{int(k.get('failed_last_hour') or 0):,}",
        help="jobs that failed in the last hour",
        border=True,
    )
    cols[3].metric("Throughput", ui.fmt_rate(k.get("throughput_per_s")), border=True)
    cols[4].metric("p95 wait", ui.fmt_ms(k.get("p95_wait_ms")), border=True)
    cols[5].metric("Error rate", ui.fmt_pct(k.get("error_rate")), border=True)
    cols[6].metric("Live workers", f"{int(k.get('live_workers') or 0):,}", border=True)


def _sparklines(url: str) -> None:
    end = data.floor_time(datetime.now(UTC), REFRESH_SECONDS)
    rows = data.time_series(
        url, start=end - timedelta(hours=1), end=end, resolution="minute", by="queue"
    )
    st.subheader("Queues, last hour")
    per_queue: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_queue.setdefault(str(row["queue_name"]), []).append(row)
    if not per_queue:
        st.info("No metrics in the last hour yet (the maintainer rolls them up every minute).")
        return
    cols = st.columns(min(4, len(per_queue)))
    for i, (queue, series) in enumerate(sorted(per_queue.items())):
        series.sort(key=lambda r: r["bucket"])
        last = series[-1]
        cols[i % len(cols)].metric(
            f"{queue}: jobs/min",
            f"{int(last.get('job_count') or 0)}",
            help=(
                f"depth {last.get('depth')}, error rate {ui.fmt_pct(last.get('error_rate'))}, "
                f"p95 wait {ui.fmt_ms(last.get('wait_p95'))}"
            ),
            chart_data=[int(r.get("job_count") or 0) for r in series],
            chart_type="area",
            border=True,
        )


def _criteria(url: str) -> None:
    st.subheader("Success criteria (last hour)")
    rows = data.success_criteria(url, 60)
    if not rows:
        st.info("No success criteria defined.")
        return
    table = [
        {
            "criterion": r.get("label") or r.get("key"),
            "value": _with_unit(r.get("value"), r.get("unit")),
            "target": f"{r.get('comparison', '')} {_with_unit(r.get('threshold'), r.get('unit'))}",
            "status": "met" if r.get("ok") else ("no data" if r.get("ok") is None else "MISSED"),
        }
        for r in rows
    ]
    st.dataframe(ui.frame(table), hide_index=True, key="criteria_table")


def _with_unit(value: Any, unit: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def live() -> None:
    url = data.ledger_url()
    with ui.guard("KPIs"):
        _kpis(url)
    with ui.guard("Queue controls"):
        for c in data.queue_controls(url):
            if c.get("paused"):
                by = f" by {c['paused_by']}" if c.get("paused_by") else ""
                why = f": {c['reason']}" if c.get("reason") else ""
                st.warning(
                    f"Queue {c['queue_name']} is paused since {ui.fmt_time(c.get('paused_at'))}"
                    f"{by}{why}. Its jobs wait until it is resumed (Workers page)."
                )
    with ui.guard("Queues"):
        _sparklines(url)
    with ui.guard("Success criteria"):
        _criteria(url)
    state = "paused" if paused else f"refreshes every {REFRESH_SECONDS} s"
    st.caption(f"Updated {ui.fmt_time(datetime.now(UTC))} · {state}")


st.fragment(run_every=None if paused else REFRESH_SECONDS)(live)()
