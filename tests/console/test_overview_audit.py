"""Overview: the mission's success criteria (met / missed / no data, configurable), the warning
when no maintainer is alive; Audit: logins and logouts, every job id in the CSV."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from db import audit
from db.engine import engine_for, write
from db.models import MaintainerProcess, Metric
from metrics import hist
from metrics.read.overview import success_criteria
from tasks import api
from tests.console.conftest import PASSWORD, audit_rows
from tests.console.test_auth import log_in

MISSION = {
    "Job processing time (p95)": "< 1,000 ms",
    "Queue latency (p95 wait)": "< 100 ms",
    "Worker utilization": "> 80 %",
    "Error rate": "< 0.1 %",
    "Completion rate": "> 99.9 %",
}


def criteria(at: AppTest) -> dict[str, dict[str, str]]:
    for frame in at.dataframe:
        value = frame.value
        if "criterion" in value.columns:
            return {r["criterion"]: r for r in value.to_dict("records")}
    raise AssertionError("no criteria table")


def insert_minutes(url: str, *, processing_ms: float, wait_ms: float, failed: int) -> None:
    """The last 30 whole minutes: 1,000 jobs each, ``failed`` of them failed."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for i in range(1, 31):
        minute = end - timedelta(minutes=i)
        rows.append(
            {
                "queue_name": "default",
                "timestamp": minute,
                "created_at": minute,
                "job_count": 1000,
                "worker_count": 1,
                "error_count": failed,
                "retries": 0,
                "completed_count": 1000 - failed,
                "failed_count": failed,
                "throughput": 1000 / 60,
                "depth": 0,
                "busy_seconds": 54.0,  # 90 % of one slot
                "worker_slots": 1,
                "processing_time": processing_ms,
                "processing_hist": hist.from_values([processing_ms] * 10),
                "wait_hist": hist.from_values([wait_ms] * 10),
            }
        )
    with write(engine_for(url)) as conn:
        conn.execute(insert(Metric), rows)


def test_no_data_for_each_of_the_mission_targets(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = make_app("analyst").run()
    assert not at.exception
    rows = criteria(at)
    assert {k: r["target"] for k, r in rows.items()} == MISSION
    assert {r["status"] for r in rows.values()} == {"no data"}
    assert {r["measured"] for r in rows.values()} == {"—"}


def test_met_and_missed_with_the_measured_value(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_minutes(console_db, processing_ms=400.0, wait_ms=300.0, failed=0)
    rows = criteria(make_app("analyst").run())
    assert rows["Job processing time (p95)"]["status"] == "met"
    assert rows["Queue latency (p95 wait)"]["status"] == "missed"
    assert rows["Queue latency (p95 wait)"]["measured"].endswith(" ms")
    assert rows["Worker utilization"]["status"] == "met"
    assert rows["Worker utilization"]["measured"] == "90 %"
    assert rows["Error rate"]["status"] == "met"
    assert rows["Completion rate"]["measured"] == "100 %"
    assert rows["Completion rate"]["status"] == "met"


def test_targets_are_configurable(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_TARGET_LATENCY_MS", "500")
    monkeypatch.setenv("QUEUE_TARGET_ERROR_RATE_PCT", "2.5")
    insert_minutes(console_db, processing_ms=400.0, wait_ms=300.0, failed=20)
    rows = criteria(make_app("analyst").run())
    assert rows["Queue latency (p95 wait)"]["target"] == "< 500 ms"
    assert rows["Queue latency (p95 wait)"]["status"] == "met"
    assert rows["Error rate"]["target"] == "< 2.5 %"
    assert rows["Error rate"]["measured"] == "2 %"
    assert rows["Error rate"]["status"] == "met"
    assert rows["Completion rate"]["status"] == "missed"  # 98 % < 99.9 %


def test_a_bad_target_setting_is_one_readable_line(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_TARGET_COMPLETION_PCT", "150")
    at = make_app("analyst").run()
    assert not at.exception
    assert any(
        "QUEUE_TARGET_COMPLETION_PCT must be a percentage" in e.value.replace("\\", "")
        for e in at.error
    )
    with pytest.raises(ValueError, match="QUEUE_TARGET_COMPLETION_PCT"):
        success_criteria(engine_for(console_db))


def add_heartbeat(url: str, at: datetime, *, stopped: bool = False) -> None:
    """A maintainer's row in ``queue_maintainers`` whose last heartbeat was ``at``."""
    with write(engine_for(url)) as conn:
        conn.execute(
            insert(MaintainerProcess).values(
                id=uuid.uuid4(),
                hostname="host",
                pid=1,
                started_at=at,
                last_heartbeat=at,
                stopped_at=at if stopped else None,
            )
        )


def maintainer_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "maintainer" in w.value]


def overview(make_app: Callable[..., AppTest]) -> AppTest:
    st.cache_data.clear()  # the signal is cached for a few seconds
    return make_app("analyst").run()


def test_overview_warns_when_no_maintainer_is_alive(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    [never] = maintainer_warnings(overview(make_app))
    assert never.startswith("No maintainer has run on this ledger yet")
    add_heartbeat(console_db, datetime.now(UTC) - timedelta(minutes=10))
    [silent] = maintainer_warnings(overview(make_app))
    assert silent.startswith("No maintainer has been seen for 10")
    add_heartbeat(console_db, datetime.now(UTC), stopped=True)  # stopped cleanly just now
    assert len(maintainer_warnings(overview(make_app))) == 1
    add_heartbeat(console_db, datetime.now(UTC) - timedelta(seconds=1))
    assert maintainer_warnings(overview(make_app)) == []


def test_logins_and_logouts_are_audited(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = log_in(make_app(None).run(), "bob", PASSWORD)
    assert at.session_state["user"]["name"] == "bob"
    at.sidebar.button(key="logout").click().run()
    assert at.button[0].label == "Log in"
    entries = audit_rows(engine_for(console_db))
    assert [(e["username"], e["role"], e["action"], e["outcome"]) for e in entries] == [
        ("bob", "analyst", "login", "ok"),
        ("bob", "analyst", "logout", "ok"),
    ]


def test_the_audit_csv_has_every_job_id(
    console_db: str, make_app: Callable[..., AppTest], downloads: dict[str, bytes]
) -> None:
    ids = [str(api.submit_job("demo.echo", {"n": n})) for n in range(7)]
    with write(engine_for(console_db)) as conn:
        audit.record(
            conn,
            username="alice",
            role="admin",
            action="bulk_cancel",
            outcome="ok",
            target="selection",
            job_ids=ids,
        )
    at = make_app("admin").run()
    at.switch_page("views/audit.py").run()
    assert not at.exception
    [row] = list(csv.DictReader(io.StringIO(downloads["audit.csv"].decode())))
    assert row["job ids"] == ", ".join(ids)
    assert row["jobs"] == "7"
    shown = at.dataframe[0].value.iloc[0]["job ids"]
    assert shown.endswith("… (+4)")  # the table shows the first three
