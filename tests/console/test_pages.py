"""Every page renders for both roles; workers, periodic, audit and the overview show what they
should; the console also runs on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from db import workers as worker_sql
from db.engine import engine_for, write
from db.models import Worker
from tasks import api
from tests.console.conftest import audit_rows

ALL_PAGES = {
    "views/overview.py": "Overview",
    "views/jobs.py": "Jobs",
    "views/queues.py": "Queues",
    "views/submit.py": "Submit",
    "views/workers.py": "Workers",
    "views/metrics.py": "Metrics",
    "views/periodic.py": "Periodic",
    "views/errors.py": "Errors",
    "views/capacity.py": "Capacity",
    "views/audit.py": "Audit",
}
ADMIN_ONLY = {"views/submit.py", "views/audit.py"}


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_every_page_renders_for_each_role(
    console_db: str, make_app: Callable[..., AppTest], role: str
) -> None:
    api.submit_job("demo.echo", {"x": 1})
    at = make_app(role).run()
    assert not at.exception
    for page, title in ALL_PAGES.items():
        if role == "analyst" and page in ADMIN_ONLY:
            with pytest.raises(ValueError):
                at.switch_page(page)
            continue
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == title
        assert not [e.value for e in at.error if "Traceback" in e.value]


def register_worker(url: str, name: str, *, concurrency: int = 4) -> uuid.UUID:
    wid = uuid.uuid4()
    with write(engine_for(url)) as conn:
        worker_sql.register(
            conn,
            worker_id=wid,
            name=name,
            hostname=f"host-{name}",
            pid=1000 + len(name),
            queues=["default", "reports"],
            concurrency=concurrency,
            worker_kind="thread",
        )
    return wid


def test_workers_page_flags_stale_and_stopped_workers(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    live = register_worker(console_db, "live")
    stale = register_worker(console_db, "stale")
    stopped = register_worker(console_db, "stopped")
    engine = engine_for(console_db)
    with write(engine) as conn:
        old = datetime.now(UTC) - timedelta(minutes=5)
        conn.execute(update(Worker).where(Worker.id == stale).values(last_heartbeat=old))
        worker_sql.set_status(conn, stopped, "stopped")
    job_id = api.submit_job("demo.echo", {})
    from db.ledger import attempts

    with write(engine) as conn:
        assert attempts.claim(conn, job_id, live) is not None

    at = make_app("analyst").run()
    at.switch_page("views/workers.py").run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["live", "state"] == "live"
    assert table.loc["stale", "state"] == "STALE"
    assert table.loc["stopped", "state"] == "stopped"
    assert table.loc["live", "running jobs"] == 1
    assert table.loc["live", "current jobs"] == f"demo.echo {str(job_id)[:8]}"
    assert table.loc["live", "host"] == "host-live"
    assert {m.label: m.value for m in at.metric}["Live workers"] == "1"
    assert "stopped heartbeating" in at.warning[0].value
    at.toggle(key="workers_hide_stopped").set_value(True).run()
    assert "stopped" not in set(at.dataframe[0].value["name"])


def test_workers_page_lists_paused_queues_and_links_to_queues(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    api.pause_queue("reports", by="alice", reason="exam week")
    at = make_app("admin").run()
    at.switch_page("views/workers.py").run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["queue"]) == ["reports"] and list(table["reason"]) == ["exam week"]
    assert not [b for b in at.button if "queue_control" in str(b.key)]


def test_audit_page_filters(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = make_app("admin").run()
    at.switch_page("views/submit.py").run()
    at.selectbox(key="submit_type").select("demo.echo").run()
    at.text_area(key="submit_data").input("{}")
    at.button(key="FormSubmitter:submit_job-Submit job").click().run()
    job_id = at.session_state["submit_last_job"]
    at.text_area(key="submit_data").input('{"x": }')
    at.selectbox(key="submit_type").select("demo.sleep").run()
    at.text_area(key="submit_data").input('{"seconds": "soon"}')
    at.button(key="FormSubmitter:submit_job-Submit job").click().run()
    at.switch_page("views/audit.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["action"]) == ["submit", "submit"]
    assert list(table["outcome"]) == ["error", "ok"]
    at.selectbox(key="audit_outcome").select("ok").run()
    assert list(at.dataframe[0].value["job ids"]) == [job_id]
    at.selectbox(key="audit_outcome").select("(any)").run()
    at.text_input(key="audit_job").input(job_id).run()
    assert len(at.dataframe[0].value) == 1


def test_submit_and_cancel_on_postgresql(console_pg: str, make_app: Callable[..., AppTest]) -> None:
    at = make_app("admin").run()
    at.switch_page("views/submit.py").run()
    at.selectbox(key="submit_type").select("demo.echo").run()
    at.text_area(key="submit_data").input('{"course": "pg-101"}')
    at.radio(key="submit_when").set_value("After a delay")
    at.number_input(key="submit_delay").set_value(600.0)
    at.button(key="FormSubmitter:submit_job-Submit job").click().run()
    assert not at.exception and not at.error
    job_id = at.session_state["submit_last_job"]
    assert api.get_job(job_id)["status"] == "scheduled"
    at.switch_page("views/jobs.py").run()
    at.text_input(key="q").input("pg-101").run()
    assert list(at.dataframe[0].value["id"]) == [f"jobs?id={job_id}"]
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key=f"job_cancel_{job_id}").click().run()
    next(b for b in at.button if b.key.startswith("jobs_confirm_yes_")).click().run()
    assert api.get_job(job_id)["status"] == "cancelled"
    entries = audit_rows(engine_for(console_pg))
    assert [(e["action"], e["outcome"]) for e in entries] == [("schedule", "ok"), ("cancel", "ok")]
    at.switch_page("views/audit.py").run()
    assert len(at.dataframe[0].value) == 2


def test_overview_warns_about_a_paused_queue(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    api.pause_queue("reports", by="alice", reason="exam week")
    at = make_app("analyst").run()
    assert not at.exception
    assert any("Queue reports is paused" in w.value and "exam week" in w.value for w in at.warning)


def test_the_console_config_hides_the_developer_toolbar() -> None:
    """Read next to console/app.py however the console is started (no Deploy button); the
    browser test checks the button is gone."""
    import tomllib
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "console" / ".streamlit" / "config.toml"
    assert tomllib.loads(config.read_text())["client"]["toolbarMode"] == "viewer"
