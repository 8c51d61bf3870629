"""The Queues page: per-queue counts, rollup figures, workers and limits; admins pause and
resume one queue after a confirmation that names it (audited); analysts only read."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from console import data
from db import workers as worker_sql
from db.engine import engine_for, write
from db.models import Metric
from metrics import hist
from tasks import api
from tests.console.conftest import audit_rows, insert_metrics, run_to_failure


def queues_page(make_app: Callable[..., AppTest], role: str = "admin") -> AppTest:
    at = make_app(role).run()
    at.switch_page("views/queues.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Queues"
    return at


def table(at: AppTest) -> dict[str, dict[str, object]]:
    df = at.dataframe[0].value
    return {row["queue"]: row for row in df.to_dict("records")}


def register_worker(url: str, queues: list[str], concurrency: int) -> None:
    with write(engine_for(url)) as conn:
        worker_sql.register(
            conn,
            worker_id=uuid.uuid4(),
            name=f"w-{'-'.join(queues)}",
            hostname="host",
            pid=4242,
            queues=queues,
            concurrency=concurrency,
            worker_kind="thread",
        )


def insert_recent_minutes(url: str, queue: str, waits_ms: list[float]) -> None:
    """Rollup rows of the last three whole minutes: 60 jobs each, with these waits."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for i in range(1, 4):
        minute = end - timedelta(minutes=i)
        rows.append(
            {
                "queue_name": queue,
                "timestamp": minute,
                "created_at": minute,
                "job_count": 60,
                "worker_count": 1,
                "error_count": 0,
                "retries": 0,
                "completed_count": 60,
                "failed_count": 0,
                "throughput": 1.0,
                "depth": 0,
                "busy_seconds": 6.0,
                "worker_slots": 4,
                "wait_hist": hist.from_values(waits_ms),
            }
        )
    with write(engine_for(url)) as conn:
        conn.execute(insert(Metric), rows)


def seed(url: str) -> None:
    for _ in range(3):
        api.submit_job("demo.echo", {"x": 1})
    api.submit_job("demo.echo", {"x": 2}, queue="reports")
    api.schedule_job("demo.echo", {"x": 3}, 3600)
    failed = api.submit_job("demo.echo", {"x": 4})
    run_to_failure(url, failed)
    register_worker(url, ["default", "reports"], 4)
    register_worker(url, ["reports"], 2)
    insert_metrics(url, ("default", "reports"))
    insert_recent_minutes(url, "default", [10.0] * 90 + [400.0] * 10)


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_every_queue_with_its_counts_figures_and_workers(
    console_db: str, make_app: Callable[..., AppTest], role: str
) -> None:
    seed(console_db)
    at = queues_page(make_app, role)
    rows = table(at)
    assert set(rows) >= {"default", "reports", "notifications"}
    default, reports = rows["default"], rows["reports"]
    assert (default["waiting"], default["scheduled"], default["running"]) == ("3", "1", "0")
    assert (reports["waiting"], reports["scheduled"]) == ("1", "0")
    assert (default["workers"], default["slots"]) == (1, 4)
    assert (reports["workers"], reports["slots"]) == (2, 6)  # both workers serve reports
    assert default["state"] == "dispatching"
    # the rollups of the last hour (insert_metrics: a failure every 9th minute)
    assert default["failed (1 h)"] not in ("—", "0")
    assert default["p95 wait"].endswith(" ms") and 300 < float(default["p95 wait"][:-3]) < 450
    assert default["throughput"] == "36.0/min"  # 180 jobs in the last 5 minutes
    assert reports["throughput"] == "0.00/s" and reports["p95 wait"] == "—"
    assert rows["notifications"]["waiting"] == "0"
    if role == "analyst":
        assert not [b for b in at.button if str(b.key).startswith("queues_pause_")]
        assert any("admin role" in c.value for c in at.main.caption)


def test_limits_of_the_job_types_are_shown(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        data, "queue_limits", lambda: {"reports": ["edurise.report: 2 at once, 10/m"]}
    )
    at = queues_page(make_app)
    assert table(at)["reports"]["limits"] == "edurise.report: 2 at once, 10/m"


