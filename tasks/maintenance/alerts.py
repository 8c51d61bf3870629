"""Alerts: every minute, evaluate the alert rules (``tasks.alerts.rules``) from the rollups and
move each alert between ``firing`` and ``resolved`` (docs/operations.md#alerts).

One pass is one transaction under an advisory lock; every transition is a guarded UPDATE, and
the notification rows (the outbox, ``alert_notifications``) are written in that transaction for
exactly the rows this pass changed, so two maintainers never notify twice. Webhooks are sent
after commit by a background thread (``tasks.alerts.notify``): their failures never reach
evaluation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from db import alerts as alert_sql
from db.alerts import Observation
from db.clock import db_clock
from db.engine import transaction
from db.locks import try_xact_lock
from tasks import registry
from tasks.alerts import notify
from tasks.alerts.rules import DEFAULT_RULES, Context, Rule, RulesFileLoader, evaluate
from tasks.alerts.settings import AlertSettings

log = logging.getLogger(__name__)

LOCK_NAME = "alerts"


@dataclass(frozen=True)
class AlertsConfig:
    interval: float = 60.0
    repeat_minutes: float = 60.0
    rules_file: Path | None = None
    webhook_url: str | None = None  # default webhook of rules with the webhook channel
    stale_seconds: float = 10.0  # a worker heartbeat older than this is not live
    delivery: notify.DeliveryConfig = field(default_factory=notify.DeliveryConfig)
    background_delivery: bool = True  # False: call deliver() yourself (tests)


def alerts_config(settings: AlertSettings, stale_seconds: float = 10.0) -> AlertsConfig:
    """The alert settings; the maintainer calls it once at start-up, when a webhook URL
    without a secret is logged as a warning (rules with their own ``webhook_url`` are warned
    about at their first unsigned POST)."""
    for warning in notify.config_warnings(
        settings.queue_alert_webhook_url, settings.queue_alert_webhook_secret
    ):
        log.warning(warning)
    return AlertsConfig(
        interval=settings.queue_alert_interval_seconds,
        repeat_minutes=settings.queue_alert_repeat_minutes,
        rules_file=settings.queue_alert_rules_file,
        webhook_url=settings.queue_alert_webhook_url or None,
        stale_seconds=stale_seconds,
        delivery=notify.DeliveryConfig(
            secret=settings.queue_alert_webhook_secret or None,
            timeout=settings.queue_alert_webhook_timeout,
            max_attempts=settings.queue_alert_webhook_attempts,
            backoff_seconds=settings.queue_alert_webhook_backoff,
        ),
    )


def registry_schedules() -> list[tuple[str, Any, str]]:
    return [(t.name, t.schedule, t.queue) for t in registry.periodic_types()]


def payload_of(row: Any, state: str) -> dict[str, Any]:
    """The webhook body (without ``sent_at``, added at each POST) and outbox payload."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "alert_id": row.id,
        "alert_key": row.alert_key,
        "rule": row.rule,
        "kind": row.kind,
        "state": state,
        "value": row.value,
        "threshold": row.threshold,
        "message": row.message,
        "queue": row.queue_name,
        "job_type": row.job_type,
        "details": row.details or {},
        "fired_at": iso(row.fired_at),
        "resolved_at": iso(row.resolved_at),
    }


class AlertEvaluator:
    name = "alerts"

    def __init__(
        self,
        engine: Engine,
        config: AlertsConfig,
        *,
        rules: list[Rule] | None = None,
        schedules: Callable[[], list[tuple[str, Any, str]]] = registry_schedules,
    ) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval
        # fixed rules (tests), or the file re-read every pass
        self._loader = RulesFileLoader(config.rules_file) if rules is None else None
        self._rules: list[Rule] = list(rules) if rules is not None else list(DEFAULT_RULES)
        self._schedules = schedules
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def rules(self) -> list[Rule]:
        """The rules of this pass: the file is re-read, a broken file keeps the last good set
        (logged once per problem, ``RulesFileLoader``)."""
        if self._loader is not None:
            self._rules = self._loader.rules()
        return self._rules

    def run_once(self, now: datetime | None = None) -> int:
        """One evaluation; returns how many notifications it wrote."""
        written = self._evaluate(now)
        if self.config.background_delivery:
            self.kick_delivery()
        return written

    def _evaluate(self, now: datetime | None) -> int:
        rules = self.rules()
        enabled = {r.name: r for r in rules if r.enabled}
        schedules = self._schedules() if any(r.kind == "periodic_late" for r in rules) else []
        with transaction(self.engine) as conn:
            if not try_xact_lock(conn, LOCK_NAME):
                return 0
            clock = now or db_clock(conn)
            ctx = Context(conn, self.engine, clock, self.config.stale_seconds, schedules)
            observed: dict[str, Observation] = {}
            evaluated: set[str] = set()
            for rule in enabled.values():
                try:
                    with conn.begin_nested():
                        found = evaluate(ctx, rule)
                except Exception:
                    log.exception("alert rule %s failed; its alerts keep their state", rule.name)
                    continue
                evaluated.add(rule.name)
                for obs in found:
                    observed[obs.alert_key] = obs
            firing = alert_sql.firing(conn)
            repeat = timedelta(minutes=self.config.repeat_minutes)
            events: list[tuple[Any, str]] = []
            for key, obs in observed.items():
                if key in firing:
                    row = alert_sql.hold(conn, obs, clock, repeat)
                    if row is not None:
                        events.append((row, "repeat"))
                else:
                    row = alert_sql.open_or_refire(conn, obs, clock)
                    if row is not None:
                        events.append((row, "firing"))
            for key, row in firing.items():
                # a rule that failed this pass keeps its alerts; a disabled or removed one clears
                if key in observed or (row.rule in enabled and row.rule not in evaluated):
                    continue
                resolved = alert_sql.resolve(conn, key, clock)
                if resolved is not None:
                    events.append((resolved, "resolved"))
            silenced = alert_sql.silenced_rules(conn, clock)
            for row, state in events:
                row_rule = enabled.get(row.rule)
                channels = row_rule.channels if row_rule is not None else ("outbox",)
                url = None
                if "webhook" in channels:
                    url = (row_rule.webhook_url if row_rule else None) or self.config.webhook_url
                alert_sql.add_notification(
                    conn,
                    alert=row,
                    state=state,
                    payload=payload_of(row, state),
                    outbox="outbox" in channels,
                    silenced=row.rule in silenced,
                    webhook_url=url,
                    now=clock,
                    due_at=datetime.now(UTC),  # delivery runs on this host's clock
                )
                log.info("alert %s %s: %s", row.alert_key, state, row.message)
        return len(events)

    # --- delivery ------------------------------------------------------------------------

    def deliver(self) -> dict[str, int]:
        """One delivery pass over the due webhook rows (what the background thread runs)."""
        return notify.deliver_due(self.engine, self.config.delivery)

    def kick_delivery(self) -> None:
        """Make sure the background sender runs (it exits when nothing is pending)."""
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                self._wake.set()
                return
            if self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._delivery_loop, name="alert-webhooks", daemon=True
            )
            self._thread.start()

    def _delivery_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.deliver()
                next_at = notify.next_due(self.engine)
            except Exception:
                log.exception("alert delivery pass failed")
                next_at = datetime.now(UTC) + timedelta(seconds=5)
            if next_at is None:
                with self._thread_lock:  # a kick since the pass began means: go again
                    if not self._wake.is_set():
                        self._thread = None
                        return
                continue
            delay = (next_at - datetime.now(UTC)).total_seconds()
            self._wake.wait(min(max(delay, 0.01), 5.0))

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
