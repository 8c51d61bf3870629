"""The Submit page writes jobs through the job API and audits every submission."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import engine_for
from db.settings import get_settings
from tests.console.conftest import audit_rows, job_rows

SUBMIT = "FormSubmitter:submit_job-Submit job"


def submit_page(make_app: Callable[..., AppTest]) -> AppTest:
    at = make_app("admin").run()
    at.switch_page("views/submit.py").run()
    assert not at.exception
    return at


def fill(at: AppTest, type: str, data: str, *, priority: int = 5, queue: str = "") -> None:
    at.selectbox(key="submit_type").select(type).run()
    at.text_area(key="submit_data").input(data)
    at.number_input(key="submit_priority").set_value(priority)
    if queue:
        at.text_input(key="submit_queue").input(queue)


def test_submit_creates_the_job_row_and_an_audit_entry(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_QUEUES", "urgent")  # a queue no job type names, declared
    get_settings.cache_clear()
    at = submit_page(make_app)
    fill(at, "demo.echo", '{"x": 1}', priority=7, queue="urgent")
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert not at.error
    [job] = job_rows(engine_for(console_db))
    assert (job["type"], job["data"], job["priority"], job["queue"]) == (
        "demo.echo",
        {"x": 1},
        7,
        "urgent",
    )
    assert job["status"] == "queued"
    assert at.success[0].value == f"Submitted job {job['id']}"
    assert at.session_state["submit_last_job"] == str(job["id"])
    assert at.metric[0].value == "queued"  # the live status fragment
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["username"], entry["role"], entry["action"], entry["outcome"]) == (
        "alice",
        "admin",
        "submit",
        "ok",
    )
    assert entry["job_ids"] == [str(job["id"])]
    assert entry["target"] == "demo.echo"


def test_the_type_sets_defaults_and_shows_its_schema(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    at.selectbox(key="submit_type").select("edurise.course_progress_report").run()
    assert at.text_input(key="submit_queue").value == "reports"
    skeleton = json.loads(at.text_area(key="submit_data").value)
    assert set(skeleton) == {"course_id", "total_lessons", "students"}
    schema = json.loads(at.json[0].value)
    assert schema["title"] == "CourseReportData"


def test_schedule_at_a_utc_date_time(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = submit_page(make_app)
    due = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    fill(at, "demo.echo", "{}")
    at.radio(key="submit_when").set_value("At a date and time (UTC)")
    at.date_input(key="submit_date").set_value(due.date())
    at.time_input(key="submit_time").set_value(due.time())
    at.button(key=SUBMIT).click().run()
    assert not at.error, [e.value for e in at.error]
    [job] = job_rows(engine_for(console_db))
    assert job["status"] == "scheduled"
    assert job["scheduled_at"] == due
    assert audit_rows(engine_for(console_db))[0]["action"] == "schedule"


def test_schedule_after_a_delay(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}")
    at.radio(key="submit_when").set_value("After a delay")
    at.number_input(key="submit_delay").set_value(3600.0)
    before = datetime.now(UTC)
    at.button(key=SUBMIT).click().run()
    [job] = job_rows(engine_for(console_db))
    assert job["status"] == "scheduled"
    delta = (job["scheduled_at"] - before).total_seconds()
    assert 3595 < delta < 3700


def test_invalid_json_shows_a_message_and_writes_nothing(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", '{"x": ')
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert at.error[0].value.startswith("Invalid JSON: ")
    assert job_rows(engine_for(console_db)) == []
    assert audit_rows(engine_for(console_db)) == []


def test_schema_errors_show_the_api_message_and_write_no_job(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.sleep", '{"seconds": -1}')
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    message = at.error[0].value
    assert "seconds" in message and "Traceback" not in message
    assert job_rows(engine_for(console_db)) == []
    [entry] = audit_rows(engine_for(console_db))  # the attempt is audited as an error
    assert (entry["action"], entry["outcome"], entry["error"]) == ("submit", "error", message)


def test_a_bad_queue_name_is_refused(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "[1, 2]")
    at.button(key=SUBMIT).click().run()
    assert at.error and "object" in at.error[0].value
    fill(at, "demo.echo", "{}", queue="no spaces allowed")
    at.button(key=SUBMIT).click().run()
    assert "queue name" in at.error[0].value
    assert job_rows(engine_for(console_db)) == []


def refusals(at: AppTest) -> list[str]:
    """The messages of a refused submission: one per field, then the summary line."""
    values = [e.value for e in at.error]
    assert values and values[-1].startswith("Nothing submitted:"), values
    return values[:-1]


@pytest.mark.parametrize("day", [date(2020, 1, 1), date(2099, 12, 31)])
def test_a_date_outside_the_schedule_window_is_refused_not_changed(
    console_db: str, make_app: Callable[..., AppTest], day: date
) -> None:
    """The date widget passes any date through (it used to drop 2099-12-31 silently and keep
    today's); the date is refused under its field with the allowed window, nothing is sent."""
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}")
    at.radio(key="submit_when").set_value("At a date and time (UTC)")
    at.date_input(key="submit_date").set_value(day)
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert at.date_input(key="submit_date").value == day
    [error] = refusals(at)
    assert "allowed window" in error and "Traceback" not in error
    assert job_rows(engine_for(console_db)) == []
    assert audit_rows(engine_for(console_db)) == []  # nothing was attempted


