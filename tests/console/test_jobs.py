"""The Jobs page: filters, detail, cancel/retry (one, ticked and bulk), actions bound to job ids
through live refreshes, URLs, per-status counts, role checks, audit."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from console import data, ui
from db import queries
from db.engine import engine_for, read, write
from db.ledger import attempts
from db.models import Job
from db.users import set_disabled, set_role
from tasks import api
from tests.console.conftest import audit_rows, run_to_completion, run_to_failure


def jobs_page(make_app: Callable[..., AppTest], role: str = "admin", **params: str) -> AppTest:
    at = make_app(role).run()
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("views/jobs.py").run()
    assert not at.exception
    return at


def table_ids(at: AppTest) -> list[str]:
    """The job ids of the table's rows, in order (the id cells are links ``jobs?id=<id>``)."""
    links = list(at.dataframe[0].value["id"])
    assert all(link.startswith("jobs?id=") for link in links)
    return [link.removeprefix("jobs?id=") for link in links]


def tick(at: AppTest, *indices: int) -> AppTest:
    """Tick rows of the table as drawn now (its key names the ids it was drawn with)."""
    key = at.dataframe[0].key
    at.session_state[key] = {"selection": {"rows": list(indices), "columns": [], "cells": []}}
    return at.run()


def tick_ids(at: AppTest, *job_ids: object) -> AppTest:
    shown = table_ids(at)
    return tick(at, *(shown.index(str(j)) for j in job_ids))


def opened(at: AppTest) -> str | None:
    heads = [h.value for h in at.subheader if h.value.startswith("Job ")]
    return heads[0].removeprefix("Job ") if heads else None


def button_keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}


def confirm(at: AppTest) -> AppTest:
    [yes] = [b for b in at.button if b.key and b.key.startswith("jobs_confirm_yes_")]
    return yes.click().run()


def backdate(url: str, *job_ids: uuid.UUID) -> None:
    """Make these jobs (in this order, oldest first) older than any job created later: the
    SQLite clock has millisecond resolution, so jobs inserted in one go can tie."""
    now = datetime.now(UTC)
    with write(engine_for(url)) as conn:
        for i, job_id in enumerate(job_ids):
            age = timedelta(hours=1, seconds=len(job_ids) - i)
            conn.execute(update(Job).where(Job.id == job_id).values(created_at=now - age))


def arrive(n: int) -> list[uuid.UUID]:
    """New jobs arrive (newest first: they push every row down) and the short read caches
    expire, as a live refresh a few seconds later would see them."""
    new = [api.schedule_job("demo.echo", {"arrival": i}, 3600) for i in range(n)]
    data.clear_job_caches()
    return new


def test_lists_and_filters_jobs(console_db: str, make_app: Callable[..., AppTest]) -> None:
    a = api.submit_job("demo.echo", {"course": "algebra-101"})
    b = api.schedule_job("demo.echo", {"course": "biology"}, 3600)
    c = api.submit_job("demo.sleep", {"seconds": 1}, queue="reports")
    at = jobs_page(make_app)
    assert sorted(table_ids(at)) == sorted([str(a), str(b), str(c)])  # newest first (ties by id)
    at.multiselect(key="status").select("scheduled").run()
    assert table_ids(at) == [str(b)]
    at.multiselect(key="status").unselect("scheduled").run()
    at.selectbox(key="type").select("demo.sleep").run()
    assert table_ids(at) == [str(c)]
    at.selectbox(key="type").select("(any)").run()
    at.text_input(key="q").input("algebra").run()
    assert table_ids(at) == [str(a)]
    at.text_input(key="q").input(str(b)).run()
    assert table_ids(at) == [str(b)]
    at.text_input(key="q").input("").run()
    tick_ids(at, a)
    assert opened(at) == str(a)
    at.selectbox(key="queue").select("reports").run()
    assert table_ids(at) == [str(c)]
    assert opened(at) == str(a)  # the opened job is named by its id, not by the table


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
    at.text_input(key="q").input("ada.lovelace@EXAMPLE.EDU").run()
    assert table_ids(at) == [str(old)]
    at.text_input(key="q").input("lovelace").run()
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
    at.text_input(key="q").input(text[:13].upper()).run()
    assert table_ids(at) == [text]
    assert api.get_jobs(search=text[:8] + text[9:13]) == []  # not the form of an id


