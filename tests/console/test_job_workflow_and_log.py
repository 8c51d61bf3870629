"""The opened job shows its place in a workflow (upstream and downstream, coloured by status,
ids linked) and the lines its handler logged, searchable and per attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from streamlit.testing.v1 import AppTest

from db import job_logs
from db.engine import engine_for, write
from db.job_logs import LogLine
from tasks import api
from tests.console.conftest import run_to_completion
from tests.console.test_jobs import jobs_page


def test_the_opened_job_draws_its_workflow_with_links(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    parent, child = api.submit_jobs(
        [
            {"type": "demo.echo", "data": {"step": "grade"}},
            {"type": "demo.echo", "data": {"step": "report"}, "depends_on": [0]},
        ]
    )
    for role in ("admin", "analyst"):
        at = jobs_page(make_app, role, id=str(child))
        [graph] = at.get("graphviz_chart")
        dot = graph.proto.spec
        assert f'"{parent}" -> "{child}"' in dot
        assert f'href="jobs?id={parent}"' in dot
        assert "fillcolor=" in dot and "waiting" in dot
        rows = at.dataframe[2].value.to_dict("records")
        assert [(r["direction"], r["job"]) for r in rows] == [("waits for", f"jobs?id={parent}")]
    run_to_completion(console_db, parent)
    at = jobs_page(make_app, id=str(parent))
    dot = at.get("graphviz_chart")[0].proto.spec
    assert f'"{parent}" -> "{child}"' in dot and "completed" in dot


def test_the_opened_job_shows_its_log_searchable_by_attempt(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.submit_job("demo.echo", {})
    now = datetime.now(UTC)
    with write(engine_for(console_db)) as conn:
        job_logs.insert_lines(
            conn,
            [
                LogLine(job_id, 1, now, "INFO", "grading 40 submissions"),
                LogLine(job_id, 1, now, "WARNING", "submission 7 has no file"),
            ],
        )
    at = jobs_page(make_app, "analyst", id=str(job_id))
    log = next(c.value for c in at.code if "grading 40 submissions" in c.value)
    assert "WARNING [1] submission 7 has no file" in log
    at.text_input(key=f"jobs_log_q_{job_id}").set_value("NO FILE").run()
    log = next(c.value for c in at.code if "submission 7" in c.value)
    assert "grading" not in log
    at.text_input(key=f"jobs_log_q_{job_id}").set_value("[ignored]%").run()
    assert not at.exception
    assert any("nothing logged that matches" in c.value for c in at.caption)
