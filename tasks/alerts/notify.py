"""Webhook delivery of alert notifications from the outbox (``alert_notifications``).

Each pending row is POSTed as JSON with a short timeout, to ``http://`` or ``https://`` URLs
only, and redirects are not followed (a 3xx answer is a failed attempt: a POST turned into a
GET to another host must not count as delivered). With QUEUE_ALERT_WEBHOOK_SECRET set, every
POST carries ``X-EduRise-Timestamp`` (Unix seconds) and ``X-EduRise-Signature: v1=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<raw body>``, as Stripe and Slack sign theirs: a receiver that
checks the timestamp is within ``SIGNATURE_TOLERANCE`` refuses replays of old requests. A
failure schedules a retry with exponential backoff; after the last attempt the row is
``given_up``. Rows are sent concurrently, so a slow or failing receiver never holds back
another's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from db import alerts as alert_sql
from db.engine import read, write

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-EduRise-Signature"
TIMESTAMP_HEADER = "X-EduRise-Timestamp"
SIGNATURE_VERSION = "v1"
#: seconds a receiver accepts between the timestamp and its own clock (either way)
SIGNATURE_TOLERANCE = 300
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class DeliveryConfig:
    secret: str | None = None
    timeout: float = 3.0
    max_attempts: int = 5
    backoff_seconds: float = 2.0  # before the first retry; doubles per retry
    max_backoff_seconds: float = 300.0
    concurrency: int = 4


class UnsupportedUrl(ValueError):
    """Not an http:// or https:// URL with a host: never retried."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header's value: HMAC-SHA256 of ``<timestamp>.<body>``."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    secret: str,
    *,
    tolerance: float = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """What a receiver does (docs/operations.md has it standalone): the timestamp is recent,
    and the HMAC of ``<timestamp>.<raw body>`` matches, compared in constant time."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, int(timestamp)), signature)


def body_of(
    payload: dict[str, Any], sent_at: datetime, notification_id: int | None = None
) -> bytes:
    extra: dict[str, Any] = {"sent_at": sent_at.isoformat()}
    if notification_id is not None:  # receivers deduplicate retries and replays by it
        extra["notification_id"] = notification_id
    return json.dumps({**payload, **extra}, sort_keys=True).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is raised as ``HTTPError`` instead of being followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    """http and https only (no file://, ftp://, data: handlers), no redirects; proxies from
    the environment's ``http_proxy`` / ``https_proxy`` as before."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        _NoRedirect(),
    ):
        opener.add_handler(handler)
    return opener


def check_url(url: str) -> None:
    """Raise ``UnsupportedUrl`` unless ``url`` is http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise UnsupportedUrl(f"unsupported webhook URL {url[:80]!r}: only http:// and https://")


_unsigned_warned = threading.Event()


def post(url: str, body: bytes, config: DeliveryConfig) -> None:
    """One POST; raises on a non-2xx answer (3xx included), a timeout or a connection error,
    and ``UnsupportedUrl`` for anything but http(s)."""
    check_url(url)
    headers = {"Content-Type": "application/json", "User-Agent": "edurise-queue-alerts"}
    if config.secret:
        timestamp = int(time.time())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(body, config.secret, timestamp)
    elif not _unsigned_warned.is_set():
        _unsigned_warned.set()
        log.warning(
            "alert webhooks are sent unsigned: set QUEUE_ALERT_WEBHOOK_SECRET so receivers can"
            " verify them"
        )
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with _opener().open(request, timeout=config.timeout) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def config_warnings(webhook_url: str | None, secret: str | None) -> list[str]:
    """What the maintainer logs at start-up about the webhook settings."""
    if webhook_url and not secret:
        return [
            "QUEUE_ALERT_WEBHOOK_URL is set but QUEUE_ALERT_WEBHOOK_SECRET is not: alert"
            " webhooks go out unsigned and receivers cannot tell them from forgeries"
        ]
    return []


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
    permanent = False
    try:
        post(row.webhook_url, body_of(row.payload, datetime.now(UTC), row.id), config)
    except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
        error = f"HTTP {exc.code}"
    except UnsupportedUrl as exc:
        error, permanent = str(exc), True
    except Exception as exc:  # timeouts, refused connections: retried
        error = f"{type(exc).__name__}: {exc}"
    done = datetime.now(UTC)
    if error is None:
        outcome, next_at = "delivered", None
    elif permanent or attempt >= config.max_attempts:
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