def test_a_search_past_its_budget_says_so_and_can_search_every_job(
    console_pg: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a ledger too large to search within the budget the page does not claim "no match":
    it says how far back it searched, and "Search all jobs" reads every payload."""
    monkeypatch.setattr(data, "SEARCH_BUDGET_SECONDS", 0.0)  # any ledger is too large now
    needle = api.submit_job("demo.echo", {"email": "grace.hopper@example.edu"})
    api.submit_jobs([{"type": "demo.echo", "data": {"i": i}} for i in range(20)])
    at = jobs_page(make_app)
    at.text_input(key="q").input("grace.hopper").run()
    assert any("among the jobs searched" in i.value for i in at.info)  # no table
    assert any("payload search stopped after 0 s" in c.value for c in at.caption)
    at.button(key="jobs_search_all_button").click().run()
    assert table_ids(at) == [str(needle)]
    assert not any("payload search stopped" in c.value for c in at.caption)
    at.text_input(key="q").input("grace").run()  # a new search is budgeted again
    assert any("payload search stopped" in c.value for c in at.caption)


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


def test_newest_first_per_status_is_the_plain_order_on_postgresql(console_pg: str) -> None:
    """PostgreSQL reads the newest jobs per status along the (status, created_at) index and
    merges them (no sort of the whole table): the same rows in the same order as one ORDER BY,
    ties on created_at included, for any statuses, time bounds, page and columns."""
    from sqlalchemy import select

    ids = api.submit_jobs([{"type": "demo.echo", "data": {"i": i}} for i in range(60)])
    statuses = ["queued", "scheduled", "failed", "cancelled", "completed"]
    base = datetime.now(UTC).replace(microsecond=0)
    with write(engine_for(console_pg)) as conn:
        for i, job_id in enumerate(ids):  # the newest 30 queued: one status fills pages
            status = "queued" if i < 30 else statuses[i % len(statuses)]
            finished = base if status in ("failed", "cancelled", "completed") else None
            conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=status,
                    finished_at=finished,
                    created_at=base - timedelta(seconds=i // 4),  # four jobs per second: ties
                )
            )
    engine = engine_for(console_pg)
    cases = [
        {},
        {"limit": 7, "offset": 3},
        {"limit": 5, "offset": 21},
        {"limit": 10, "offset": 26},
        {"status": "failed"},
        {"status": ["cancelled", "queued"], "limit": 5, "offset": 4},
        {"since": base - timedelta(seconds=6), "until": base - timedelta(seconds=2)},
        {"limit": 100, "offset": 55},
        {"columns": ["id", "status", "created_at"], "limit": 9},
    ]
    for case in cases:
        with read(engine) as conn:
            merged = queries.get_jobs(conn, **case)
            plain = queries._filtered(
                conn,
                select(
                    *(
                        [Job.__table__.c[c] for c in case["columns"]]
                        if "columns" in case
                        else [Job.__table__]
                    )
                ),
                status=case.get("status"),
                since=case.get("since"),
                until=case.get("until"),
            ).order_by(Job.created_at.desc(), Job.id)
            plain = plain.limit(case.get("limit", 100)).offset(case.get("offset", 0))
            expected = [dict(r._mapping) for r in conn.execute(plain)]
        assert merged == expected, case
        assert merged or case.get("offset", 0) >= 55, case


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
    tick_ids(at, failed)
    assert opened(at) == str(failed)
    assert [m.value for m in at.metric][:2] == ["failed", "` demo.fail `"]
    assert len(at.expander) >= 2
    codes = [c.value for c in at.code]
    assert sum("DemoFailure: it broke" in c and "Traceback" in c for c in codes) == 2
    assert at.text_input(key="id").value == str(failed)  # the box (and URL) names the job
    at.text_input(key="id").input(str(done)).run()
    assert opened(at) == str(done)
    assert json.loads(at.json[0].value) == {"n": 5}  # data
    assert json.loads(at.json[1].value) == {"n": 5}  # result
    at.text_input(key="id").input("").run()
    assert opened(at) is None


def test_cancel_and_retry_one_job_after_a_confirmation_naming_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    tick(at, 0)
    at.button(key=f"job_cancel_{job_id}").click().run()
    assert api.get_job(job_id)["status"] == "scheduled"  # nothing happens before the Yes
    assert at.warning[0].value == f"Cancel job {job_id}?"
    confirm(at)
    assert not at.exception
    assert api.get_job(job_id)["status"] == "cancelled"
    assert at.success[0].value == f"Job {job_id}: cancelled before it started: it will never run"
    at.button(key=f"job_retry_{job_id}").click().run()
    assert at.warning[0].value == f"Retry job {job_id}?"
    confirm(at)
    assert api.get_job(job_id)["status"] == "queued"
    entries = audit_rows(engine_for(console_db))
    assert [(e["action"], e["outcome"], e["target"], e["job_ids"]) for e in entries] == [
        ("cancel", "ok", str(job_id), [str(job_id)]),
        ("retry", "ok", str(job_id), [str(job_id)]),
    ]
    assert entries[0]["details"] == {"outcome": "cancelled"}


def test_no_ends_a_confirmation_without_acting(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    tick(at, 0)
    at.button(key=f"job_cancel_{job_id}").click().run()
    [no] = [b for b in at.button if b.key and b.key.startswith("jobs_confirm_no_")]
    no.click().run()
    assert not at.warning
    assert api.get_job(job_id)["status"] == "scheduled"
    assert audit_rows(engine_for(console_db)) == []


def test_an_impossible_cancel_shows_the_api_message_and_is_audited(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    tick(at, 0)
    at.button(key=f"job_cancel_{job_id}").click().run()
    api.cancel_job(job_id)  # someone else was faster; the confirmation is still on screen
    confirm(at)
    assert not at.exception
    assert "cancel" in at.error[0].value and "Traceback" not in at.error[0].value
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], entry["job_ids"]) == (
        "cancel",
        "error",
        [str(job_id)],
    )
    assert entry["error"] == at.error[0].value


def test_live_refreshes_between_select_and_click_never_change_the_job_acted_on(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Issue 16's race: job A is picked in the table, new jobs arrive (each refresh pushes A
    down), then Cancel under A's detail is clicked and confirmed: A is cancelled, no other."""
    a = api.schedule_job("demo.echo", {"job": "A"}, 3600)
    backdate(console_db, a)
    at = jobs_page(make_app)
    tick(at, 0)
    assert opened(at) == str(a)
    arrivals = arrive(3)
    at.run()  # a live refresh: the table now starts with the arrivals, A is row 3
    assert table_ids(at).index(str(a)) == 3
    assert opened(at) == str(a)
    assert at.session_state["jobs_ticked"] == [str(a)]
    arrivals += arrive(2)
    at.button(key=f"job_cancel_{a}").click().run()
    assert opened(at) == str(a)
    assert at.warning[0].value == f"Cancel job {a}?"
    arrivals += arrive(2)
    at.run()  # another refresh while the confirmation is on screen
    assert at.warning[0].value == f"Cancel job {a}?"
    assert table_ids(at)[0] in {str(j) for j in arrivals}  # row 0 is someone else's job
    confirm(at)
    assert api.get_job(a)["status"] == "cancelled"
    assert {api.get_job(j)["status"] for j in arrivals} == {"scheduled"}
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["target"], entry["job_ids"]) == ("cancel", str(a), [str(a)])
    assert at.success[0].value.startswith(f"Job {a}: cancelled")