def test_counts_above_the_cap_say_at_least(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "COUNT_CAP", 3)
    for _ in range(5):
        api.submit_job("demo.echo", {})
    api.submit_job("demo.echo", {}, queue="reports")
    for _ in range(5):
        api.schedule_job("demo.echo", {}, 600)
    rows = table(queues_page(make_app))
    assert rows["default"]["waiting"] == "3+"  # counted on its own up to the cap
    assert rows["reports"]["waiting"] == "1"  # exact: under the cap
    assert rows["default"]["scheduled"] == "4+"  # a lower bound


def test_admin_pauses_and_resumes_one_queue_after_a_confirmation_naming_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = queues_page(make_app)
    at.button(key="queues_pause_reports").click().run()
    assert not at.exception
    assert any("Pause queue" in w.value and "reports" in w.value for w in at.warning)
    assert api.get_queue_controls() == []  # nothing happens before the confirmation
    at.text_input(key="queues_reason_reports").input("exam week")
    at.button(key="queues_yes_pause_reports").click().run()
    assert not at.exception
    assert at.success[0].value.startswith("Queue")
    controls = {c["queue_name"]: c for c in api.get_queue_controls()}
    assert controls["reports"]["paused"] is True
    assert (controls["reports"]["paused_by"], controls["reports"]["reason"]) == (
        "alice",
        "exam week",
    )
    assert table(at)["reports"]["state"] == "PAUSED"
    assert table(at)["default"]["state"] == "dispatching"
    at.button(key="queues_resume_reports").click().run()
    assert any("Resume queue" in w.value for w in at.warning)
    at.button(key="queues_yes_resume_reports").click().run()
    assert not at.exception
    assert {c["queue_name"]: c for c in api.get_queue_controls()}["reports"]["paused"] is False
    entries = audit_rows(engine_for(console_db))
    assert [(e["action"], e["target"], e["outcome"], e["username"]) for e in entries] == [
        ("pause", "reports", "ok", "alice"),
        ("resume", "reports", "ok", "alice"),
    ]
    assert entries[0]["details"] == {"reason": "exam week"}


def test_no_keeps_the_queue_running(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = queues_page(make_app)
    at.button(key="queues_pause_default").click().run()
    at.button(key="queues_no_default").click().run()
    assert not at.exception
    assert not [w for w in at.warning if "Pause queue" in w.value]
    assert api.get_queue_controls() == [] and audit_rows(engine_for(console_db)) == []


def test_pausing_an_undeclared_queue_is_refused(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    register_worker(console_db, ["retired"], 1)  # an old worker still lists a retired queue
    at = queues_page(make_app)
    assert "retired" in table(at)
    at.button(key="queues_pause_retired").click().run()
    at.button(key="queues_yes_pause_retired").click().run()
    assert not at.exception
    assert "'retired' is not declared" in at.error[0].value
    assert api.get_queue_controls() == []
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["target"], entry["outcome"]) == ("pause", "retired", "error")


def test_an_analyst_cannot_pause_even_through_the_action(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = make_app("analyst").run()
    at.session_state["queues_confirm"] = {"op": "pause", "queue": "default"}
    at.switch_page("views/queues.py").run()
    assert not [b for b in at.button if str(b.key).startswith("queues_yes_")]
    assert api.get_queue_controls() == []


def test_queues_page_on_postgresql(console_pg: str, make_app: Callable[..., AppTest]) -> None:
    seed(console_pg)
    rows = table(queues_page(make_app))
    assert (rows["default"]["waiting"], rows["default"]["scheduled"]) == ("3", "1")
    assert (rows["reports"]["workers"], rows["reports"]["slots"]) == (2, 6)


def test_jobs_held_back_by_dependencies_are_counted_as_blocked(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    from sqlalchemy import update

    from db.models import Job
    from metrics.read.queues import BLOCKED_STATUSES

    if not BLOCKED_STATUSES:
        pytest.skip("this ledger has no workflow dependencies")
    held = api.schedule_job("demo.echo", {}, 3600, queue="reports")
    with write(engine_for(console_db)) as conn:  # as a job submitted with depends_on is
        conn.execute(update(Job).where(Job.id == held).values(status=BLOCKED_STATUSES[0]))
    rows = table(queues_page(make_app))
    assert (rows["reports"]["blocked"], rows["reports"]["scheduled"]) == ("1", "0")
    assert rows["default"]["blocked"] == "0"
