"""Jobs: workers by name, a run time that never reads "0 ms" for a short failed attempt,
relative times in the table and both forms in the opened job."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from console import ui
from db import workers as worker_sql
from db.engine import engine_for, write
from db.models import Job
from tasks import api
from tests.console.conftest import run_to_failure
from tests.console.test_jobs import jobs_page


def test_short_durations_keep_their_digits() -> None:
    assert ui.fmt_seconds(0.0003) == "0.30 ms"
    assert ui.fmt_seconds(0.004) == "4.00 ms"
    assert ui.fmt_seconds(0.000001) == "< 0.01 ms"
    assert ui.fmt_seconds(0.25) == "250 ms"
    assert ui.fmt_seconds(0) == "0 ms"


def test_relative_times_in_words() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert ui.fmt_ago(now - timedelta(minutes=3, seconds=20), now) == "3 min ago"
    assert ui.fmt_ago(now - timedelta(hours=5), now) == "5 h ago"
    assert ui.fmt_ago(now + timedelta(days=2), now) == "in 2 d"
    assert ui.fmt_ago(now, now) == "just now"
    assert ui.fmt_when(now - timedelta(seconds=42), now) == "2026-12-05 11:59:18 UTC (42 s ago)"


def test_worker_names_run_time_and_times(console_db: str, make_app: Callable[..., AppTest]) -> None:
    worker = uuid.uuid4()
    with write(engine_for(console_db)) as conn:
        worker_sql.register(
            conn,
            worker_id=worker,
            name="w-alpha",
            hostname="h",
            pid=1,
            queues=["default"],
            concurrency=1,
            worker_kind="thread",
        )
    job_id = api.submit_job("demo.echo", {})
    run_to_failure(console_db, job_id)
    finished = datetime.now(UTC) - timedelta(minutes=3)
    with write(engine_for(console_db)) as conn:  # an attempt that failed after 0.3 ms
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                worker_id=worker,
                started_at=finished - timedelta(microseconds=300),
                finished_at=finished,
            )
        )
    at = jobs_page(make_app, id=str(job_id))
    [row] = at.dataframe[0].value.to_dict("records")
    assert row["worker"] == f"w-alpha ({str(worker)[:8]})"
    assert row["run time"] == "0.30 ms"
    timing = {r[""]: r["value"] for r in at.dataframe[1].value.to_dict("records")}
    assert timing["worker"] == f"w-alpha ({str(worker)[:8]})"
    assert timing["run time (latest attempt)"] == "0.30 ms"
    assert timing["finished"].endswith("(3 min ago)")
    assert at.toggle(key="jobs_relative").value is True
    at.toggle(key="jobs_relative").set_value(False).run()
    assert not at.exception
