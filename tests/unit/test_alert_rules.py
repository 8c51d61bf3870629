"""Rule files (TOML and JSON), the HMAC signature and the backoff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import notify
from tasks.alert_rules import DEFAULT_RULES, RuleConfigError, load_rules, parse_rules


def test_defaults_cover_every_kind() -> None:
    rules = load_rules(None)
    assert {r.kind for r in rules} == {
        "error_rate",
        "queue_depth",
        "wait_p95",
        "no_live_worker",
        "periodic_late",
        "type_failing",
    }
    assert all(r.enabled and "outbox" in r.channels for r in rules)


def test_toml_overrides_and_adds(tmp_path: Path) -> None:
    file = tmp_path / "alerts.toml"
    file.write_text(
        """
[[rules]]
name = "error_rate"
threshold = 25.0
window_minutes = 10
channels = ["webhook"]
webhook_url = "http://hooks.example/x"

[[rules]]
name = "queue_depth"
enabled = false

[[rules]]
name = "reports_depth"
kind = "queue_depth"
threshold = 50
queues = ["reports"]
"""
    )
    rules = {r.name: r for r in load_rules(file)}
    assert rules["error_rate"].threshold == 25.0 and rules["error_rate"].window_minutes == 10
    assert rules["error_rate"].channels == ("webhook",)
    assert rules["error_rate"].min_count == 10  # kept from the default
    assert rules["queue_depth"].enabled is False
    assert rules["reports_depth"].queues == ("reports",)
    assert rules["reports_depth"].applies_to("reports")
    assert not rules["reports_depth"].applies_to("default")
    assert len(rules) == len(DEFAULT_RULES) + 1


def test_json_without_defaults(tmp_path: Path) -> None:
    file = tmp_path / "alerts.json"
    file.write_text(json.dumps({"defaults": False, "rules": [{"name": "x", "kind": "wait_p95"}]}))
    assert [r.name for r in load_rules(file)] == ["x"]


@pytest.mark.parametrize(
    "doc",
    [
        {"rules": [{"name": "x", "kind": "nope"}]},
        {"rules": [{"name": "x"}]},
        {"rules": [{"kind": "wait_p95"}]},
        {"rules": [{"name": "error_rate", "channels": ["sms"]}]},
        {"rules": [{"name": "error_rate", "treshold": 3}]},
        {"rules": [{"name": "error_rate", "window_minutes": 0}]},
        {"rules": {"name": "x"}},
    ],
)
def test_invalid_rules_are_refused(doc: dict) -> None:
    with pytest.raises(RuleConfigError):
        parse_rules(doc)


def test_signature_and_backoff() -> None:
    body = b'{"a": 1}'
    header = notify.sign(body, "k")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert notify.verify(body, header, "k")
    assert not notify.verify(body + b" ", header, "k")
    assert not notify.verify(body, None, "k")
    config = notify.DeliveryConfig(backoff_seconds=2, max_backoff_seconds=10)
    assert [notify.backoff(config, a).total_seconds() for a in (1, 2, 3, 4)] == [2, 4, 8, 10]
