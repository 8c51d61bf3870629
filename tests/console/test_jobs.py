"""The Jobs page: filters, detail, cancel/retry (one and bulk), role checks, audit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from db import queries
from db.engine import engine_for, write
from db.models import Job
from db.users import set_disabled, set_role
from tasks import api
from tests.console.conftest import audit_rows, run_to_completion, run_to_failure


def jobs_page(make_app: Callable[..., AppTest], role: str = "admin") -> AppTest:
    at = make_app(role).run()
    at.switch_page("views/jobs.py").run()
    assert not at.exception
    return at


def select_row(at: AppTest, index: int) -> AppTest:
    at.session_state["jobs_table"] = {"selection": {"rows": [index], "columns": []}}
    return at.run()


def table_ids(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["id"])


def test_lists_and_filters_jobs(console_db: str, make_app: Callable[..., AppTest]) -> None:
    a = api.submit_job("demo.echo", {"course": "algebra-101"})
    b = api.schedule_job("demo.echo", {"course": "biology"}, 3600)
    c = api.submit_job("demo.sleep", {"seconds": 1}, queue="reports")
    at = jobs_page(make_app)
    assert sorted(table_ids(at)) == sorted([str(a), str(b), str(c)])  # newest first (ties by id)
    at.multiselect(key="jobs_status").select("scheduled").run()
    assert table_ids(at) == [str(b)]
    at.multiselect(key="jobs_status").unselect("scheduled").run()
    at.selectbox(key="jobs_type").select("demo.sleep").run()
    assert table_ids(at) == [str(c)]
    at.selectbox(key="jobs_type").select("(any)").run()
    at.text_input(key="jobs_search").input("algebra").run()
    assert table_ids(at) == [str(a)]
    at.text_input(key="jobs_search").input(str(b)).run()
    assert table_ids(at) == [str(b)]
    at.text_input(key="jobs_search").input("").run()
    select_row(at, 0)
    assert at.subheader[0].value.startswith("Job ")
    at.selectbox(key="jobs_queue").select("reports").run()
    assert table_ids(at) == [str(c)]
    assert not at.subheader  # a new filter clears the selection


def test_search_on_postgresql_finds_old_jobs_any_case_and_id_prefixes(
    console_pg: str, make_app: Callable[..., AppTest]
) -> None:
    """The payload search scans every job, however old (not only the newest pages); ASCII and
    non-ASCII text in any case; a search that can start a job id also finds by id prefix."""
    old = api.submit_job("demo.echo", {"email": "Ada.Lovelace@Example.edu", "n": 7})
    with write(engine_for(console_pg)) as conn:
        conn.execute(
            update(Job)
            .where(Job.id == old)
            .values(created_at=datetime.now(UTC) - timedelta(days=400))
        )
    newer = api.submit_jobs([{"type": "demo.echo", "data": {"i": i}} for i in range(150)])
    city = api.submit_job("demo.echo", {"city": "Zürich"})
    at = jobs_page(make_app)
    at.text_input(key="jobs_search").input("ada.lovelace@EXAMPLE.EDU").run()
    assert table_ids(at) == [str(old)]
    at.text_input(key="jobs_search").input("lovelace").run()
    assert table_ids(at) == [str(old)]
    assert [j["id"] for j in api.get_jobs(search="ZÜRICH")] == [city]
    assert [j["id"] for j in api.get_jobs(search='"n": 7')] == [old]  # the JSON text
    assert api.get_jobs(search="lovelace_") == []  # LIKE wildcards are literal
    assert str(old) in {str(j["id"]) for j in api.get_jobs(search="ADA")}  # payload text
    target = newer[42]
    text = str(target)
    for prefix in (text[:8], text[:8].upper(), text[:11], text[:35]):
        found = [str(j["id"]) for j in api.get_jobs(search=prefix, limit=10_000)]
        assert text in found, prefix
    assert [j["id"] for j in api.get_jobs(search=text[:13])] == [target]
    at.text_input(key="jobs_search").input(text[:13].upper()).run()
    assert table_ids(at) == [text]
    assert api.get_jobs(search=text[:8] + text[9:13]) == []  # not the form of an id


def test_id_prefix_ranges() -> None:
    lo, hi = queries.id_prefix_range("AB12cd34-5") or (None, None)
    assert (str(lo), str(hi)) == (
        "ab12cd34-5000-0000-0000-000000000000",
        "ab12cd34-5fff-ffff-ffff-ffffffffffff",
    )
    whole = "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert queries.id_prefix_range(whole) == (uuid.UUID(whole), uuid.UUID(whole))
    for text in ("", "g", "ab12cd345", "ab12-", "-", f"{whole}0", " ab", "ab%"):
        assert queries.id_prefix_range(text) is None, text


def test_pages_through_jobs(console_db: str, make_app: Callable[..., AppTest]) -> None:
    ids = api.submit_jobs([{"type": "demo.echo", "data": {"i": i}} for i in range(30)])
    at = jobs_page(make_app)
    at.selectbox(key="jobs_page_size").select(25).run()
    first = table_ids(at)
    assert len(first) == 25
    at.button(key="jobs_next").click().run()
    second = table_ids(at)
    assert len(second) == 5
    assert set(first) | set(second) == {str(i) for i in ids}
    assert at.button(key="jobs_next").disabled


def test_detail_shows_data_result_errors_and_traceback(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    failed = api.submit_job("demo.fail", {"fail_times": 9}, max_attempts=2)
    run_to_failure(console_db, failed, "DemoFailure: it broke")
    done = api.submit_job("demo.echo", {"n": 5})
    run_to_completion(console_db, done, {"n": 5})
    at = jobs_page(make_app)
    select_row(at, table_ids(at).index(str(failed)))
    assert at.subheader[0].value == f"Job {failed}"
    assert [m.value for m in at.metric][:2] == ["failed", "demo.fail"]
    assert len(at.expander) >= 2
    codes = [c.value for c in at.code]
    assert sum("DemoFailure: it broke" in c and "Traceback" in c for c in codes) == 2
    at.text_input(key="jobs_open_id").input(str(done))
    at.session_state["jobs_table"] = {"selection": {"rows": [], "columns": []}}
    at.run()
    assert at.subheader[0].value == f"Job {done}"
    assert json.loads(at.json[0].value) == {"n": 5}  # data
    assert json.loads(at.json[1].value) == {"n": 5}  # result


def test_cancel_and_retry_one_job(console_db: str, make_app: Callable[..., AppTest]) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    select_row(at, 0)
    at.button(key="job_cancel").click().run()
    assert not at.exception
    assert api.get_job(job_id)["status"] == "cancelled"
    assert at.success[0].value == f"Job {job_id}: cancelled before it started: it will never run"
    at.button(key="job_retry").click().run()
    assert api.get_job(job_id)["status"] == "queued"
    entries = audit_rows(engine_for(console_db))
    assert [(e["action"], e["outcome"], e["job_ids"]) for e in entries] == [
        ("cancel", "ok", [str(job_id)]),
        ("retry", "ok", [str(job_id)]),
    ]


def test_an_impossible_cancel_shows_the_api_message_and_is_audited(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    select_row(at, 0)
    api.cancel_job(job_id)  # someone else was faster; the button is still on screen
    at.button(key="job_cancel").click().run()
    assert not at.exception
    assert "cancel" in at.error[0].value and "Traceback" not in at.error[0].value
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"]) == ("cancel", "error")
    assert entry["error"] == at.error[0].value


def test_bulk_cancel_everything_matching_the_filter(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    keep = api.schedule_job("demo.sleep", {"seconds": 1}, 3600)
    targets = [api.schedule_job("demo.echo", {"i": i}, 3600) for i in range(3)]
    done = api.submit_job("demo.echo", {})
    run_to_completion(console_db, done)
    at = jobs_page(make_app)
    at.selectbox(key="jobs_type").select("demo.echo").run()
    at.button(key="jobs_bulk_cancel").click().run()
    assert "This will cancel **3 jobs**" in at.warning[0].value  # the completed one is not
    at.button(key="jobs_bulk_confirm").click().run()
    assert not at.exception
    assert {api.get_job(t)["status"] for t in targets} == {"cancelled"}
    assert api.get_job(keep)["status"] == "scheduled"
    assert api.get_job(done)["status"] == "completed"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"]) == ("bulk_cancel", "ok")
    assert sorted(entry["job_ids"]) == sorted(str(t) for t in targets)
    assert entry["details"]["succeeded"] == 3
    assert entry["details"]["filters"]["type"] == "demo.echo"


def test_bulk_retry_can_be_aborted_and_then_confirmed(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    ids = [api.schedule_job("demo.echo", {"i": i}, 3600) for i in range(2)]
    for job_id in ids:
        api.cancel_job(job_id)
    at = jobs_page(make_app)
    at.button(key="jobs_bulk_retry").click().run()
    assert "retry **2 jobs**" in at.warning[0].value
    at.button(key="jobs_bulk_abort").click().run()
    assert not at.warning
    assert {api.get_job(i)["status"] for i in ids} == {"cancelled"}
    at.button(key="jobs_bulk_retry").click().run()
    at.button(key="jobs_bulk_confirm").click().run()
    assert {api.get_job(i)["status"] for i in ids} == {"queued"}
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], len(entry["job_ids"])) == ("bulk_retry", "ok", 2)


def test_an_analyst_sees_jobs_but_no_action(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, "analyst")
    select_row(at, 0)
    keys = {b.key for b in at.button}
    assert not keys & {"job_cancel", "job_retry", "jobs_bulk_cancel", "jobs_bulk_retry"}
    assert any("Read-only" in c.value for c in at.caption)


def test_a_demoted_admin_loses_the_actions_at_the_next_click(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Every run re-reads the role from the database."""
    api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    select_row(at, 0)
    assert "job_cancel" in {b.key for b in at.button}
    with write(engine_for(console_db)) as conn:
        set_role(conn, "alice", "analyst")
    at.run()
    assert at.session_state["user"] == {"name": "alice", "role": "analyst"}
    assert "job_cancel" not in {b.key for b in at.button}
    with pytest.raises(ValueError):
        at.switch_page("views/submit.py")


