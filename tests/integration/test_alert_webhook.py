"""Webhook delivery to real receivers on loopback: signed with HMAC over ``timestamp.body``, a
500 is retried then given up on, without holding back another alert's delivery; redirects are
not followed and only http(s) URLs are posted to."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from db.engine import engine_for
from tasks.alerts import notify
from tasks.alerts.rules import Rule
from tasks.alerts.settings import AlertSettings
from tasks.maintenance.alerts import AlertEvaluator, AlertsConfig, alerts_config
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
            stamp, signature = headers["x-edurise-timestamp"], headers["x-edurise-signature"]
            assert notify.verify(body, stamp, signature, SECRET)
            assert not notify.verify(body, stamp, signature, "wrong")
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


def _one_notification(url: str, webhook_url: str, delivery: notify.DeliveryConfig) -> Any:
    """An evaluator that has written one pending webhook notification to ``webhook_url``."""
    clear_alerts(url)
    t = now_minute()
    add_minutes(url, "q1", t, 2, depth=3)  # no worker at all: no_live_worker fires
    evaluator = AlertEvaluator(
        engine_for(url),
        AlertsConfig(webhook_url=webhook_url, delivery=delivery, background_delivery=False),
        rules=[Rule("nolive", "no_live_worker", window_minutes=5)],
    )
    assert evaluator.run_once(now=t) == 1
    return evaluator


def test_a_redirect_is_a_failed_attempt_not_followed(sqlite_url: str) -> None:
    """Before, urllib followed the 302: the POST became a GET to the target and was recorded
    ``delivered``."""
    with receiver(200) as target, receiver(302, {"Location": target.url}) as redirecting:
        delivery = notify.DeliveryConfig(timeout=2.0, max_attempts=1)
        evaluator = _one_notification(sqlite_url, redirecting.url, delivery)
        assert evaluator.deliver() == {"given_up": 1}
        [row] = outbox(sqlite_url)
        assert row["delivery"] == "given_up" and row["last_error"] == "HTTP 302"
        assert redirecting.count() == 1 and target.count() == 0


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x", "http:///nohost"])
def test_only_http_and_https_urls_are_posted_to(sqlite_url: str, url: str) -> None:
    """Before, any scheme urllib knows was opened (``file://`` read a local file)."""
    delivery = notify.DeliveryConfig(timeout=1.0, max_attempts=5, backoff_seconds=0.01)
    evaluator = _one_notification(sqlite_url, url, delivery)
    assert evaluator.deliver() == {"given_up": 1}  # at once: a bad URL is never retried
    [row] = outbox(sqlite_url)
    assert row["attempts"] == 1
    assert row["last_error"].startswith("unsupported webhook URL")
    with pytest.raises(ValidationError, match="must be an http:// or https:// URL"):
        AlertSettings(queue_alert_webhook_url=url)


def _documented_verifier() -> Any:
    """The receiver's example from docs/operations.md, run as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    [code] = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify(" in c]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]


def test_the_documented_verifier_accepts_a_delivery_and_refuses_a_replay(
    sqlite_url: str,
) -> None:
    verify = _documented_verifier()
    with receiver(200) as r:
        evaluator = _one_notification(sqlite_url, r.url, notify.DeliveryConfig(secret=SECRET))
        assert evaluator.deliver() == {"delivered": 1}
    body, headers = r.requests[0]
    stamp, signature = headers["x-edurise-timestamp"], headers["x-edurise-signature"]
    assert abs(int(stamp) - time.time()) < 60
    assert verify(body, stamp, signature, SECRET)
    assert not verify(body, stamp, signature, "another secret")
    assert not verify(body.replace(b"firing", b"resolve"), stamp, signature, SECRET)
    assert not verify(body, str(int(stamp) + 1), signature, SECRET)
    later = int(stamp) + notify.SIGNATURE_TOLERANCE + 1  # the same request replayed later
    assert not verify(body, stamp, signature, SECRET, now=later)
    assert b'"notification_id"' in body  # receivers deduplicate by it


def test_a_webhook_without_a_secret_is_warned_about_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tasks.maintenance.alerts"):
        alerts_config(AlertSettings(queue_alert_webhook_url="https://hooks.example.edu/q"))
    assert "QUEUE_ALERT_WEBHOOK_SECRET is not" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tasks.maintenance.alerts"):
        alerts_config(
            AlertSettings(
                queue_alert_webhook_url="https://hooks.example.edu/q",
                queue_alert_webhook_secret="k",
            )
        )
    assert caplog.text == ""
