"""Alerts in the console: a banner on every page, the Overview section with history, and the
rule silence (admins only, audited)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import alerts as alert_sql
from db.alerts import Observation
from db.engine import engine_for, read, transaction
from db.models import AlertSilence
from tests.console.conftest import audit_rows


def fire(url: str) -> None:
    now = datetime.now(UTC)
    obs = Observation(
        "queue_depth:default",
        "queue_depth",
        "queue_depth",
        5000,
        1000,
        "queue default: depth 5000 above 1000 for 10 min",
        queue_name="default",
    )
    with transaction(engine_for(url)) as conn:
        row = alert_sql.open_or_refire(conn, obs, now)
        alert_sql.add_notification(
            conn,
            alert=row,
            state="firing",
            payload={"message": obs.message, "state": "firing"},
            outbox=True,
            silenced=False,
            webhook_url=None,
            now=now,
        )


def banner(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "active alert" in w.value]


def test_banner_on_every_page_and_alerts_on_overview(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = make_app("analyst").run()
    assert not banner(at)
    assert any("No active alerts" in s.value for s in at.success)
    fire(console_db)
    st.cache_data.clear()  # the console re-reads alerts every 5 s
    at = make_app("analyst").run()
    assert not at.exception
    assert "depth 5000 above 1000" in banner(at)[0]
    tables = [d.value for d in at.dataframe if "firing since" in d.value.columns]
    assert list(tables[0]["alert"]) == ["queue_depth:default"]
    assert any(s.value.startswith("Alerts") for s in at.subheader)
    assert not [b for b in at.button if b.key == "silence_submit"]  # analysts cannot silence
    for page in ("views/jobs.py", "views/workers.py", "views/metrics.py"):
        at.switch_page(page).run()
        assert not at.exception, page
        assert banner(at), page


def test_admin_silences_a_rule_and_it_is_audited(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    fire(console_db)
    at = make_app("admin").run()
    at.selectbox(key="silence_rule").set_value("queue_depth")
    at.number_input(key="silence_minutes").set_value(30)
    at.text_input(key="silence_reason").set_value("deploy in progress")
    at.button(key="silence_submit").click().run()
    assert not at.exception
    assert any("silenced until" in s.value for s in at.success)
    at.run()  # the banner is drawn before the page: the next run shows the silence
    assert "(silenced)" in banner(at)[0]
    with read(engine_for(console_db)) as conn:
        silence = conn.execute(select(AlertSilence.__table__)).one()
    assert silence.rule == "queue_depth" and silence.silenced_by == "alice"
    entry = audit_rows(engine_for(console_db))[-1]
    assert (entry["action"], entry["outcome"], entry["target"]) == (
        "alert_silence",
        "ok",
        "queue_depth",
    )
    assert entry["details"]["minutes"] == 30


def test_an_analyst_cannot_silence(console_db: str) -> None:
    def script() -> None:
        import streamlit as st

        from console import actions

        st.session_state["user"] = {"name": "bob", "role": "analyst"}
        try:
            actions.silence_rule("queue_depth", 60)
        except actions.ActionDenied as exc:
            st.error(str(exc))

    at = AppTest.from_function(script, default_timeout=20).run()
    assert "alert_silence denied" in at.error[0].value
    with read(engine_for(console_db)) as conn:
        assert conn.execute(select(AlertSilence.__table__)).first() is None
    entry = audit_rows(engine_for(console_db))[-1]
    assert (entry["action"], entry["outcome"], entry["username"]) == (
        "alert_silence",
        "denied",
        "bob",
    )
