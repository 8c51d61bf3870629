"""Rule files (TOML and JSON) and their validation, a broken file in the maintainer, the HMAC
signature and the backoff."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from tasks.alerts import notify
from tasks.alerts.rules import DEFAULT_RULES, RuleConfigError, load_rules, parse_rules
from tasks.maintenance.alerts import AlertEvaluator, AlertsConfig

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


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


def _refusal(doc: dict[str, Any]) -> str:
    """The one-line message of the RuleConfigError ``doc`` raises."""
    with pytest.raises(RuleConfigError) as info:
        parse_rules(doc)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_word_as_threshold_is_refused() -> None:
    message = _refusal({"rules": [{"name": "error_rate", "threshold": "high"}]})
    assert "'error_rate'" in message and "threshold" in message


def test_a_string_window_is_a_config_error_not_a_type_error() -> None:
    # "5" is not silently turned into 5 (and no bare TypeError escapes to the alert pass)
    message = _refusal({"rules": [{"name": "error_rate", "window_minutes": "5"}]})
    assert "'error_rate'" in message and "window_minutes" in message


def test_an_unknown_rule_field_is_refused_naming_rule_and_field() -> None:
    message = _refusal(
        {"rules": [{"name": "error_rate"}, {"name": "r2", "kind": "wait_p95", "treshold": 3}]}
    )
    assert "'r2'" in message and "treshold" in message and "unknown field" in message


def test_an_unknown_top_level_field_is_refused() -> None:
    message = _refusal({"rule": [{"name": "error_rate", "threshold": 3}]})  # typo of "rules"
    assert "rule" in message and "unknown field" in message


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"enabled": "no"}, "enabled"),  # a non-empty string is not true
        ({"enabled": 1}, "enabled"),
        ({"threshold": True}, "threshold"),
        ({"min_count": 2.5}, "min_count"),
        ({"window_minutes": 5.0}, "window_minutes"),
        ({"queues": [1, 2]}, "queues"),  # not turned into "1", "2"
        ({"queues": "reports"}, "queues"),
        ({"channels": "outbox"}, "channels"),
        ({"webhook_url": 5}, "webhook_url"),
        ({"kind": 3}, "kind"),
    ],
)
def test_a_wrong_typed_field_is_refused(entry: dict[str, Any], field: str) -> None:
    message = _refusal({"rules": [{"name": "error_rate", **entry}]})
    assert "'error_rate'" in message and field in message


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"rules": [{"name": "error_rate", "threshold": -1}]}, "threshold"),
        ({"rules": [{"name": "error_rate", "threshold": 150}]}, "threshold"),  # a percentage
        ({"rules": [{"name": "queue_depth", "threshold": float("nan")}]}, "threshold"),
        ({"rules": [{"name": "error_rate", "min_count": -1}]}, "min_count"),
        ({"rules": [{"name": "error_rate", "window_minutes": 0}]}, "window_minutes"),
        ({"rules": [{"name": "error_rate", "webhook_url": "hooks.example/x"}]}, "webhook_url"),
        ({"rules": [{"name": "error_rate", "queues": [""]}]}, "queues"),
        ({"rules": [{"name": "x" * 101, "kind": "wait_p95"}]}, "name"),
        ({"rules": [{"name": 5, "kind": "wait_p95"}]}, "name"),
        ({"defaults": "no"}, "defaults"),
    ],
)
def test_out_of_range_values_are_refused(doc: dict[str, Any], field: str) -> None:
    assert field in _refusal(doc)


def test_valid_values_keep_their_types() -> None:
    (rule,) = parse_rules(
        {
            "defaults": False,
            "rules": [
                {
                    "name": "r",
                    "kind": "queue_depth",
                    "threshold": 200,
                    "window_minutes": 5,
                    "queues": ["reports"],
                    "channels": ["outbox"],
                    "webhook_url": None,
                }
            ],
        }
    )
    assert rule.threshold == 200.0 and isinstance(rule.threshold, float)
    assert rule.window_minutes == 5 and rule.queues == ("reports",)
    assert rule.channels == ("outbox",) and rule.webhook_url is None


def test_the_examples_in_operations_md_parse(tmp_path: Path) -> None:
    section = OPERATIONS_MD.read_text().split("### The rules file", 1)[1].split("\n### ", 1)[0]
    toml_block = re.search(r"```toml\n(.*?)```", section, re.S)
    json_inline = re.search(r"`(\{\"rules\": .*?\})`", section)
    assert toml_block is not None and json_inline is not None
    file = tmp_path / "alerts.toml"
    file.write_text(toml_block.group(1))
    rules = {r.name: r for r in load_rules(file)}
    assert rules["error_rate"].threshold == 20.0 and rules["error_rate"].window_minutes == 10
    assert rules["queue_depth"].enabled is False
    backlog = rules["reports_backlog"]
    assert backlog.kind == "queue_depth" and backlog.queues == ("reports",)
    assert backlog.webhook_url == "https://hooks.example.edu/queue"
    assert {r.name: r for r in parse_rules(json.loads(json_inline.group(1)))}[
        "error_rate"
    ].threshold == 20.0


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_broken_file_keeps_the_last_good_rules_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``rules()`` is what every alert pass calls first: it re-reads the file each time."""
    caplog.set_level(logging.INFO)
    file = tmp_path / "alerts.json"
    file.write_text(json.dumps({"defaults": False, "rules": [{"name": "x", "kind": "wait_p95"}]}))
    evaluator = AlertEvaluator(
        create_engine("sqlite://"), AlertsConfig(rules_file=file, background_delivery=False)
    )
    assert [r.name for r in evaluator.rules()] == ["x"]
    assert _errors(caplog) == []

    broken = {
        "defaults": False,
        "rules": [{"name": "x", "kind": "wait_p95", "window_minutes": "5"}],
    }
    file.write_text(json.dumps(broken))
    for _ in range(3):
        assert [r.name for r in evaluator.rules()] == ["x"]  # the last good rules
    (logged,) = _errors(caplog)  # once, not on every pass
    assert "'x'" in logged and "window_minutes" in logged and str(file) in logged

    file.write_text("{not json")  # the file changes, still broken: logged again, once
    for _ in range(3):
        assert [r.name for r in evaluator.rules()] == ["x"]
    assert len(_errors(caplog)) == 2

    file.write_text(json.dumps({"defaults": False, "rules": [{"name": "y", "kind": "wait_p95"}]}))
    caplog.clear()
    assert [r.name for r in evaluator.rules()] == ["y"]  # valid again: taken, and said so
    assert _errors(caplog) == [] and any("valid again" in m for m in caplog.messages)
    assert [r.name for r in evaluator.rules()] == ["y"]
    assert len([m for m in caplog.messages if "valid again" in m]) == 1

    caplog.clear()
    file.write_text("{not json")  # the same broken text as before: a new problem, logged
    for _ in range(2):
        assert [r.name for r in evaluator.rules()] == ["y"]
    assert len(_errors(caplog)) == 1


