"""Alert rules: the defaults, the config file (QUEUE_ALERT_RULES_FILE, JSON or TOML) and the
evaluation of each kind from the rollups (docs/operations.md#alerts).

A rule is a pydantic model (``Rule``) and so is the file's top level (``RulesFile``): every
field is type-checked strictly (``"5"`` is not a number of minutes, ``"no"`` is not a boolean),
ranges are checked and unknown fields are refused; a problem is one ``RuleConfigError`` whose
one-line message names the rule and the field. ``RulesFileLoader`` re-reads the file for every
alert pass and keeps the last good rules while the file is broken, logging each problem once.

``evaluate`` returns the conditions that hold now; the alerts loop turns them into state
changes and notifications.
"""

from __future__ import annotations

import hashlib
import json
import logging
import reprlib
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy import Connection, Engine

from db import alerts as alert_sql
from db.alerts import Observation
from metrics import hist
from metrics.read.common import error_rate
from metrics.read.periodic import periodic_health

log = logging.getLogger(__name__)

Kind = Literal[
    "error_rate",
    "queue_depth",
    "wait_p95",
    "no_live_worker",
    "periodic_late",
    "type_failing",
]
Channel = Literal["outbox", "webhook"]
KINDS: tuple[str, ...] = get_args(Kind)
CHANNELS: tuple[Channel, ...] = get_args(Channel)
MAX_WINDOW_MINUTES = 366 * 24 * 60  # a year: longer is a typo (and beyond the rollups kept)


class RuleConfigError(ValueError):
    """The rules file is not valid (the message is one line)."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


# strict: JSON/TOML values are taken as they are, never converted ("5" is not 5, 1 is not true)
RuleName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
QueueName = Annotated[str, StringConstraints(strict=True, min_length=1)]
Threshold = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Minutes = Annotated[int, Field(strict=True, ge=1, le=MAX_WINDOW_MINUTES)]
Count = Annotated[int, Field(strict=True, ge=0)]
WebhookUrl = Annotated[
    str, StringConstraints(strict=True, max_length=1000), AfterValidator(_http_url)
]


class Rule(BaseModel):
    """One rule. ``threshold`` and ``window_minutes`` mean, per kind:

    - error_rate: percent of ended attempts that errored, over the window, per queue
      (and at least ``min_count`` attempts ended);
    - queue_depth: depth above ``threshold`` in each of the last ``window_minutes`` minutes;
    - wait_p95: p95 wait in ms above ``threshold`` over the window (merged histograms);
    - no_live_worker: newest rollup in the window has depth above ``threshold`` (0) and no
      live worker serves the queue;
    - periodic_late: a periodic job's newest due tick is missing or still waiting;
    - type_failing: at least ``min_count`` failures and no completion of a type in the window.

    ``Rule(name, kind, **fields)``: name and kind may also be given by position.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName
    kind: Kind
    threshold: Threshold = 0.0
    window_minutes: Minutes = 5
    min_count: Count = 1
    enabled: StrictBool = True
    channels: tuple[Channel, ...] = CHANNELS  # a JSON/TOML list is fine, a bare string is not
    webhook_url: WebhookUrl | None = None  # None: QUEUE_ALERT_WEBHOOK_URL
    queues: tuple[QueueName, ...] = ()  # empty: every queue

    def __init__(self, /, *args: Any, **data: Any) -> None:
        if len(args) > 2:
            raise TypeError(f"Rule() takes name and kind by position, {len(args)} given")
        super().__init__(**dict(zip(("name", "kind"), args, strict=False)), **data)

    @model_validator(mode="after")
    def _percent(self) -> Rule:
        if self.kind == "error_rate" and self.threshold > 100:
            raise ValueError(
                f"threshold: an error_rate threshold is a percentage, at most 100 "
                f"(got {self.threshold:g})"
            )
        return self

    def applies_to(self, queue: str | None) -> bool:
        return not self.queues or queue in self.queues