def test_a_forged_session_role_is_corrected(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = make_app(None)
    at.session_state["user"] = {"name": "bob", "role": "admin"}  # bob is an analyst
    at.run()
    assert at.session_state["user"] == {"name": "bob", "role": "analyst"}
    with pytest.raises(ValueError):
        at.switch_page("views/audit.py")


def test_a_disabled_user_is_logged_out(console_db: str, make_app: Callable[..., AppTest]) -> None:
    at = make_app("admin").run()
    with write(engine_for(console_db)) as conn:
        set_disabled(conn, "alice", True)
    at.run()
    assert "user" not in at.session_state
    assert "disabled" in at.warning[0].value
    assert at.button[0].label == "Log in"


def test_a_write_rechecks_the_role_inside_the_action(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin was demoted after the page was checked and drawn (a race): the cancel
    button is still there, the write itself refuses and audits ``denied``."""
    from console import auth

    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    select_row(at, 0)
    monkeypatch.setattr(auth, "refresh_session", lambda engine: auth.current_user())
    with write(engine_for(console_db)) as conn:
        set_role(conn, "alice", "analyst")
    at.button(key="job_cancel").click().run()
    assert not at.exception
    assert at.error[0].value == "cancel denied: it needs the admin role and alice is analyst"
    assert api.get_job(job_id)["status"] == "scheduled"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["username"], entry["action"], entry["outcome"], entry["role"]) == (
        "alice",
        "cancel",
        "denied",
        "analyst",
    )
    assert entry["job_ids"] == [str(job_id)]
    assert entry["error"] == at.error[0].value


def test_actions_called_as_analyst_are_denied(console_db: str) -> None:
    """The action helpers refuse an analyst session even when called directly."""

    def script() -> None:
        import streamlit as st

        from console import actions

        st.session_state["user"] = {"name": "bob", "role": "analyst"}
        job = st.session_state["job"]
        for name, call in (
            ("cancel", lambda: actions.cancel(job)),
            ("retry", lambda: actions.retry(job)),
            ("submit", lambda: actions.submit("demo.echo", {}, priority=None, queue=None)),
            ("bulk", lambda: actions.bulk("bulk_cancel", "cancel", [job])),
            ("periodic", lambda: actions.run_periodic_now("edurise.outbox_digest", {})),
        ):
            try:
                call()
            except actions.ActionDenied as exc:
                st.error(f"{name}: {exc}")

    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = AppTest.from_function(script, default_timeout=20)
    at.session_state["job"] = str(job_id)
    at.run()
    assert len(at.error) == 5
    entries = audit_rows(engine_for(console_db))
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("cancel", "denied"),
        ("retry", "denied"),
        ("submit", "denied"),
        ("bulk_cancel", "denied"),
        ("periodic_run_now", "denied"),
    ]
    assert {e["username"] for e in entries} == {"bob"}
    assert api.get_job(job_id)["status"] == "scheduled"
    assert len(api.get_jobs()) == 1
