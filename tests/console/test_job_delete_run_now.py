"""Jobs: delete (finished or waiting jobs no worker holds) and run now (scheduled or retrying
jobs), for the opened job and for ticked rows; confirmed by id, audited, admins only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from console import actions, auth, data
from db import job_actions
from db.engine import engine_for, write
from db.ledger import attempts, maintainer
from tasks import api
from tests.console.conftest import audit_rows, job_rows, run_to_completion
from tests.console.test_jobs import button_keys, confirm, jobs_page, tick, tick_ids


def status_of(job_id: object) -> str | None:
    try:
        return str(api.get_job(str(job_id))["status"])
    except Exception:
        return None


def test_delete_the_opened_job_after_a_confirmation_naming_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    keep = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, id=str(job_id))
    at.button(key=f"job_delete_{job_id}").click().run()
    assert status_of(job_id) == "scheduled"  # nothing before the Yes
    assert at.warning[0].value == f"Delete job {job_id}? Deleting cannot be undone."
    confirm(at)
    assert not at.exception
    assert at.success[0].value == f"Job {job_id} deleted"
    assert [r["id"] for r in job_rows(engine_for(console_db))] == [keep]
    assert at.text_input(key="id").value == ""  # the deleted job is closed
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["target"], entry["outcome"], entry["job_ids"]) == (
        "delete",
        str(job_id),
        "ok",
        [str(job_id)],
    )


def test_run_now_makes_a_scheduled_job_due_and_the_stager_queues_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, id=str(job_id))
    at.button(key=f"job_run_now_{job_id}").click().run()
    assert at.warning[0].value == f"Run job {job_id} now?"
    confirm(at)
    assert not at.exception
    assert at.success[0].value.startswith(f"Job {job_id} is due now")
    job = api.get_job(job_id)
    assert job["status"] == "scheduled"
    assert job["scheduled_at"] <= datetime.now(UTC) + timedelta(seconds=1)
    with write(engine_for(console_db)) as conn:
        assert maintainer.stage_due(conn) == 1
    assert status_of(job_id) == "queued"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], entry["job_ids"]) == (
        "run_now",
        "ok",
        [str(job_id)],
    )


def test_buttons_offered_by_status(console_db: str, make_app: Callable[..., AppTest]) -> None:
    scheduled = api.schedule_job("demo.echo", {}, 3600)
    done = api.submit_job("demo.echo", {})
    run_to_completion(console_db, done)
    keys = button_keys(jobs_page(make_app, id=str(scheduled)))
    assert {f"job_delete_{scheduled}", f"job_run_now_{scheduled}"} <= keys
    keys = button_keys(jobs_page(make_app, id=str(done)))
    assert f"job_delete_{done}" in keys and f"job_run_now_{done}" not in keys


def test_delete_and_run_now_ticked_rows_skip_what_they_do_not_apply_to(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    later = [api.schedule_job("demo.echo", {"n": n}, 3600) for n in range(2)]
    done = api.submit_job("demo.echo", {"n": "done"})
    run_to_completion(console_db, done)
    at = jobs_page(make_app)
    tick_ids(at, *later, done)
    at.button(key="jobs_ticked_run_now").click().run()
    assert any("This will run **2 jobs** now" in w.value for w in at.warning)
    assert any(str(done) in c.value and "left out" in c.value for c in at.caption)
    confirm(at)
    assert not at.exception
    assert at.success[0].value.startswith("Run now of 2 job(s): 2 due now")
    entry = audit_rows(engine_for(console_db))[-1]
    assert (entry["action"], entry["target"]) == ("bulk_run_now", "selection")
    assert sorted(entry["job_ids"]) == sorted(str(j) for j in later)

    tick_ids(at, *later, done)
    at.button(key="jobs_ticked_delete").click().run()
    assert any("This will delete **3 jobs**" in w.value for w in at.warning)
    confirm(at)
    assert at.success[0].value.startswith("Delete of 3 job(s): 3 deleted")
    assert job_rows(engine_for(console_db)) == []
    entry = audit_rows(engine_for(console_db))[-1]
    assert (entry["action"], entry["outcome"]) == ("bulk_delete", "ok")
    assert entry["details"]["outcomes"] == {"deleted": 3}


def test_a_job_a_worker_holds_is_not_deleted(console_db: str) -> None:
    job_id = api.submit_job("demo.echo", {})
    with write(engine_for(console_db)) as conn:
        assert attempts.claim(conn, job_id, None) is not None  # running now
        assert job_actions.delete_jobs(conn, [job_id]) == []
        assert job_actions.run_now(conn, [job_id]) == []
    assert status_of(job_id) == "running"


def test_a_confirmed_delete_of_a_job_that_moved_on_is_refused_and_audited(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.submit_job("demo.echo", {})
    at = jobs_page(make_app, id=str(job_id))
    at.button(key=f"job_delete_{job_id}").click().run()
    with write(engine_for(console_db)) as conn:
        attempts.claim(conn, job_id, None)  # a worker took it meanwhile
    confirm(at)
    assert not at.exception
    assert "is running: only" in at.error[0].value
    assert status_of(job_id) == "running"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"]) == ("delete", "error")


def test_analysts_get_neither_button_nor_action(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, "analyst", id=str(job_id))
    tick(at, 0)
    keys = button_keys(at)
    assert not {k for k in keys if "delete" in k or "run_now" in k}
    monkeypatch.setattr(auth, "current_user", lambda: {"name": "bob", "role": "analyst"})
    for call in (actions.delete, actions.run_now):
        with pytest.raises(actions.ActionDenied):
            call(str(job_id))
    assert status_of(job_id) == "scheduled"
    assert [(e["action"], e["outcome"]) for e in audit_rows(engine_for(console_db))] == [
        ("delete", "denied"),
        ("run_now", "denied"),
    ]
    data.clear_job_caches()


def test_delete_and_run_now_on_postgresql(console_pg: str) -> None:
    a = api.schedule_job("demo.echo", {}, 3600)
    b = api.submit_job("demo.echo", {})
    with write(engine_for(console_pg)) as conn:
        assert job_actions.run_now(conn, [a, b]) == [a]
        assert sorted(job_actions.delete_jobs(conn, [a, b, uuid.uuid4()])) == sorted([a, b])
    assert job_rows(engine_for(console_pg)) == []


def test_a_job_a_live_job_depends_on_is_kept_and_edges_go_with_a_delete(
    console_db: str,
) -> None:
    """Where the ledger has workflow edges (``queue_job_deps``), as the retention pruner: a
    job that a live job waits for is not deleted; deleting a job takes its edges along."""
    from db.models import Base

    edges = Base.metadata.tables.get("queue_job_deps")
    if edges is None:
        pytest.skip("this ledger has no workflow edges")
    first = api.schedule_job("demo.echo", {"step": 1}, 3600)
    second = api.schedule_job("demo.echo", {"step": 2}, 7200)
    with write(engine_for(console_db)) as conn:
        conn.execute(edges.insert().values(job_id=second, depends_on=first))
    with pytest.raises(actions.InvalidTransition, match="a live job depends on it"):
        actions._delete(str(first))
    assert status_of(first) == "scheduled"
    actions._delete(str(second))  # the dependent goes, with its edge
    with write(engine_for(console_db)) as conn:
        assert conn.execute(edges.select()).all() == []
    actions._delete(str(first))  # nothing waits for it any more
    assert job_rows(engine_for(console_db)) == []
