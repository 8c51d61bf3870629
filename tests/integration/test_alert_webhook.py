"""Webhook delivery to real receivers on loopback: signed with HMAC, a 500 is retried then
given up on, without holding back another alert's delivery."""

from __future__ import annotations

from datetime import timedelta

from db.engine import engine_for
from tasks import notify
from tasks.alert_rules import Rule
from tasks.maintenance.alerts import AlertEvaluator, AlertsConfig
from tests.integration.alert_helpers import (
    add_minutes,
    add_worker,
    clear_alerts,
    clear_rollups,
    now_minute,
    outbox,
    poll,
    receiver,
)

SECRET = "s3cret"


def _final(url: str, n: int) -> list[dict]:
    rows = outbox(url)
    if len(rows) >= n and all(r["delivery"] in ("delivered", "given_up") for r in rows):
        return rows
    return []


def test_failing_receiver_is_retried_then_given_up_without_blocking_others(pg_url: str) -> None:
    clear_alerts(pg_url)
    t = now_minute()
    add_minutes(pg_url, "q1", t, 10, depth=5000)
    add_minutes(pg_url, "q2", t, 3, wait_p95=120_000.0)
    add_worker(pg_url, ["q1", "q2"], t + timedelta(hours=1))
    with receiver(200) as good, receiver(500) as bad:
        rules = [
            Rule("depth", "queue_depth", threshold=1000, window_minutes=10, webhook_url=bad.url),
            Rule("wait", "wait_p95", threshold=60_000, window_minutes=5, webhook_url=good.url),
        ]
        delivery = notify.DeliveryConfig(
            secret=SECRET, timeout=2.0, max_attempts=3, backoff_seconds=0.05
        )
        evaluator = AlertEvaluator(engine_for(pg_url), AlertsConfig(delivery=delivery), rules=rules)
        try:
            assert evaluator.run_once(now=t) == 2  # returns at once: delivery is in the background
            rows = poll(lambda: _final(pg_url, 2))
            by_rule = {r["rule"]: r for r in rows}
            assert by_rule["wait"]["delivery"] == "delivered"
            assert by_rule["wait"]["attempts"] == 1
            assert by_rule["depth"]["delivery"] == "given_up"
            assert by_rule["depth"]["attempts"] == 3
            assert by_rule["depth"]["last_error"] == "HTTP 500"
            assert bad.count() == 3 and good.count() == 1
            body, headers = good.requests[0]
            assert notify.verify(body, headers["x-edurise-signature"], SECRET)
            assert not notify.verify(body, headers["x-edurise-signature"], "wrong")
            payload = good.bodies()[0]
            assert payload["state"] == "firing" and payload["rule"] == "wait"
            assert payload["queue"] == "q2" and payload["threshold"] == 60_000
            assert {"alert_id", "kind", "value", "message", "fired_at", "sent_at"} <= set(payload)
            # the receiver recovers: the resolved notification is delivered
            clear_rollups(pg_url)
            bad.status = 200
            assert evaluator.run_once(now=t + timedelta(seconds=30)) == 2
            rows = poll(lambda: _final(pg_url, 4))
            resolved = [r for r in rows if r["state"] == "resolved"]
            assert {r["delivery"] for r in resolved} == {"delivered"}
            assert [b["state"] for b in good.bodies()] == ["firing", "resolved"]
        finally:
            evaluator.close()


def test_unreachable_webhook_never_breaks_evaluation(sqlite_url: str) -> None:
    clear_alerts(sqlite_url)
    t = now_minute()
    add_minutes(sqlite_url, "q1", t, 2, depth=3)  # no worker at all
    with receiver(200) as r:
        url = r.url
    rules = [Rule("nolive", "no_live_worker", window_minutes=5)]
    delivery = notify.DeliveryConfig(timeout=0.5, max_attempts=2, backoff_seconds=0.01)
    evaluator = AlertEvaluator(
        engine_for(sqlite_url),
        AlertsConfig(webhook_url=url, delivery=delivery, background_delivery=False),
        rules=rules,
    )
    assert evaluator.run_once(now=t) == 1
    assert evaluator.deliver() == {"pending": 1}  # connection refused: retry scheduled
    rows = poll(lambda: evaluator.deliver() and _final(sqlite_url, 1))
    assert rows[0]["delivery"] == "given_up" and rows[0]["attempts"] == 2
    assert evaluator.run_once(now=t + timedelta(seconds=5)) == 0