def test_ticked_rows_are_acted_on_by_id_through_refreshes(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Tick two rows, let jobs arrive (rows move; ticks stay on the same jobs, even off the
    page), then cancel the ticked ones: the confirmation and the audit entry name exactly them."""
    a = api.schedule_job("demo.echo", {"job": "A"}, 3600)
    b = api.schedule_job("demo.echo", {"job": "B"}, 3600)
    c = api.schedule_job("demo.echo", {"job": "C"}, 3600)
    backdate(console_db, a, b, c)
    at = jobs_page(make_app)
    at.selectbox(key="jobs_page_size").select(25).run()
    tick_ids(at, a, c)
    assert set(at.session_state["jobs_ticked"]) == {str(a), str(c)}
    arrivals = arrive(24)  # A is pushed off the first page, C is still on it
    at.run()
    shown = table_ids(at)
    assert str(a) not in shown and str(c) in shown
    assert any("2 job(s) ticked** (1 not on this page)" in m.value for m in at.markdown)
    key = at.dataframe[0].key
    assert at.session_state[key]["selection"]["rows"] == [shown.index(str(c))]
    at.button(key="jobs_ticked_cancel").click().run()
    assert any("This will cancel **2 jobs**" in w.value for w in at.warning)
    listed = next(c_.value for c_ in at.code if str(a) in c_.value)
    assert sorted(listed.splitlines()) == sorted([str(a), str(c)])
    arrivals += arrive(2)
    at.run()
    confirm(at)
    assert {str(j): api.get_job(j)["status"] for j in (a, b, c)} == {
        str(a): "cancelled",
        str(b): "scheduled",
        str(c): "cancelled",
    }
    assert {api.get_job(j)["status"] for j in arrivals} == {"scheduled"}
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "bulk_cancel",
        "selection",
        "ok",
    )
    assert sorted(entry["job_ids"]) == sorted([str(a), str(c)])
    assert entry["details"]["outcomes"] == {"cancelled": 2}
    assert at.session_state["jobs_ticked"] == []
    assert at.success[0].value.startswith("Cancel of 2 job(s): 2 cancelled")


def test_cancel_ticked_reports_cancelled_and_requested_and_skips_finished_jobs(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    waiting = api.schedule_job("demo.echo", {"w": 1}, 3600)
    running = api.submit_job("demo.echo", {"r": 1})
    with write(engine_for(console_db)) as conn:  # a worker holds it
        assert attempts.claim(conn, running, None) is not None
    done = api.submit_job("demo.echo", {"d": 1})
    run_to_completion(console_db, done)
    at = jobs_page(make_app)
    tick_ids(at, waiting, running, done)
    at.button(key="jobs_ticked_cancel").click().run()
    assert any("This will cancel **2 jobs**" in w.value for w in at.warning)
    assert any(f"{done} (completed)" in c.value and "left out" in c.value for c in at.caption)
    confirm(at)
    assert api.get_job(waiting)["status"] == "cancelled"
    assert api.get_job(running)["cancel_requested_at"] is not None
    assert api.get_job(done)["status"] == "completed"
    [entry] = audit_rows(engine_for(console_db))
    assert sorted(entry["job_ids"]) == sorted([str(waiting), str(running)])
    assert entry["details"]["outcomes"] == {"cancelled": 1, "cancel_requested": 1}
    assert entry["details"]["skipped"] == [{"job_id": str(done), "status": "completed"}]
    assert at.success[0].value.startswith(
        "Cancel of 2 job(s): 1 cancelled (never started, never will), 1 cancel requested"
    )


def test_retry_ticked_and_a_failure_is_reported(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    ids = [api.schedule_job("demo.echo", {"i": i}, 3600) for i in range(3)]
    for job_id in ids:
        api.cancel_job(job_id)
    at = jobs_page(make_app)
    tick_ids(at, *ids)
    at.button(key="jobs_ticked_retry").click().run()
    assert any("This will retry **3 jobs**" in w.value for w in at.warning)
    api.retry_job(ids[1])  # meanwhile someone retried one of them
    confirm(at)
    assert {api.get_job(i)["status"] for i in ids} == {"queued"}
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], entry["details"]["succeeded"]) == (
        "bulk_retry",
        "error",
        2,
    )
    assert at.warning[0].value.startswith("Retry of 3 job(s): 2 queued again; 1 could not")
    assert str(ids[1]) in at.warning[0].value


def test_bulk_cancel_everything_matching_the_filter(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    keep = api.schedule_job("demo.sleep", {"seconds": 1}, 3600)
    targets = [api.schedule_job("demo.echo", {"i": i}, 3600) for i in range(3)]
    done = api.submit_job("demo.echo", {})
    run_to_completion(console_db, done)
    at = jobs_page(make_app)
    at.selectbox(key="type").select("demo.echo").run()
    at.button(key="jobs_bulk_cancel").click().run()
    assert any("This will cancel **3 jobs**" in w.value for w in at.warning)  # not the done one
    listed = next(c.value for c in at.code if str(targets[0]) in c.value)
    assert sorted(listed.splitlines()) == sorted(str(t) for t in targets)
    arrivals = arrive(2)  # a job matching the filter arrives: it was not confirmed
    at.run()
    confirm(at)
    assert not at.exception
    assert {api.get_job(t)["status"] for t in targets} == {"cancelled"}
    assert {api.get_job(j)["status"] for j in arrivals} == {"scheduled"}
    assert api.get_job(keep)["status"] == "scheduled"
    assert api.get_job(done)["status"] == "completed"
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], entry["target"]) == ("bulk_cancel", "ok", "filter")
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
    assert any("retry **2 jobs**" in w.value for w in at.warning)
    [no] = [b for b in at.button if b.key and b.key.startswith("jobs_confirm_no_")]
    no.click().run()
    assert not at.warning
    assert {api.get_job(i)["status"] for i in ids} == {"cancelled"}
    at.button(key="jobs_bulk_retry").click().run()
    confirm(at)
    assert {api.get_job(i)["status"] for i in ids} == {"queued"}
    [entry] = audit_rows(engine_for(console_db))
    assert (entry["action"], entry["outcome"], len(entry["job_ids"])) == ("bulk_retry", "ok", 2)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_job_url_opens_the_job_by_full_id_or_unique_prefix(
    database: str, request: pytest.FixtureRequest, make_app: Callable[..., AppTest]
) -> None:
    url = request.getfixturevalue("console_db" if database == "sqlite" else "console_pg")
    ids = [api.schedule_job("demo.echo", {"i": i}, 3600) for i in range(3)]
    # two jobs whose ids share their first 8 hex digits
    twins = [
        uuid.UUID("abcdef12-0000-4000-8000-000000000001"),
        uuid.UUID("abcdef12-9999-4000-8000-000000000002"),
    ]
    with write(engine_for(url)) as conn:
        for old, new in zip(ids[1:], twins, strict=True):
            conn.execute(update(Job).where(Job.id == old).values(id=new))
    target = str(ids[0])
    for ref in (target, target[:8], target[:8].upper(), target.replace("-", "")[:14]):
        at = jobs_page(make_app, id=ref)
        assert opened(at) == target, ref
        assert at.query_params["id"] == ref  # the link's own text stays in the URL
    at = jobs_page(make_app, id="ABCDEF12-9")
    assert opened(at) == str(twins[1])
    at = jobs_page(make_app, id="abcdef12")
    assert opened(at) is None
    [warning] = at.warning
    assert "2 jobs have an id starting with ` abcdef12 `" in warning.value
    assert all(f"jobs?id={t}" in warning.value for t in twins)
    assert at.query_params["id"] == "abcdef12"  # the link is kept while it names no job
    for ref, problem in (
        ("abc", "not a job id"),
        ("zzzzzzzzzz", "not a job id"),
        ("00000000", "no job id starts with it"),
        (str(uuid.UUID(int=7)), "no such job"),
    ):
        at = jobs_page(make_app, id=ref)
        assert opened(at) is None
        assert problem in at.error[0].value, ref
        assert any(c.value == ref for c in at.code)


def test_filters_come_from_the_url_and_go_back_into_it(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    failed = api.submit_job("demo.fail", {"fail_times": 9}, max_attempts=1)
    run_to_failure(console_db, failed, "DemoFailure: quiz import")
    other = api.submit_job("demo.fail", {"fail_times": 9}, max_attempts=1)
    run_to_failure(console_db, other, "DemoFailure: other")
    api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, status="failed", type="demo.fail", queue="default", q=str(failed))
    assert at.multiselect(key="status").value == ["failed"]
    assert at.selectbox(key="type").value == "demo.fail"
    assert at.selectbox(key="queue").value == "default"
    assert at.text_input(key="q").value == str(failed)
    assert table_ids(at) == [str(failed)]
    # (the browser writes a bound widget's changes into the URL; AppTest has no browser:
    # tests/browser/test_jobs_e2e.py checks that part and the reload)
    at = jobs_page(make_app, status=["failed", "cancelled"], type="demo.fail")
    assert at.multiselect(key="status").value == ["failed", "cancelled"]
    assert sorted(table_ids(at)) == sorted([str(failed), str(other)])
    tick_ids(at, failed)
    assert at.text_input(key="id").value == str(failed)
    at.switch_page("views/overview.py").run()  # and back through the sidebar: all is kept
    at.switch_page("views/jobs.py").run()
    assert at.multiselect(key="status").value == ["failed", "cancelled"]
    assert at.selectbox(key="type").value == "demo.fail"
    assert opened(at) == str(failed)
    at.button(key=f"jobs_close_{failed}").click().run()
    assert at.text_input(key="id").value == ""
    assert opened(at) is None
    at = jobs_page(make_app, status=["failed", "nonsense"], type="no.such.type")
    assert at.multiselect(key="status").value == ["failed"]  # what is not a status is dropped
    assert at.selectbox(key="type").value == "(any)"


def test_per_status_counts_are_live_and_filter_on_click(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        api.schedule_job("demo.echo", {"i": i}, 3600)
    done = api.submit_job("demo.echo", {})
    run_to_completion(console_db, done)
    at = jobs_page(make_app)
    labels = {b.key: b.label for b in at.button if b.key.startswith("jobs_count_")}
    assert labels["jobs_count_scheduled"] == "scheduled 3"
    assert labels["jobs_count_completed"] == "completed 1"
    assert labels["jobs_count_failed"] == "failed 0"
    arrive(2)
    at.run()
    assert at.button(key="jobs_count_scheduled").label == "scheduled 5"
    at.button(key="jobs_count_completed").click().run()
    assert at.multiselect(key="status").value == ["completed"]
    assert table_ids(at) == [str(done)]
    monkeypatch.setattr(data, "COUNT_CAP", 4)
    data.clear_job_caches()
    at.run()
    assert at.button(key="jobs_count_scheduled").label == "scheduled 4+"  # SQLite: no estimate


def test_counts_above_the_cap_are_estimated_on_postgresql(
    console_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.submit_jobs([{"type": "demo.echo", "data": {"i": i}, "schedule": 3600} for i in range(40)])
    with write(engine_for(console_pg)) as conn:
        conn.exec_driver_sql("ANALYZE queue_jobs")
    monkeypatch.setattr(data, "COUNT_CAP", 10)
    counts = data.status_counts(console_pg)
    assert counts["scheduled"] == data.StatusCount(40, exact=False, estimated=True)
    assert counts["scheduled"].label() == "≈40"
    assert counts["queued"] == data.StatusCount(0)


def test_job_text_is_shown_as_text_never_as_markdown(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Issue 17: errors, tracebacks, progress messages, worker and type names and other job
    text reach the page only through elements that show text (st.text, st.code, st.json,
    dataframes) or escaped; no Markdown element carries a live link, image or HTML."""
    image = "![x](http://127.0.0.1:9/track.png)"
    html = '<img src="http://127.0.0.1:9/t.gif">'
    link = "[click](http://127.0.0.1:9/phish)"
    job_id = api.submit_job("demo.fail", {"fail_times": 9}, max_attempts=1, idempotency_key=link)
    run_to_failure(console_db, job_id, f"DemoFailure: {image} {html}")
    worker = uuid.uuid4()
    from db.models import Worker

    now = datetime.now(UTC)
    with write(engine_for(console_db)) as conn:
        conn.execute(
            Worker.__table__.insert().values(
                id=worker,
                name=f"**w** {image}",
                status="running",
                started_at=now,
                last_heartbeat=now,
                hostname="h",
                pid=1,
                queues=["default"],
                concurrency=1,
                worker_kind="thread",
                jobs_processed=0,
                jobs_failed=0,
            )
        )
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                type=f"demo.{image}",
                worker_id=worker,
                progress=0.5,
                progress_message=f"{link} {image}",
                errors=[{**e, "worker": str(worker)} for e in api.get_job(job_id)["errors"]],
            )
        )
    at = jobs_page(make_app, id=str(job_id))
    assert opened(at) == str(job_id)
    markdown_sources = [
        *(e.value for e in at.markdown),
        *(e.value for e in at.caption),
        *(e.value for e in at.warning),
        *(e.value for e in at.error),
        *(e.value for e in at.info),
        *(e.value for e in at.success),
        *(e.value for e in at.subheader),
        *(m.label for m in at.metric),
        *(m.value for m in at.metric),
        *(e.label for e in at.expander),
        *(b.label for b in at.button),
        *(p.proto.text for p in at.get("progress")),
    ]
    for source in markdown_sources:
        outside_code = re.sub(r"(`+) .*? \1", "", source)  # a code span shows its text verbatim
        # the job's text, unescaped (escaped, ``\\!\\[x``, it shows as text)
        for live in (r"(?<!\\)!(?<!\\)\[x", r"(?<!\\)\[click", r"(?<!\\)<img", r"(?<!\\)\*\*w"):
            assert not re.search(live, outside_code), source
    assert f"` demo.{image} `" in [m.value for m in at.metric]  # a code span: verbatim
    assert f"{link} {image}" in [t.value for t in at.text]  # the progress message
    assert any(image in c.value and "Traceback" in c.value for c in at.code)
    assert any(f"**w** {image}" in t.value for t in at.text)  # the worker's name
    assert any("DemoFailure: \\!\\[x\\](http\\://" in e.label for e in at.expander)
    timing = at.dataframe[-1].value
    assert link in list(timing["value"])  # the idempotency key, in a text cell
    assert any(f"**w** {image}" in v for v in timing["value"])