def test_a_file_that_was_never_good_gives_the_defaults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "alerts.toml"
    file.write_text('[[rules]]\nname = "error_rate"\nthreshold = "high"\n')
    evaluator = AlertEvaluator(
        create_engine("sqlite://"), AlertsConfig(rules_file=file, background_delivery=False)
    )
    for _ in range(3):
        assert evaluator.rules() == list(DEFAULT_RULES)
    (logged,) = _errors(caplog)
    assert "'error_rate'" in logged and "threshold" in logged

    missing = AlertEvaluator(
        create_engine("sqlite://"),
        AlertsConfig(rules_file=tmp_path / "nope.json", background_delivery=False),
    )
    caplog.clear()
    for _ in range(3):
        assert missing.rules() == list(DEFAULT_RULES)
    assert len(_errors(caplog)) == 1


def test_signature_and_backoff() -> None:
    """The signature covers ``timestamp.body`` (issue 17: a body-only HMAC let old requests
    be replayed for ever); a stale timestamp is refused."""
    import hashlib
    import hmac

    body = b'{"a": 1}'
    t = 1_765_000_000
    header = notify.sign(body, "k", t)
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert notify.verify(body, str(t), header, "k", now=t + 10)
    assert not notify.verify(body + b" ", str(t), header, "k", now=t)
    assert not notify.verify(body, str(t + 1), header, "k", now=t)  # the timestamp is signed
    assert not notify.verify(body, None, header, "k", now=t)
    assert not notify.verify(body, str(t), None, "k", now=t)
    tolerance = notify.SIGNATURE_TOLERANCE
    assert notify.verify(body, str(t), header, "k", now=t + tolerance)
    assert not notify.verify(body, str(t), header, "k", now=t + tolerance + 1)  # a replay
    assert not notify.verify(body, str(t), header, "k", now=t - tolerance - 1)
    body_only = "v1=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert not notify.verify(body, str(t), body_only, "k", now=t)
    config = notify.DeliveryConfig(backoff_seconds=2, max_backoff_seconds=10)
    assert [notify.backoff(config, a).total_seconds() for a in (1, 2, 3, 4)] == [2, 4, 8, 10]
