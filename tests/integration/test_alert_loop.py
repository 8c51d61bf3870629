"""The alerts loop on crafted rollups (SQLite and PostgreSQL): every rule fires once, holds
without duplicates, repeats after the interval, resolves; state survives a restart; two loops
at once notify once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db.engine import engine_for
from tasks.alerts.rules import DEFAULT_RULES, Rule
from tasks.maintenance.alerts import AlertEvaluator, AlertsConfig
from tasks.registry import Schedule
from tests.integration.alert_helpers import (
    add_minutes,
    add_tick_job,
    add_type_minutes,
    add_worker,
    clear_alerts,
    clear_rollups,
    events,
    now_minute,
    outbox,
)

PERIODIC = "alerts.tick"
SCHEDULE = Schedule(every=timedelta(minutes=1))


def loop(url: str, **config: Any) -> AlertEvaluator:
    return AlertEvaluator(
        engine_for(url),
        AlertsConfig(background_delivery=False, **config),
        schedules=lambda: [(PERIODIC, SCHEDULE, "default")],
    )


def _error_rate(url: str, t: datetime) -> None:
    add_minutes(url, "q1", t, 5, error_count=5, job_count=20, completed_count=15, failed_count=5)


def _depth(url: str, t: datetime) -> None:
    add_minutes(url, "q1", t, 10, depth=5000)
    add_worker(url, ["q1"], t + timedelta(hours=1))  # served (fresh heartbeat), just slow


def _wait(url: str, t: datetime) -> None:
    add_minutes(url, "q1", t, 3, wait_p95=120_000.0)


def _no_worker(url: str, t: datetime) -> None:
    add_minutes(url, "q1", t, 2, depth=7)
    add_worker(url, ["other"], t)


def _type_failing(url: str, t: datetime) -> None:
    add_type_minutes(url, "q1", "demo.bad", t, 5, completed_count=0, failed_count=1, job_count=1)
    add_type_minutes(url, "q1", "demo.good", t, 5, completed_count=1, failed_count=1)


def _periodic_late(url: str, t: datetime) -> None:
    add_tick_job(url, PERIODIC, t - timedelta(minutes=10))  # then nothing: late


def _periodic_fixed(url: str, t: datetime) -> None:
    for i in range(0, 10):
        add_tick_job(url, PERIODIC, t - timedelta(minutes=i))


CASES: dict[str, tuple[Callable[[str, datetime], None], str]] = {
    "error_rate": (_error_rate, "error_rate:q1"),
    "queue_depth": (_depth, "queue_depth:q1"),
    "wait_p95": (_wait, "wait_p95:q1"),
    "no_live_worker": (_no_worker, "no_live_worker:q1"),
    "type_failing": (_type_failing, "type_failing:q1:demo.bad"),
    "periodic_late": (_periodic_late, f"periodic_late:{PERIODIC}"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_rule_fires_once_and_resolves(ledger_url: str, kind: str) -> None:
    clear_alerts(ledger_url)
    craft, key = CASES[kind]
    t = now_minute()
    craft(ledger_url, t)
    evaluator = loop(ledger_url)
    assert evaluator.run_once(now=t) == 1
    assert events(ledger_url) == [(key, "firing")]
    for i in range(3):  # holds: no duplicates
        assert evaluator.run_once(now=t + timedelta(seconds=10 * (i + 1))) == 0
    row = outbox(ledger_url)[0]
    assert row["outbox"] is True and row["delivery"] == "none"  # no webhook URL configured
    assert row["payload"]["state"] == "firing" and row["payload"]["rule"] == kind
    if kind == "periodic_late":
        _periodic_fixed(ledger_url, t)
    else:
        clear_rollups(ledger_url)
    assert evaluator.run_once(now=t + timedelta(seconds=50)) == 1
    assert events(ledger_url) == [(key, "firing"), (key, "resolved")]
    resolved = outbox(ledger_url)[1]["payload"]
    assert resolved["resolved_at"] is not None and resolved["fired_at"] is not None


def test_healthy_rollups_fire_nothing(ledger_url: str) -> None:
    clear_alerts(ledger_url)
    t = now_minute()
    add_minutes(ledger_url, "q1", t, 10, depth=3)
    add_worker(ledger_url, ["q1"], t + timedelta(hours=1))
    add_type_minutes(ledger_url, "q1", "demo.ok", t, 5)
    assert loop(ledger_url).run_once(now=t) == 0


def test_repeat_after_interval_and_state_survives_restart(ledger_url: str) -> None:
    clear_alerts(ledger_url)
    t = now_minute()
    _depth(ledger_url, t)
    first = loop(ledger_url, repeat_minutes=1)
    assert first.run_once(now=t) == 1
    assert first.run_once(now=t + timedelta(seconds=30)) == 0
    restarted = loop(ledger_url, repeat_minutes=1)  # a new maintainer: state is in the table
    assert restarted.run_once(now=t + timedelta(seconds=40)) == 0
    assert restarted.run_once(now=t + timedelta(seconds=61)) == 1
    assert restarted.run_once(now=t + timedelta(seconds=90)) == 0
    assert [s for _, s in events(ledger_url)] == ["firing", "repeat"]
    clear_rollups(ledger_url)
    assert loop(ledger_url).run_once(now=t + timedelta(seconds=100)) == 1
    _depth(ledger_url, t)  # fires again later: a new firing notification
    assert loop(ledger_url).run_once(now=t + timedelta(seconds=110)) == 1
    assert [s for _, s in events(ledger_url)] == ["firing", "repeat", "resolved", "firing"]


def test_disabled_rule_and_silence(ledger_url: str) -> None:
    from db import alerts as alert_sql
    from db.engine import transaction

    clear_alerts(ledger_url)
    t = now_minute()
    _depth(ledger_url, t)
    add_minutes(ledger_url, "q2", t, 3, wait_p95=120_000.0)
    rules = [r for r in DEFAULT_RULES if r.kind in ("queue_depth", "wait_p95")]
    with transaction(engine_for(ledger_url)) as conn:
        alert_sql.silence(conn, "wait_p95", t + timedelta(hours=1), by="alice", reason="", now=t)
    evaluator = AlertEvaluator(
        engine_for(ledger_url), AlertsConfig(background_delivery=False), rules=rules
    )
    assert evaluator.run_once(now=t) == 2
    by_key = {r["alert_key"]: r for r in outbox(ledger_url)}
    assert by_key["wait_p95:q2"]["silenced"] is True
    assert by_key["wait_p95:q2"]["outbox"] is False
    assert by_key["queue_depth:q1"]["silenced"] is False
    off = [Rule("queue_depth", "queue_depth", threshold=1000, window_minutes=10, enabled=False)]
    evaluator = AlertEvaluator(
        engine_for(ledger_url), AlertsConfig(background_delivery=False), rules=off
    )
    evaluator.run_once(now=t + timedelta(seconds=5))  # disabled/removed rules resolve
    assert sorted(s for _, s in events(ledger_url)) == ["firing", "firing", "resolved", "resolved"]


def test_a_broken_rules_file_keeps_the_last_good_rules_across_passes(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clear_alerts(sqlite_url)
    t = now_minute()
    _depth(sqlite_url, t)
    file = tmp_path / "alerts.json"
    doc = {
        "defaults": False,
        "rules": [{"name": "deep", "kind": "queue_depth", "threshold": 100, "window_minutes": 3}],
    }
    file.write_text(json.dumps(doc))
    evaluator = loop(sqlite_url, rules_file=file)
    assert evaluator.run_once(now=t) == 1
    assert events(sqlite_url) == [("deep:q1", "firing")]

    doc["rules"][0]["window_minutes"] = "5"  # broken: a string
    file.write_text(json.dumps(doc))
    caplog.set_level(logging.INFO)
    for i in range(1, 4):  # "deep" is still evaluated: its alert holds, nothing else fires
        assert evaluator.run_once(now=t + timedelta(seconds=10 * i)) == 0
    assert events(sqlite_url) == [("deep:q1", "firing")]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "window_minutes" in errors[0]


def test_two_loops_at_once_notify_once(pg_url: str) -> None:
    clear_alerts(pg_url)
    t = now_minute()
    _depth(pg_url, t)
    add_minutes(pg_url, "q2", t, 5, error_count=5, completed_count=15, failed_count=5)
    loops = [loop(pg_url) for _ in range(4)]
    barrier = threading.Barrier(len(loops))
    results: list[int] = []

    def run(evaluator: AlertEvaluator) -> None:
        barrier.wait()
        results.append(evaluator.run_once(now=t))

    threads = [threading.Thread(target=run, args=(lp,)) for lp in loops]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sum(results) == 2
    for lp in loops:  # later passes too: whoever gets the lock finds nothing new
        lp.run_once(now=t + timedelta(seconds=5))
    assert sorted(events(pg_url)) == [("error_rate:q2", "firing"), ("queue_depth:q1", "firing")]


def test_guarded_updates_alone_prevent_double_notification(pg_url: str) -> None:
    """Even without the advisory lock (SQLite path), a transition happens once."""
    from db import alerts as alert_sql
    from db.alerts import Observation
    from db.engine import transaction

    clear_alerts(pg_url)
    t = now_minute()
    obs = Observation("x:q", "x", "queue_depth", 1.0, 0.0, "m", queue_name="q")
    with transaction(engine_for(pg_url)) as conn:
        assert alert_sql.open_or_refire(conn, obs, t) is not None
        assert alert_sql.open_or_refire(conn, obs, t) is None
        assert alert_sql.hold(conn, obs, t, timedelta(minutes=1)) is None
        assert alert_sql.resolve(conn, "x:q", t) is not None
        assert alert_sql.resolve(conn, "x:q", t) is None
