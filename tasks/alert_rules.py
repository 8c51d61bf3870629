"""Alert rules: the defaults, the config file (QUEUE_ALERT_RULES_FILE, JSON or TOML) and the
evaluation of each kind from the rollups (docs/operations.md#alerts).

``evaluate`` returns the conditions that hold now; the alerts loop turns them into state
changes and notifications.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from db import alerts as alert_sql
from db.alerts import Observation
from metrics import hist
from metrics.read_models import error_rate, periodic_health

KINDS = (
    "error_rate",
    "queue_depth",
    "wait_p95",
    "no_live_worker",
    "periodic_late",
    "type_failing",
)
CHANNELS = ("outbox", "webhook")


class RuleConfigError(ValueError):
    """The rules file is not valid."""


@dataclass(frozen=True)
class Rule:
    """One rule. ``threshold`` and ``window_minutes`` mean, per kind:

    - error_rate: percent of ended attempts that errored, over the window, per queue
      (and at least ``min_count`` attempts ended);
    - queue_depth: depth above ``threshold`` in each of the last ``window_minutes`` minutes;
    - wait_p95: p95 wait in ms above ``threshold`` over the window (merged histograms);
    - no_live_worker: newest rollup in the window has depth above ``threshold`` (0) and no
      live worker serves the queue;
    - periodic_late: a periodic job's newest due tick is missing or still waiting;
    - type_failing: at least ``min_count`` failures and no completion of a type in the window.
    """

    name: str
    kind: str
    threshold: float = 0.0
    window_minutes: int = 5
    min_count: int = 1
    enabled: bool = True
    channels: tuple[str, ...] = CHANNELS
    webhook_url: str | None = None  # None: QUEUE_ALERT_WEBHOOK_URL
    queues: tuple[str, ...] = ()  # empty: every queue

    def applies_to(self, queue: str | None) -> bool:
        return not self.queues or queue in self.queues


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("error_rate", "error_rate", threshold=10.0, window_minutes=5, min_count=10),
    Rule("queue_depth", "queue_depth", threshold=1000, window_minutes=10),
    Rule("wait_p95", "wait_p95", threshold=60_000, window_minutes=5),
    Rule("no_live_worker", "no_live_worker", threshold=0, window_minutes=5),
    Rule("periodic_late", "periodic_late"),
    Rule("type_failing", "type_failing", threshold=0, window_minutes=15, min_count=3),
)

_FIELDS = {f.name for f in fields(Rule)}


def _rule_from(entry: dict[str, Any], base: Rule | None) -> Rule:
    unknown = set(entry) - _FIELDS
    if unknown:
        raise RuleConfigError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
    values = dict(entry)
    for key in ("channels", "queues"):
        if key in values:
            if isinstance(values[key], str) or not isinstance(values[key], list | tuple):
                raise RuleConfigError(f"{key} must be a list")
            values[key] = tuple(str(v) for v in values[key])
    try:
        rule = replace(base, **values) if base is not None else Rule(**values)
    except TypeError as exc:
        raise RuleConfigError(f"rule {entry.get('name')!r}: {exc}") from None
    if rule.kind not in KINDS:
        raise RuleConfigError(f"rule {rule.name!r}: kind must be one of {', '.join(KINDS)}")
    if bad := set(rule.channels) - set(CHANNELS):
        raise RuleConfigError(f"rule {rule.name!r}: unknown channel(s) {sorted(bad)}")
    if rule.window_minutes < 1 or rule.min_count < 0:
        raise RuleConfigError(f"rule {rule.name!r}: window_minutes >= 1, min_count >= 0")
    return rule


def parse_rules(doc: dict[str, Any], defaults: Iterable[Rule] = DEFAULT_RULES) -> list[Rule]:
    """Merge ``{"rules": [...]}`` over the defaults: an entry naming a default overrides its
    fields; a new name adds a rule (``name`` and ``kind`` required). ``"defaults": false``
    drops the built-in rules."""
    rules = {r.name: r for r in defaults} if doc.get("defaults", True) else {}
    entries = doc.get("rules", [])
    if not isinstance(entries, list):
        raise RuleConfigError("'rules' must be a list of tables/objects")
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise RuleConfigError("every rule needs a name")
        rules[entry["name"]] = _rule_from(entry, rules.get(entry["name"]))
    return list(rules.values())


def load_rules(path: Path | str | None) -> list[Rule]:
    """The default rules, overridden by the file at ``path`` (``.toml`` or ``.json``)."""
    if path is None or str(path) == "":
        return list(DEFAULT_RULES)
    file = Path(path)
    raw = file.read_bytes()
    try:
        doc = tomllib.loads(raw.decode()) if file.suffix.lower() == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RuleConfigError(f"{file}: {exc}") from None
    if not isinstance(doc, dict):
        raise RuleConfigError(f"{file}: the top level must be a table/object")
    return parse_rules(doc)


# --- evaluation ----------------------------------------------------------------------------


@dataclass
class Context:
    conn: Connection
    engine: Engine
    now: datetime
    stale_seconds: float
    schedules: list[tuple[str, Any, str]] = field(default_factory=list)


def _since(ctx: Context, rule: Rule) -> datetime:
    return ctx.now - timedelta(minutes=rule.window_minutes)


def _error_rate(ctx: Context, rule: Rule) -> list[Observation]:
    out = []
    for r in alert_sql.queue_totals(ctx.conn, _since(ctx, rule)):
        if not rule.applies_to(r.queue_name):
            continue
        errors, jobs, retries = int(r.error_count or 0), int(r.job_count or 0), int(r.retries or 0)
        rate = error_rate(errors, jobs, retries)
        if rate is None or jobs + retries < rule.min_count or rate * 100 <= rule.threshold:
            continue
        pct = rate * 100
        out.append(
            Observation(
                f"{rule.name}:{r.queue_name}",
                rule.name,
                rule.kind,
                round(pct, 3),
                rule.threshold,
                f"queue {r.queue_name}: error rate {pct:.1f} % over {rule.window_minutes} min "
                f"(threshold {rule.threshold:g} %)",
                queue_name=r.queue_name,
                details={"errors": errors, "attempts": jobs + retries},
            )
        )
    return out


def _by_queue(rows: Iterable[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(r.queue_name, []).append(r)
    return out


def _queue_depth(ctx: Context, rule: Rule) -> list[Observation]:
    # the newest `window` minutes rolled up (two minutes of slack for the rollup's lag)
    since = ctx.now - timedelta(minutes=rule.window_minutes + 2)
    out = []
    for queue, rows in _by_queue(alert_sql.queue_minutes(ctx.conn, since)).items():
        recent = rows[-rule.window_minutes :]
        if not rule.applies_to(queue) or len(recent) < rule.window_minutes:
            continue
        if min(int(r.depth) for r in recent) <= rule.threshold:
            continue
        depth = int(recent[-1].depth)
        out.append(
            Observation(
                f"{rule.name}:{queue}",
                rule.name,
                rule.kind,
                depth,
                rule.threshold,
                f"queue {queue}: depth {depth} above {rule.threshold:g} "
                f"for {rule.window_minutes} min",
                queue_name=queue,
                details={"min_depth": min(int(r.depth) for r in recent)},
            )
        )
    return out


def _wait_p95(ctx: Context, rule: Rule) -> list[Observation]:
    out = []
    for queue, rows in _by_queue(alert_sql.queue_minutes(ctx.conn, _since(ctx, rule))).items():
        if not rule.applies_to(queue):
            continue
        counts: dict[int, int] = {}
        for r in rows:
            hist.merge_into(counts, r.wait_hist)
        p95 = hist.quantile(counts, 0.95) if counts else None
        if p95 is None:  # no histograms: the worst minute's p95
            minutes = [float(r.wait_p95) for r in rows if r.wait_p95 is not None]
            p95 = max(minutes) if minutes else None
        if p95 is None or p95 <= rule.threshold:
            continue
        out.append(
            Observation(
                f"{rule.name}:{queue}",
                rule.name,
                rule.kind,
                round(p95, 1),
                rule.threshold,
                f"queue {queue}: p95 wait {p95:,.0f} ms over {rule.window_minutes} min "
                f"(threshold {rule.threshold:,.0f} ms)",
                queue_name=queue,
            )
        )
    return out


def _no_live_worker(ctx: Context, rule: Rule) -> list[Observation]:
    rows = _by_queue(alert_sql.queue_minutes(ctx.conn, _since(ctx, rule)))
    live = alert_sql.live_worker_queues(ctx.conn, ctx.now, ctx.stale_seconds)
    out = []
    for queue, minutes in rows.items():
        depth = int(minutes[-1].depth)
        if not rule.applies_to(queue) or depth <= rule.threshold or queue in live:
            continue
        out.append(
            Observation(
                f"{rule.name}:{queue}",
                rule.name,
                rule.kind,
                depth,
                rule.threshold,
                f"queue {queue}: {depth} job(s) waiting and no live worker serves it",
                queue_name=queue,
            )
        )
    return out


def _periodic_late(ctx: Context, rule: Rule) -> list[Observation]:
    if not ctx.schedules:
        return []
    out = []
    for h in periodic_health(ctx.engine, now=ctx.now, schedules=ctx.schedules):
        if not h["late"] or not rule.applies_to(h["queue"]):
            continue
        missed = int(h["missed_ticks"])
        last = h["last_tick"].isoformat() if h["last_tick"] else None
        out.append(
            Observation(
                f"{rule.name}:{h['name']}",
                rule.name,
                rule.kind,
                missed,
                rule.threshold,
                f"periodic job {h['name']} ({h['schedule']}) is late: newest due tick has no "
                f"finished run; {missed} missed tick(s) in 24 h, last tick {last or 'never'}",
                queue_name=h["queue"],
                job_type=h["name"],
                details={"missed_ticks": missed, "last_tick": last},
            )
        )
    return out


def _type_failing(ctx: Context, rule: Rule) -> list[Observation]:
    out = []
    for r in alert_sql.type_totals(ctx.conn, _since(ctx, rule)):
        failed, completed = int(r.failed_count or 0), int(r.completed_count or 0)
        if not rule.applies_to(r.queue_name) or completed > 0:
            continue
        if failed <= 0 or failed < rule.min_count or failed <= rule.threshold:
            continue
        out.append(
            Observation(
                f"{rule.name}:{r.queue_name}:{r.job_type}",
                rule.name,
                rule.kind,
                failed,
                rule.threshold,
                f"job type {r.job_type} (queue {r.queue_name}): {failed} failed, none completed "
                f"in {rule.window_minutes} min",
                queue_name=r.queue_name,
                job_type=r.job_type,
            )
        )
    return out


EVALUATORS: dict[str, Callable[[Context, Rule], list[Observation]]] = {
    "error_rate": _error_rate,
    "queue_depth": _queue_depth,
    "wait_p95": _wait_p95,
    "no_live_worker": _no_live_worker,
    "periodic_late": _periodic_late,
    "type_failing": _type_failing,
}


def evaluate(ctx: Context, rule: Rule) -> list[Observation]:
    return EVALUATORS[rule.kind](ctx, rule)