@pytest.mark.parametrize("priority", [-3, 42])
def test_a_priority_out_of_range_is_refused_under_its_field(
    console_db: str, make_app: Callable[..., AppTest], priority: int
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}", priority=priority)
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert at.number_input(key="submit_priority").value == priority  # kept, not clamped
    [error] = refusals(at)
    assert (
        error.startswith("Priority must be a whole number from 0 to 9") and str(priority) in error
    )
    assert job_rows(engine_for(console_db)) == []


@pytest.mark.parametrize("attempts", [0, 101])
def test_max_attempts_out_of_range_is_refused(
    console_db: str, make_app: Callable[..., AppTest], attempts: int
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}")
    at.number_input(key="submit_max_attempts").set_value(attempts)
    at.button(key=SUBMIT).click().run()
    [error] = refusals(at)
    assert error.startswith("Max attempts must be a whole number from 1 to 100")
    assert job_rows(engine_for(console_db)) == []


def test_every_bad_field_gets_its_own_message(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", '{"x": ', priority=42, queue="nope")
    at.number_input(key="submit_max_attempts").set_value(0)
    at.text_input(key="submit_key").input("k" * 256)
    at.radio(key="submit_when").set_value("After a delay")
    at.number_input(key="submit_delay").set_value(-1.0)
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    errors = refusals(at)
    assert len(errors) == 6, errors
    assert errors[0].startswith("Invalid JSON")
    assert at.error[-1].value.startswith("Nothing submitted: 6 field(s)")
    assert job_rows(engine_for(console_db)) == []


def test_max_attempts_and_idempotency_key_reach_the_job(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    assert at.number_input(key="submit_max_attempts").value == 3  # the type's default
    fill(at, "demo.echo", '{"x": 1}')
    at.number_input(key="submit_max_attempts").set_value(7)
    at.text_input(key="submit_key").input("order-42")
    at.button(key=SUBMIT).click().run()
    assert not at.exception and not at.error
    [job] = job_rows(engine_for(console_db))
    assert (job["max_attempts"], job["idempotency_key"]) == (7, "order-42")
    [entry] = audit_rows(engine_for(console_db))
    assert entry["details"]["max_attempts"] == 7
    assert entry["details"]["idempotency_key"] == "order-42"

    at.button(key=SUBMIT).click().run()  # the same key, type and data: the same job
    assert not at.exception and not at.error
    assert "not finished yet" in at.info[0].value and str(job["id"]) in at.info[0].value
    assert len(job_rows(engine_for(console_db))) == 1

    at.text_area(key="submit_data").input('{"x": 2}')  # the key with other data: refused
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    [error] = refusals(at)
    assert "order-42" in error or "idempotency" in error.lower()
    assert len(job_rows(engine_for(console_db))) == 1
    assert audit_rows(engine_for(console_db))[-1]["outcome"] == "error"


def test_deeply_nested_data_is_refused_without_a_traceback(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert "nested deeper than 32 levels" in at.error[0].value
    assert job_rows(engine_for(console_db)) == []


def test_an_undeclared_queue_is_refused_with_the_known_queues(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}", queue="nope")
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    message = at.error[0].value
    assert "'nope' is not declared" in message and "default, notifications, reports" in message
    assert job_rows(engine_for(console_db)) == []


def test_a_negative_delay_is_refused_not_changed(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = submit_page(make_app)
    fill(at, "demo.echo", "{}")
    at.radio(key="submit_when").set_value("After a delay")
    at.number_input(key="submit_delay").set_value(-5.0)
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    assert at.number_input(key="submit_delay").value == -5.0
    [error] = refusals(at)
    assert "zero or more seconds" in error
    assert job_rows(engine_for(console_db)) == []


def test_a_denied_submission_is_one_line_not_a_field_message(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    from console import auth

    at = submit_page(make_app)
    fill(at, "demo.echo", "{}")
    monkeypatch.setattr(auth, "db_role", lambda engine, name: "analyst")  # demoted meanwhile
    at.button(key=SUBMIT).click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("submit denied") and "admin role" in error
    assert job_rows(engine_for(console_db)) == []
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"]) == ("submit", "denied")