def test_bulk_and_workers_never_read_payloads(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Issue 17: the table, the per-status counts, bulk actions and the Workers page select ids
    and the few columns they show: no statement selects a job's data, result or errors, except
    the one read of the job opened in the detail."""
    from sqlalchemy import event

    big = {"blob": "x" * 200_000}
    ids = [api.schedule_job("demo.echo", big, 3600) for _ in range(3)]
    running = api.submit_job("demo.echo", big)
    with write(engine_for(console_db)) as conn:
        assert attempts.claim(conn, running, None) is not None
    statements: list[str] = []

    def spy(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = engine_for(console_db)
    event.listen(engine, "before_cursor_execute", spy)
    try:
        at = jobs_page(make_app)
        tick_ids(at, ids[0])
        at.button(key=f"jobs_close_{ids[0]}").click().run()
        at.button(key="jobs_ticked_cancel").click().run()
        at.button(key="jobs_bulk_cancel").click().run()
        at.switch_page("views/workers.py").run()
        assert not at.exception
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    job_reads = [s for s in statements if "queue_jobs" in s]
    full_reads = [
        s
        for s in job_reads
        if any(
            "queue_jobs.data" in columns or "queue_jobs.errors" in columns
            for columns in re.findall(r"SELECT(.*?)FROM", s, re.S | re.I)
        )
    ]
    for ids_only in (
        "SELECT queue_jobs.id \nFROM",  # bulk on the filter
        "SELECT queue_jobs.id, queue_jobs.status \nFROM",  # the ticked jobs' statuses
        "SELECT queue_jobs.id, queue_jobs.type, queue_jobs.worker_id, queue_jobs.started_at \nFROM",
    ):
        assert any(s.startswith(ids_only) for s in job_reads), ids_only
    [opened_job] = full_reads  # the job opened by the tick (until Close) is read whole, once
    assert "WHERE queue_jobs.id = " in opened_job


def test_an_analyst_opens_job_urls_read_only(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app, "analyst", id=str(job_id)[:8], status="scheduled")
    assert opened(at) == str(job_id)
    assert table_ids(at) == [str(job_id)]
    tick(at, 0)
    keys = button_keys(at)
    assert not {k for k in keys if k.startswith(("job_cancel", "job_retry", "jobs_bulk"))}
    assert not keys & {"jobs_ticked_cancel", "jobs_ticked_retry"}
    assert any("Read-only" in c.value for c in at.caption)


def test_a_demoted_admin_loses_the_actions_at_the_next_click(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """Every run re-reads the role from the database."""
    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    tick(at, 0)
    assert f"job_cancel_{job_id}" in button_keys(at)
    with write(engine_for(console_db)) as conn:
        set_role(conn, "alice", "analyst")
    at.run()
    assert at.session_state["user"] == {"name": "alice", "role": "analyst"}
    assert f"job_cancel_{job_id}" not in button_keys(at)
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
    """The admin was demoted after the page was checked and drawn (a race): the confirmation
    is still there, the write itself refuses and audits ``denied``."""
    from console import auth

    job_id = api.schedule_job("demo.echo", {}, 3600)
    at = jobs_page(make_app)
    tick(at, 0)
    at.button(key=f"job_cancel_{job_id}").click().run()
    monkeypatch.setattr(auth, "refresh_session", lambda engine: auth.current_user())
    with write(engine_for(console_db)) as conn:
        set_role(conn, "alice", "analyst")
    confirm(at)
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


def test_local_times_show_the_browsers_zone_when_switched_on(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidebar's *Local times* shows every time in the browser's zone; off (the default)
    they are UTC. Without a known browser zone the switch is disabled."""
    job_id = api.submit_job("demo.echo", {})
    at = jobs_page(make_app, id=str(job_id))
    assert at.toggle(key=ui.LOCAL_TIMES).disabled  # AppTest has no browser zone

    monkeypatch.setattr(ui, "browser_zone", lambda: ZoneInfo("Asia/Kolkata"))  # UTC+05:30
    at = jobs_page(make_app, id=str(job_id))

    def created() -> str:
        timing = next(d.value for d in at.dataframe if "value" in d.value.columns)
        return str(timing.set_index("")["value"]["created"])

    assert created().split(" (")[0].endswith(" UTC")
    toggle = at.toggle(key=ui.LOCAL_TIMES)
    assert toggle.label == "Local times (Asia/Kolkata)" and not toggle.disabled
    toggle.set_value(True).run()
    shown = created().split(" (")[0]
    assert shown.endswith(" IST")
    utc = api.get_job(job_id)["created_at"].astimezone(ZoneInfo("Asia/Kolkata"))
    assert shown == utc.strftime("%Y-%m-%d %H:%M:%S IST")
