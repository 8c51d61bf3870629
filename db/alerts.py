"""SQL of the alerts: rollup reads for the rules, alert state transitions (guarded UPDATEs),
the notification outbox (``alert_notifications``) and rule silences.

Rules read only the rollup tables and ``queue_workers``, never ``queue_jobs``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from db.driver import driver_for
from db.models import Alert, AlertNotification, AlertSilence, Metric, TypeMetric, Worker

alerts = Alert.__table__
silences = AlertSilence.__table__
notifications = AlertNotification.__table__
queue_metrics = Metric.__table__
type_metrics = TypeMetric.__table__
workers = Worker.__table__

ALERT_TABLES = ("alert_notifications", "queue_alert_silences", "queue_alerts")


# --- rollup reads ----------------------------------------------------------------------------


def queue_totals(conn: Connection, since: datetime) -> list[Any]:
    """Per queue since ``since``: error, job and retry counts (for error rates)."""
    qm = queue_metrics.c
    return list(
        conn.execute(
            select(
                qm.queue_name,
                func.sum(qm.error_count).label("error_count"),
                func.sum(qm.job_count).label("job_count"),
                func.sum(qm.retries).label("retries"),
            )
            .where(qm.timestamp >= since)
            .group_by(qm.queue_name)
        )
    )


def queue_minutes(conn: Connection, since: datetime) -> list[Any]:
    """Minute rows since ``since`` (depth, wait percentiles and histograms), oldest first."""
    qm = queue_metrics.c
    return list(
        conn.execute(
            select(qm.queue_name, qm.timestamp, qm.depth, qm.wait_p95, qm.wait_hist)
            .where(qm.timestamp >= since)
            .order_by(qm.queue_name, qm.timestamp)
        )
    )


def type_totals(conn: Connection, since: datetime) -> list[Any]:
    """Per (queue, job type) since ``since``: completed and failed counts."""
    tm = type_metrics.c
    return list(
        conn.execute(
            select(
                tm.queue_name,
                tm.job_type,
                func.sum(tm.completed_count).label("completed_count"),
                func.sum(tm.failed_count).label("failed_count"),
            )
            .where(tm.timestamp >= since)
            .group_by(tm.queue_name, tm.job_type)
        )
    )


def live_worker_queues(conn: Connection, now: datetime, stale_seconds: float) -> set[str]:
    """Queues served by a running worker with a fresh heartbeat (indexed on last_heartbeat)."""
    rows = conn.execute(
        select(workers.c.queues).where(
            workers.c.status == "running",
            workers.c.last_heartbeat >= now - timedelta(seconds=stale_seconds),
        )
    )
    out: set[str] = set()
    for (queues,) in rows:
        out.update(queues or [])
    return out


# --- state transitions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """A condition that holds now: one alert key of one rule."""

    alert_key: str
    rule: str
    kind: str
    value: float | None
    threshold: float | None
    message: str
    queue_name: str | None = None
    job_type: str | None = None
    details: dict[str, Any] | None = None


def firing(conn: Connection) -> dict[str, Any]:
    """Firing alerts by key."""
    rows = conn.execute(select(alerts).where(alerts.c.state == "firing"))
    return {r.alert_key: r for r in rows}


def open_or_refire(conn: Connection, obs: Observation, now: datetime) -> Any | None:
    """Start firing ``obs``: insert its row, or flip a resolved row back to firing. Returns the
    row when this call made the transition (the caller then notifies), else None."""
    values = {
        "state": "firing",
        "fired_at": now,
        "resolved_at": None,
        "last_notified_at": now,
        "value": obs.value,
        "threshold": obs.threshold,
        "message": obs.message,
        "details": obs.details or {},
        "updated_at": now,
        "rule": obs.rule,
        "kind": obs.kind,
        "queue_name": obs.queue_name,
        "job_type": obs.job_type,
    }
    row = conn.execute(
        update(alerts)
        .where(alerts.c.alert_key == obs.alert_key, alerts.c.state == "resolved")
        .values(**values)
        .returning(*alerts.c)
    ).first()
    if row is not None:
        return row
    exists = conn.execute(
        select(alerts.c.id).where(alerts.c.alert_key == obs.alert_key)
    ).scalar_one_or_none()
    if exists is not None:
        return None
    return conn.execute(
        driver_for(conn)
        .insert(alerts)
        .values(alert_key=obs.alert_key, **values)
        .on_conflict_do_nothing(index_elements=["alert_key"])
        .returning(*alerts.c)
    ).first()


def hold(conn: Connection, obs: Observation, now: datetime, repeat: timedelta) -> Any | None:
    """``obs`` still holds: refresh its value; returns the row when a repeat is due (claimed by
    moving ``last_notified_at``), else None."""
    guard = and_(alerts.c.alert_key == obs.alert_key, alerts.c.state == "firing")
    fresh = {
        "value": obs.value,
        "threshold": obs.threshold,
        "message": obs.message,
        "details": obs.details or {},
        "updated_at": now,
    }
    row = conn.execute(
        update(alerts)
        .where(
            guard,
            or_(
                alerts.c.last_notified_at.is_(None),
                alerts.c.last_notified_at <= now - repeat,
            ),
        )
        .values(last_notified_at=now, **fresh)
        .returning(*alerts.c)
    ).first()
    if row is None:
        conn.execute(update(alerts).where(guard).values(**fresh))
    return row


def resolve(conn: Connection, alert_key: str, now: datetime) -> Any | None:
    """Resolve a firing alert; returns the row when this call resolved it."""
    return conn.execute(
        update(alerts)
        .where(alerts.c.alert_key == alert_key, alerts.c.state == "firing")
        .values(state="resolved", resolved_at=now, updated_at=now, last_notified_at=now)
        .returning(*alerts.c)
    ).first()


# --- outbox ----------------------------------------------------------------------------------


def add_notification(
    conn: Connection,
    *,
    alert: Any,
    state: str,
    payload: dict[str, Any],
    outbox: bool,
    silenced: bool,
    webhook_url: str | None,
    now: datetime,
    due_at: datetime | None = None,
) -> int:
    """One outbox/history row; a webhook row starts ``pending``, due at ``due_at`` (the
    sender's clock, default ``now``)."""
    send = webhook_url is not None and not silenced
    result = conn.execute(
        insert(notifications)
        .values(
            alert_id=alert.id,
            alert_key=alert.alert_key,
            rule=alert.rule,
            state=state,
            created_at=now,
            payload=payload,
            outbox=outbox and not silenced,
            silenced=silenced,
            webhook_url=webhook_url if send else None,
            delivery="pending" if send else "none",
            attempts=0,
            next_attempt_at=(due_at or now) if send else None,
        )
        .returning(notifications.c.id)
    )
    return int(result.scalar_one())


def due_deliveries(conn: Connection, now: datetime, limit: int = 50) -> list[Any]:
    n = notifications.c
    return list(
        conn.execute(
            select(notifications)
            .where(n.delivery == "pending", n.next_attempt_at <= now)
            .order_by(n.next_attempt_at, n.id)
            .limit(limit)
        )
    )


def next_delivery_at(conn: Connection) -> datetime | None:
    n = notifications.c
    return conn.execute(
        select(func.min(n.next_attempt_at)).where(n.delivery == "pending")
    ).scalar_one_or_none()


def claim_delivery(conn: Connection, row_id: int, attempts: int, lease_until: datetime) -> bool:
    """Take one attempt of a pending row (guarded on its attempt count, so two senders never
    POST the same attempt); the lease keeps others off it while the POST runs."""
    n = notifications.c
    result = conn.execute(
        update(notifications)
        .where(n.id == row_id, n.delivery == "pending", n.attempts == attempts)
        .values(attempts=attempts + 1, next_attempt_at=lease_until)
    )
    return result.rowcount == 1


def finish_delivery(
    conn: Connection,
    row_id: int,
    attempt: int,
    *,
    delivery: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
) -> None:
    n = notifications.c
    conn.execute(
        update(notifications)
        .where(n.id == row_id, n.delivery == "pending", n.attempts == attempt)
        .values(
            delivery=delivery,
            delivered_at=now if delivery == "delivered" else None,
            next_attempt_at=next_attempt_at,
            last_error=error[:2000] if error else None,
        )
    )


# --- silences and console reads --------------------------------------------------------------


def silenced_rules(conn: Connection, now: datetime) -> dict[str, datetime]:
    rows = conn.execute(
        select(silences.c.rule, silences.c.silenced_until).where(silences.c.silenced_until > now)
    )
    return {r.rule: r.silenced_until for r in rows}


def silence(
    conn: Connection, rule: str, until: datetime, *, by: str, reason: str | None, now: datetime
) -> None:
    """Silence ``rule`` until ``until`` (replaces an earlier silence; a past time lifts it)."""
    conn.execute(delete(silences).where(silences.c.rule == rule))
    conn.execute(
        insert(silences).values(
            rule=rule,
            silenced_until=until,
            silenced_by=by[:100],
            reason=(reason or None) and reason[:500],
            updated_at=now,
        )
    )


def all_silences(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(silences).order_by(silences.c.rule))
    return [dict(r._mapping) for r in rows]


def active_alerts(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(alerts).where(alerts.c.state == "firing").order_by(alerts.c.fired_at.desc())
    )
    return [dict(r._mapping) for r in rows]


def history(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    n = notifications.c
    rows = conn.execute(
        select(
            n.id,
            n.created_at,
            n.rule,
            n.alert_key,
            n.state,
            n.silenced,
            n.delivery,
            n.attempts,
            n.payload,
        )
        .order_by(n.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def notifications_of(conn: Connection, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    query = select(notifications).order_by(notifications.c.id)
    if keys is not None:
        query = query.where(notifications.c.alert_key.in_(list(keys)))
    return [dict(r._mapping) for r in conn.execute(query)]
