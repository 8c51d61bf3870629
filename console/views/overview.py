"""Overview: live KPIs, a sparkline per queue, success criteria against their thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from console import actions, auth, data, ui

REFRESH_SECONDS = 5

auth.require_user()
ui.page_header("Overview", "Live state of every queue, from the metrics read models.")
paused = st.toggle("Pause live refresh", key="overview_paused")


def _kpis(url: str) -> None:
    k = data.overview_kpis(url)
    cols = [*st.columns(4), *st.columns(4)]  # two rows: whole values from 1024 px up
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


CRITERION_STATES = {True: "met", False: "missed", None: "no data"}


def _criteria(url: str) -> None:
    st.subheader("Success criteria (last hour)")
    rows = data.success_criteria(url, 60)
    table = [
        {
            "criterion": r["label"],
            "measured": _with_unit(r["value"], r["unit"]),
            "target": f"{r['comparison']} {_with_unit(r['threshold'], r['unit'])}",
            "status": CRITERION_STATES[r["ok"]],
        }
        for r in rows
    ]
    st.dataframe(ui.frame(table), hide_index=True, key="criteria_table")
    st.caption(
        "The mission's targets, measured over the rollups of the last hour; each can be set "
        "with QUEUE_TARGET_PROCESSING_MS, QUEUE_TARGET_LATENCY_MS, "
        "QUEUE_TARGET_UTILIZATION_PCT, QUEUE_TARGET_ERROR_RATE_PCT, "
        "QUEUE_TARGET_COMPLETION_PCT. No data: nothing finished in the hour."
    )


def _maintainer(url: str) -> None:
    """A warning when no maintainer's heartbeat is fresh (``queue_maintainers``)."""
    signal = data.maintainer_signal(url)
    if signal["alive"]:
        return
    if signal["age_seconds"] is None:
        seen = "No maintainer has run on this ledger yet"
    else:
        seen = (
            f"No maintainer has been seen for {ui.fmt_seconds(signal['age_seconds'])} "
            f"(last at {ui.fmt_time(signal['last_seen'])})"
        )
    st.warning(
        f"{seen}: nothing is dispatched, staged, reconciled or rescued and periodic jobs do "
        "not run until one is started (`queuectl maintainer` or `queuectl up`). A running "
        "maintainer writes a heartbeat every QUEUE_HEARTBEAT_SECONDS.",
        icon=":material/heart_broken:",
    )


def _with_unit(value: Any, unit: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def _alerts(url: str) -> None:
    st.subheader("Alerts")
    active = data.active_alerts(url)
    now = datetime.now(UTC)
    silences = [s for s in data.alert_silences(url) if s["silenced_until"] > now]
    if active:
        table = [
            {
                "rule": a["rule"],
                "alert": a["alert_key"],
                "message": a["message"],
                "value": a["value"],
                "threshold": a["threshold"],
                "firing since": ui.fmt_time(a["fired_at"]),
                "last notified": ui.fmt_time(a["last_notified_at"]),
            }
            for a in active
        ]
        st.dataframe(ui.frame(table), hide_index=True, key="alerts_active")
    else:
        st.success("No active alerts.", icon=":material/check_circle:")
    for s in silences:
        why = f": {s['reason']}" if s.get("reason") else ""
        st.caption(
            f"Rule {s['rule']} silenced until {ui.fmt_time(s['silenced_until'])} "
            f"by {s['silenced_by']}{why}"
        )
    history = data.alert_history(url, 200)
    with st.expander(f"Alert history ({len(history)} most recent notifications)"):
        rows = [
            {
                "at": ui.fmt_time(h["created_at"]),
                "rule": h["rule"],
                "alert": h["alert_key"],
                "event": h["state"],
                "message": (h.get("payload") or {}).get("message"),
                "webhook": h["delivery"],
                "attempts": h["attempts"],
                "silenced": h["silenced"],
            }
            for h in history
        ]
        if rows:
            st.dataframe(ui.frame(rows), hide_index=True, key="alerts_history")
        else:
            st.caption("No alert has fired yet.")


def _silence_form() -> None:
    """Admins silence a rule for a period (audited as ``alert_silence``)."""
    user = auth.current_user()
    if not user or user["role"] != "admin":
        return
    with st.expander("Silence an alert rule"):
        rules = data.alert_rule_names()
        rule = st.selectbox("Rule", rules, key="silence_rule")
        minutes = st.number_input(
            "Minutes (0 lifts the silence)",
            min_value=0,
            max_value=7 * 24 * 60,
            value=60,
            step=15,
            key="silence_minutes",
        )
        reason = st.text_input("Reason", key="silence_reason")
        if st.button("Silence", key="silence_submit"):
            try:
                until = actions.silence_rule(str(rule), float(minutes), reason or None)
            except actions.ActionError as exc:
                st.error(str(exc))
            else:
                st.success(f"Rule {rule} silenced until {ui.fmt_time(until)}.")


def live() -> None:
    auth.ensure_live_session(data.engine())  # a refresh does not outlive an ended session
    url = data.ledger_url()
    with ui.guard("Maintainer"):
        _maintainer(url)
    with ui.guard("KPIs"):
        _kpis(url)
    with ui.guard("Queue controls"):
        for c in data.queue_controls(url):
            if c.get("paused"):
                by = f" by {ui.md_text(c['paused_by'])}" if c.get("paused_by") else ""
                why = f": {ui.md_text(c['reason'])}" if c.get("reason") else ""
                since = ui.fmt_time(c.get("paused_at"))
                st.warning(
                    f"Queue {ui.md_text(c['queue_name'])} is paused since {since}{by}{why}. "
                    "Its jobs wait until it is resumed (Queues page)."
                )
    with ui.guard("Queues"):
        _sparklines(url)
    with ui.guard("Success criteria"):
        _criteria(url)
    with ui.guard("Alerts"):
        _alerts(url)
    state = "paused" if paused else f"refreshes every {REFRESH_SECONDS} s"
    st.caption(f"Updated {ui.fmt_time(datetime.now(UTC))} · {state}")


st.fragment(run_every=None if paused else REFRESH_SECONDS)(live)()
with ui.guard("Silence"):
    _silence_form()
