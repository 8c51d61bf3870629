"""The Periodic page steers periodic jobs (issue 20, part 3): an admin pauses and resumes one
after a confirmation that names it, audited; analysts see the state but cannot act; skipped
ticks are shown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from db import periodic as store
from db.engine import engine_for, transaction
from db.models import User
from tasks.steering import list_periodic, pause_periodic
from tests.console.conftest import audit_rows
from tests.console.test_metric_pages import open_page

DIGEST = "edurise.outbox_digest"


def steering(name: str) -> dict:
    [row] = [r for r in list_periodic() if r["name"] == name]
    return row


def table_row(at: AppTest, name: str) -> dict:
    return at.dataframe[0].value.set_index("name").loc[name].to_dict()


def choose(at: AppTest, name: str) -> AppTest:
    at.selectbox(key="periodic_control_name").select(name).run()
    return at


def test_an_admin_pauses_and_resumes_a_periodic_job_after_confirming(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = choose(open_page(make_app, "periodic"), DIGEST)
    assert table_row(at, DIGEST)["paused"] is False
    at.text_input(key="periodic_reason").input("exam week").run()
    at.button(key="periodic_pause").click().run()
    # nothing happens before the confirmation, which names the periodic job
    assert steering(DIGEST)["paused"] is False
    assert audit_rows(engine_for(console_db)) == []
    [warning] = at.warning
    assert f"Pause periodic job ` {DIGEST} `?" in warning.value
    assert "exam week" in warning.value
    at.button(key="periodic_confirm_yes").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value == f"Paused periodic job {DIGEST}."
    state = steering(DIGEST)
    assert (state["paused"], state["paused_by"], state["reason"]) == (True, "alice", "exam week")
    row = table_row(at, DIGEST)
    assert (row["health"], row["paused"], row["next run"]) == ("PAUSED", True, "paused")
    assert any(DIGEST in i.value and "alice" in i.value for i in at.info)
    # resume: the button follows the state, and asks again
    at.button(key="periodic_resume").click().run()
    assert f"Resume periodic job ` {DIGEST} `?" in at.warning[0].value
    at.button(key="periodic_confirm_yes").click().run()
    assert at.success[0].value == f"Resumed periodic job {DIGEST}."
    assert steering(DIGEST)["paused"] is False
    entries = audit_rows(engine_for(console_db))
    assert [(e["action"], e["target"], e["outcome"], e["username"]) for e in entries] == [
        ("periodic_pause", DIGEST, "ok", "alice"),
        ("periodic_resume", DIGEST, "ok", "alice"),
    ]
    assert entries[0]["details"] == {"reason": "exam week", "changed": True}


def test_no_or_another_choice_drops_the_confirmation(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = choose(open_page(make_app, "periodic"), DIGEST)
    at.button(key="periodic_pause").click().run()
    at.button(key="periodic_confirm_no").click().run()
    assert not at.warning and "periodic_confirm_yes" not in {b.key for b in at.button}
    at.button(key="periodic_pause").click().run()
    choose(at, "system.prune_metrics")  # asked about the digest: not about this one
    assert "periodic_confirm_yes" not in {b.key for b in at.button}
    assert at.button(key="periodic_pause").label == "Pause system.prune_metrics…"
    assert steering(DIGEST)["paused"] is False
    assert audit_rows(engine_for(console_db)) == []


def test_someone_who_lost_the_admin_role_cannot_confirm(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """The role is re-read from the database on every run: the confirmation shown while
    alice was an admin does nothing once she is not (``actions.perform`` re-checks too)."""
    at = choose(open_page(make_app, "periodic"), DIGEST)
    at.button(key="periodic_pause").click().run()
    with transaction(engine_for(console_db)) as conn:
        conn.execute(update(User).where(User.username == "alice").values(role="analyst"))
    at.button(key="periodic_confirm_yes").click().run()
    assert not at.exception
    assert steering(DIGEST)["paused"] is False
    assert not {"periodic_confirm_yes", "periodic_pause"} & {b.key for b in at.button}
    assert [e for e in audit_rows(engine_for(console_db)) if e["outcome"] == "ok"] == []


def test_an_analyst_sees_the_state_but_cannot_steer(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    pause_periodic(DIGEST, by="alice", reason="holidays")
    at = open_page(make_app, "periodic", "analyst")
    assert table_row(at, DIGEST)["health"] == "PAUSED"
    assert any("holidays" in i.value for i in at.info)
    keys = {b.key for b in at.button}
    assert not keys & {"periodic_pause", "periodic_resume", "periodic_run"}
    assert any("Read-only" in c.value for c in at.caption)


def test_skipped_ticks_are_shown(console_db: str, make_app: Callable[..., AppTest]) -> None:
    tick = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with transaction(engine_for(console_db)) as conn:
        store.ensure_row(conn, "system.prune_jobs")
        store.record_ticks(
            conn,
            "system.prune_jobs",
            store.TickOutcome(last_tick=tick, skipped=3, skipped_tick=tick),
        )
    at = open_page(make_app, "periodic", "analyst")
    row = table_row(at, "system.prune_jobs")
    assert (row["skipped ticks"], row["overlap"], row["catch-up"]) == (3, "skip", "latest")
    assert row["health"] == "SKIPPING: previous run unfinished"
    assert row["last skipped"] == "2026-12-01 10:00:00 UTC"
    assert any("system.prune_jobs: 3" in c.value for c in at.caption)
