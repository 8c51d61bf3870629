"""Metrics: at most eight series (the rest as "other"), no depth before a queue's first
activity, a custom UTC range, chosen percentiles, optional live refresh, axis titles in
words with units."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from db.engine import engine_for, write
from db.models import Metric
from tests.console.conftest import insert_metrics
from tests.console.test_metric_pages import figures, open_page, values

QUEUES = tuple(f"q{i:02d}" for i in range(12))


def chart(at: AppTest, title: str) -> dict:
    [fig] = [f for f in figures(at) if f["layout"]["title"]["text"] == title]
    return fig


def test_at_most_eight_series_the_rest_summed_as_other(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db, QUEUES)
    at = open_page(make_app, "metrics", "analyst")
    throughput = chart(at, "Throughput (jobs/s)")["data"]
    names = [t["name"] for t in throughput]
    assert len(names) == 8 and names.count("other (5)") == 1
    table = at.dataframe[0].value  # the data table keeps every series
    totals = table.groupby("queue_name")["job_count"].sum()
    totals = totals.sort_values(ascending=False, kind="stable")  # ties: by name, as drawn
    assert set(names) - {"other (5)"} == set(totals.index[:7])
    rest = table[table["queue_name"].isin(totals.index[7:])]
    other = next(t for t in throughput if t["name"] == "other (5)")
    assert abs(sum(values(other["y"])) - rest["throughput"].sum()) < 1e-6
    assert any("12 series" in c.value for c in at.caption)
    wait = chart(at, "Wait time p50 / p95 / p99 (ms)")["data"]
    assert {t["name"].split(", ")[0] for t in wait} == set(names)


def test_depth_starts_at_a_queues_first_activity(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    rows = []
    for i in range(40):  # oldest first: 20 idle minutes, then jobs
        minute = end - timedelta(minutes=39 - i)
        busy = i >= 20
        rows.append(
            {
                "queue_name": "late",
                "timestamp": minute,
                "created_at": minute,
                "job_count": 10 if busy else 0,
                "worker_count": 1,
                "error_count": 0,
                "retries": 0,
                "completed_count": 10 if busy else 0,
                "failed_count": 0,
                "throughput": 10 / 60 if busy else 0.0,
                "depth": 3 if busy else 0,
                "busy_seconds": 1.0 if busy else 0.0,
                "worker_slots": 1,
            }
        )
    with write(engine_for(console_db)) as conn:
        conn.execute(insert(Metric), rows)
    at = open_page(make_app, "metrics", "analyst")
    [depth] = chart(at, "Depth (jobs waiting)")["data"]
    assert values(depth["y"]) == [3.0] * 20  # nothing drawn for the 20 idle minutes before
    [throughput] = chart(at, "Throughput (jobs/s)")["data"]
    assert len(values(throughput["y"])) == 40  # other charts keep every minute


def test_axis_titles_say_what_and_in_which_unit(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db)
    at = open_page(make_app, "metrics", "analyst")
    titles = {
        f["layout"]["title"]["text"]: (
            f["layout"]["xaxis"]["title"]["text"],
            f["layout"]["yaxis"]["title"]["text"],
        )
        for f in figures(at)
    }
    assert titles == {
        "Throughput (jobs/s)": ("time (UTC)", "jobs per second"),
        "Error rate": ("time (UTC)", "failed attempts (% of attempts)"),
        "Wait time p50 / p95 / p99 (ms)": ("time (UTC)", "wait (milliseconds)"),
        "Processing time p50 / p95 / p99 (ms)": ("time (UTC)", "processing (milliseconds)"),
        "Depth (jobs waiting)": ("time (UTC)", "jobs waiting"),
        "Utilization (busy / available slots)": ("time (UTC)", "busy worker slots (%)"),
    }


def test_a_custom_utc_range(console_db: str, make_app: Callable[..., AppTest]) -> None:
    insert_metrics(console_db)  # minutes 10..69 ago
    at = open_page(make_app, "metrics", "analyst")
    at.selectbox(key="metrics_range").select("Custom range (UTC)…").run()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first, last = now - timedelta(minutes=40), now - timedelta(minutes=20)
    at.date_input(key="metrics_from_day").set_value(first.date())
    at.time_input(key="metrics_from_time").set_value(first.time())
    at.date_input(key="metrics_to_day").set_value(last.date())
    at.time_input(key="metrics_to_time").set_value(last.time()).run()
    assert not at.exception and not at.error
    throughput = chart(at, "Throughput (jobs/s)")["data"]
    assert {len(values(t["y"])) for t in throughput} == {20}  # [first, last) by minute
    before = first - timedelta(minutes=5)  # (its own date: the range may cross midnight)
    at.time_input(key="metrics_to_time").set_value(before.time())
    at.date_input(key="metrics_to_day").set_value(before.date()).run()
    assert at.error[0].value == "The end of the range must come after its start."
    assert not figures(at)


def test_chosen_percentiles_and_live_refresh(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db)
    at = open_page(make_app, "metrics", "analyst")
    at.multiselect(key="metrics_percentiles").set_value(["p95"]).run()
    wait = chart(at, "Wait time p50 / p95 / p99 (ms)")["data"]
    assert {t["name"] for t in wait} == {"default, p95", "reports, p95"}
    assert at.toggle(key="metrics_live").value is False
    at.toggle(key="metrics_live").set_value(True).run()
    assert not at.exception and not at.error
    assert any("live, every 10 s" in c.value for c in at.caption)
    assert len(figures(at)) == 6