class RuleEntry(BaseModel):
    """One entry of the file's ``rules``: a name and the fields it sets. The fields are
    checked as a ``Rule`` once merged over the rule of that name (``parse_rules``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: RuleName


class RulesFile(BaseModel):
    """The top level of the rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: StrictBool = True  # false: drop the built-in rules
    rules: list[RuleEntry] = Field(default_factory=list)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("error_rate", "error_rate", threshold=10.0, window_minutes=5, min_count=10),
    Rule("queue_depth", "queue_depth", threshold=1000, window_minutes=10),
    Rule("wait_p95", "wait_p95", threshold=60_000, window_minutes=5),
    Rule("no_live_worker", "no_live_worker", threshold=0, window_minutes=5),
    Rule("periodic_late", "periodic_late"),
    Rule("type_failing", "type_failing", threshold=0, window_minutes=15, min_count=3),
)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _describe(errors: list[ErrorDetails]) -> str:
    """pydantic's errors as one line: ``field: problem (got value)``, ``; ``-separated."""
    out = []
    for error in errors:
        if error["type"] == "extra_forbidden":
            text = "unknown field"
        elif error["type"] == "missing":
            text = "required"
        elif error["type"] in ("model_type", "dict_type"):
            text = f"must be a table/object (got {reprlib.repr(error['input'])})"
        else:
            text = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                text += f" (got {reprlib.repr(error['input'])})"
        where = _where(error["loc"])
        out.append(f"{where}: {text}" if where else text)
    return "; ".join(out)


def parse_rules(doc: Any, defaults: Iterable[Rule] = DEFAULT_RULES) -> list[Rule]:
    """Merge ``{"rules": [...]}`` over the defaults: an entry naming a default overrides its
    fields; a new name adds a rule (``name`` and ``kind`` required). ``"defaults": false``
    drops the built-in rules. Every problem of the document is in the one RuleConfigError."""
    if not isinstance(doc, dict):
        raise RuleConfigError("the top level must be a table/object")
    try:
        top = RulesFile.model_validate(doc)
    except ValidationError as exc:
        raise RuleConfigError(_describe(exc.errors())) from None
    rules = {r.name: r for r in defaults} if top.defaults else {}
    problems = []
    for i, entry in enumerate(top.rules):
        base = rules.get(entry.name)
        values = (base.model_dump() if base is not None else {}) | (entry.model_extra or {})
        try:
            rules[entry.name] = Rule.model_validate(values | {"name": entry.name})
        except ValidationError as exc:
            problems.append(f"rule {entry.name!r} (rules[{i}]): {_describe(exc.errors())}")
    if problems:
        raise RuleConfigError("; ".join(problems))
    return list(rules.values())


def rules_from_bytes(
    raw: bytes, file: Path, defaults: Iterable[Rule] = DEFAULT_RULES
) -> list[Rule]:
    """The rules of a file's content: TOML when ``file`` ends in ``.toml``, JSON otherwise."""
    try:
        doc = tomllib.loads(raw.decode()) if file.suffix.lower() == ".toml" else json.loads(raw)
    except (ValueError, RecursionError) as exc:  # TOML/JSON syntax, not UTF-8, nested too deep
        raise RuleConfigError(f"{file}: {exc or type(exc).__name__}") from None
    try:
        return parse_rules(doc, defaults)
    except RuleConfigError as exc:
        raise RuleConfigError(f"{file}: {exc}") from None


def load_rules(path: Path | str | None) -> list[Rule]:
    """The default rules, overridden by the file at ``path`` (``.toml`` or ``.json``).
    Raises RuleConfigError (invalid file) or OSError (unreadable)."""
    if path is None or str(path) == "":
        return list(DEFAULT_RULES)
    file = Path(path)
    return rules_from_bytes(file.read_bytes(), file)


class RulesFileLoader:
    """The rules of each alert pass. The file is re-read every time (an edit applies at the
    next pass). A broken file (unreadable, unparseable or any rule invalid) keeps the last good
    rules, the built-in ones if it was never good; it is logged once, and again only when its
    content (or the read error) changes or after it was good again."""

    def __init__(self, path: Path | str | None, defaults: Iterable[Rule] = DEFAULT_RULES) -> None:
        self.path = Path(path) if path is not None and str(path) != "" else None
        self._defaults = tuple(defaults)
        self._good: list[Rule] = list(self._defaults)
        self._had_good = False
        self._problem: str | None = None  # what the logged problem was about

    def rules(self) -> list[Rule]:
        if self.path is None:
            return list(self._defaults)
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            return self._broken(f"{type(exc).__name__}: {exc}", str(exc))
        try:
            rules = rules_from_bytes(raw, self.path, self._defaults)
        except RuleConfigError as exc:
            return self._broken(hashlib.sha256(raw).hexdigest(), str(exc))
        if self._problem is not None:
            log.info("alert rules file %s is valid again: %d rule(s)", self.path, len(rules))
            self._problem = None
        self._good, self._had_good = rules, True
        return list(rules)

    def _broken(self, problem: str, message: str) -> list[Rule]:
        if problem != self._problem:
            self._problem = problem
            log.error(
                "alert rules file not loaded, keeping the %s rules until it is fixed: %s",
                "last good" if self._had_good else "built-in",
                message,
            )
        return list(self._good)


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
