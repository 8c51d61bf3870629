"""Webhook delivery of alert notifications from the outbox (``alert_notifications``).

Each pending row is POSTed as JSON, signed with ``X-EduRise-Signature: sha256=<hex>`` (HMAC-
SHA256 of the raw body with QUEUE_ALERT_WEBHOOK_SECRET), with a short timeout. A failure
schedules a retry with exponential backoff; after the last attempt the row is ``given_up``.
Rows are sent concurrently, so a slow or failing receiver never holds back another's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from db import alerts as alert_sql
from db.engine import read, write

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-EduRise-Signature"


@dataclass(frozen=True)
class DeliveryConfig:
    secret: str | None = None
    timeout: float = 3.0
    max_attempts: int = 5
    backoff_seconds: float = 2.0  # before the first retry; doubles per retry
    max_backoff_seconds: float = 300.0
    concurrency: int = 4


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """What a receiver does: recompute the HMAC of the raw body and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def body_of(payload: dict[str, Any], sent_at: datetime) -> bytes:
    return json.dumps({**payload, "sent_at": sent_at.isoformat()}, sort_keys=True).encode()


def post(url: str, body: bytes, config: DeliveryConfig) -> None:
    """One POST; raises on a non-2xx answer, a timeout or a connection error."""
    headers = {"Content-Type": "application/json", "User-Agent": "edurise-queue-alerts"}
    if config.secret:
        headers[SIGNATURE_HEADER] = sign(body, config.secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def backoff(config: DeliveryConfig, attempt: int) -> timedelta:
    """Delay after failed attempt number ``attempt`` (1-based)."""
    seconds = min(config.max_backoff_seconds, config.backoff_seconds * 2 ** (attempt - 1))
    return timedelta(seconds=seconds)


def _deliver_one(engine: Engine, row: Any, config: DeliveryConfig) -> str:
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=config.timeout * 2 + 5)
    with write(engine) as conn:
        if not alert_sql.claim_delivery(conn, row.id, row.attempts, lease):
            return "skipped"  # another sender took this attempt
    attempt = row.attempts + 1
    error: str | None = None
    try:
        post(row.webhook_url, body_of(row.payload, datetime.now(UTC)), config)
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code}"
    except Exception as exc:  # timeouts, refused connections, bad URLs: all retried
        error = f"{type(exc).__name__}: {exc}"
    done = datetime.now(UTC)
    if error is None:
        outcome, next_at = "delivered", None
    elif attempt >= config.max_attempts:
        outcome, next_at = "given_up", None
        log.warning("alert notification %s given up after %d attempts: %s", row.id, attempt, error)
    else:
        outcome, next_at = "pending", done + backoff(config, attempt)
    with write(engine) as conn:
        alert_sql.finish_delivery(
            conn, row.id, attempt, delivery=outcome, now=done, next_attempt_at=next_at, error=error
        )
    return outcome


def deliver_due(engine: Engine, config: DeliveryConfig, limit: int = 50) -> dict[str, int]:
    """POST every due pending row once (concurrently); returns counts by outcome."""
    with read(engine) as conn:
        rows = alert_sql.due_deliveries(conn, datetime.now(UTC), limit)
    counts: dict[str, int] = {}
    if not rows:
        return counts
    with ThreadPoolExecutor(max_workers=max(1, min(config.concurrency, len(rows)))) as pool:
        for outcome in pool.map(lambda r: _safe_deliver(engine, r, config), rows):
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _safe_deliver(engine: Engine, row: Any, config: DeliveryConfig) -> str:
    try:
        return _deliver_one(engine, row, config)
    except Exception:
        log.exception("alert notification %s: delivery bookkeeping failed", row.id)
        return "error"


def next_due(engine: Engine) -> datetime | None:
    with read(engine) as conn:
        return alert_sql.next_delivery_at(conn)
