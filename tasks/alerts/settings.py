"""The alerts' settings (environment variables ``QUEUE_ALERT_*``, docs/operations.md#alerts)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from db.settings import EnvSettings, settings_getter


class AlertSettings(EnvSettings):
    """Rules file, repeat interval, evaluation interval and webhook delivery."""

    queue_alert_rules_file: Path | None = Field(
        default=None, description="JSON or TOML file overriding/adding alert rules"
    )
    queue_alert_repeat_minutes: float = Field(
        default=60.0, gt=0, description="a firing alert is notified again at most this often"
    )
    queue_alert_webhook_url: str | None = Field(
        default=None, description="default webhook of the rules (unset: outbox only)"
    )
    queue_alert_webhook_secret: str | None = Field(
        default=None,
        description="HMAC-SHA256 key of the X-EduRise-Signature header (over timestamp.body)",
    )
    queue_alert_webhook_timeout: float = Field(default=3.0, gt=0, description="seconds per POST")
    queue_alert_webhook_attempts: int = Field(
        default=5, ge=1, description="POSTs of one notification before it is given up"
    )
    queue_alert_webhook_backoff: float = Field(
        default=2.0, gt=0, description="seconds before the first retry; doubles per retry"
    )
    queue_alert_interval_seconds: float = Field(
        default=60.0, gt=0, description="seconds between alert evaluations"
    )

    @field_validator("queue_alert_webhook_url")
    @classmethod
    def _http_webhook(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value and (parts.scheme.lower() not in ("http", "https") or not parts.hostname):
            raise ValueError("QUEUE_ALERT_WEBHOOK_URL must be an http:// or https:// URL")
        return value


get_alert_settings = settings_getter(AlertSettings)
