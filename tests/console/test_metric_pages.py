"""Pages built on the metrics read models: Overview, Metrics, Errors, Periodic, Capacity."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from db.engine import engine_for
from tasks import api
from tests.console.conftest import audit_rows, insert_metrics, run_to_failure


def open_page(make_app: Callable[..., AppTest], page: str, role: str = "admin") -> AppTest:
    at = make_app(role).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(array: Any) -> list[Any]:
    """A plotly array (plotly >= 6 stores numbers as base64)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_overview_shows_kpis_sparklines_and_criteria(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db)
    api.submit_job("demo.echo", {})
    at = make_app("analyst").run()  # the Overview is the default page
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Waiting"] == "1"
    assert metrics["Failed (1 h)"] == "12"  # 6 minutes with one failure per queue in the hour
    assert metrics["Live workers"] == "0"
    assert {"default: jobs/min", "reports: jobs/min"} <= set(metrics)
    criteria = at.dataframe[0].value
    assert list(criteria["criterion"]) == [
        "Job processing time (p95)",
        "Queue latency (p95 wait)",
        "Worker utilization",
        "Error rate",
        "Completion rate",
    ]
    assert set(criteria["status"]) <= {"met", "missed", "no data"}
    assert at.toggle(key="overview_paused").value is False
    assert "refreshes every 5 s" in at.main.caption[-1].value
    at.toggle(key="overview_paused").set_value(True).run()
    assert "paused" in at.main.caption[-1].value


def test_metrics_page_draws_every_chart_per_queue_and_per_type(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db)
    at = open_page(make_app, "metrics", "analyst")
    figs = figures(at)
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert titles == [
        "Throughput (jobs/s)",
        "Error rate",
        "Wait time p50 / p95 / p99 (ms)",
        "Processing time p50 / p95 / p99 (ms)",
        "Depth (jobs waiting)",
        "Utilization (busy / available slots)",
    ]
    throughput = figs[0]["data"]
    assert sorted(t["name"] for t in throughput) == ["default", "reports"]
    # minutes 10..59 ago are in the last hour (49 if a minute turned between insert and render)
    assert len(values(throughput[0]["y"])) in (49, 50)
    wait_traces = {t["name"] for t in figs[2]["data"]}
    assert wait_traces == {
        f"{q}, {p}" for q in ("default", "reports") for p in ("p50", "p95", "p99")
    }
    assert at.get("download_button")
    at.radio(key="metrics_by").set_value("type").run()
    assert not at.error
    names = sorted(t["name"] for t in figures(at)[0]["data"])
    assert names == ["default.job", "reports.job"]
    at.selectbox(key="metrics_resolution").select("hour").run()
    assert not at.error and figures(at)
    at.selectbox(key="metrics_type").select("demo.echo").run()
    assert not at.error  # no rollups of that type: a message, no chart
    assert at.info and not figures(at)


def test_metrics_charts_keep_a_color_per_queue_and_a_dash_per_percentile(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """The charts are built trace by trace (not with plotly express): each queue keeps its
    color in every chart, each percentile its dash, and one queue still gets a legend."""
    insert_metrics(console_db)
    at = open_page(make_app, "metrics", "analyst")
    figs = figures(at)
    color_of = {t["name"]: t["line"]["color"] for t in figs[0]["data"]}
    assert len(set(color_of.values())) == 2
    for fig in figs:
        assert fig["layout"]["xaxis"]["title"]["text"] == "time (UTC)"
        for trace in fig["data"]:
            queue, _, percentile = trace["name"].partition(", ")
            assert trace["line"]["color"] == color_of[queue]
            expected = {"": "solid", "p50": "solid", "p95": "dot", "p99": "dash"}[percentile]
            assert trace["line"]["dash"] == expected
    assert figs[2]["layout"]["yaxis"]["title"]["text"] == "wait (milliseconds)"
    assert figs[5]["layout"]["yaxis"]["tickformat"] == ".0%"
    at.selectbox(key="metrics_queue").select("reports").run()
    one = figures(at)[0]["data"]
    assert [t["name"] for t in one] == ["reports"] and one[0]["showlegend"] is True


def test_errors_page_groups_failures_and_retries_a_group(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    failed = [api.submit_job("demo.fail", {"fail_times": 9}, max_attempts=1) for _ in range(3)]
    for job_id in failed:
        run_to_failure(console_db, job_id, "ValueError: the course does not exist")
    other = api.submit_job("demo.echo", {}, max_attempts=1)
    run_to_failure(console_db, other, "KeyError: 'lesson'")
    at = open_page(make_app, "errors")
    table = at.dataframe[0].value
    assert list(table["count"]) == [3, 1]
    assert list(table["exception"]) == ["ValueError", "KeyError"]
    at.session_state["errors_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert "ValueError" in at.subheader[0].value
    at.button(key="errors_retry").click().run()
    assert "Retry **3 failed job(s)**" in at.warning[0].value
    at.button(key="errors_confirm").click().run()
    assert not at.exception
    assert {api.get_job(j)["status"] for j in failed} == {"queued"}
    assert api.get_job(other)["status"] == "failed"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"]) == ("retry_group", "ok")
    assert sorted(entry["job_ids"]) == sorted(str(j) for j in failed)
    assert entry["details"]["exception_type"] == "ValueError"


def test_an_analyst_sees_error_groups_without_the_retry(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.submit_job("demo.echo", {}, max_attempts=1)
    run_to_failure(console_db, job_id)
    at = open_page(make_app, "errors", "analyst")
    at.session_state["errors_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert "errors_retry" not in {b.key for b in at.button}
    assert any("Read-only" in c.value for c in at.caption)


def test_periodic_page_lists_schedules_and_runs_one_now(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = open_page(make_app, "periodic")
    table = at.dataframe[0].value.set_index("name")
    row = table.loc["edurise.outbox_digest"]
    assert row["schedule"] == "cron 0 * * * * (UTC)"
    assert row["queue"] == "notifications"
    assert row["last status"] == "never ran"
    assert row["next run"].endswith(":00:00 UTC")
    at.selectbox(key="periodic_name").select("edurise.outbox_digest")
    at.button(key="periodic_run").click().run()
    assert not at.exception and not at.error
    [job] = api.get_jobs(type="edurise.outbox_digest")
    assert job["queue"] == "notifications" and job["data"] == {}
    assert at.success[0].value == f"Submitted edurise.outbox_digest now: job {job['id']}"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "periodic_run_now",
        "edurise.outbox_digest",
        "ok",
    )
    assert entry["job_ids"] == [str(job["id"])]


def test_periodic_run_now_is_for_admins(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = open_page(make_app, "periodic", "analyst")
    assert "periodic_run" not in {b.key for b in at.button}


def test_capacity_page_with_a_what_if_load(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db)
    at = open_page(make_app, "capacity", "analyst")
    at.selectbox(key="capacity_queue").select("default").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Arrivals"] != "—"
    assert metrics["Worker slots credited"] == "0.0 of 0"
    assert "capacity_curve" in [c.key for c in at.get("plotly_chart")] or figures(at)
    before = metrics["Slots needed for p95 ≤ 5 s"]
    at.slider(key="capacity_load").set_value(5.0).run()
    assert not at.error
    after = {m.label: m.value for m in at.metric}["Slots needed for p95 ≤ 5 s"]
    assert int(after) >= int(before)
    table = at.dataframe[0].value
    assert "default" in set(table["queue"])
