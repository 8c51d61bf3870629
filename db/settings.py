"""One settings object, read from the environment (documented in README.md)."""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: a queue name: 1-64 letters, digits or underscores (Redis keys and metric labels carry it)
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class Settings(BaseSettings):
    """Every knob of the system. Unset DATABASE_URL / REDIS_URL select the embedded default."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the ledger")
    redis_url: str | None = Field(default=None, description="Redis URL for the Huey transport")
    queue_job_modules: str = Field(default="", description="comma-separated job-type modules")
    queue_queues: str = Field(
        default="",
        description="comma-separated queues declared besides the queues of the job types",
    )
    queue_data_dir: Path = Field(default=Path("var"), description="embedded-mode data folder")
    queue_namespace: str = Field(default="edurise", description="prefix of the Redis/Huey keys")
    queue_heartbeat_seconds: float = Field(default=2.0, gt=0)
    queue_stale_seconds: float = Field(default=10.0, gt=0)
    queue_dispatch_window: int = Field(default=200, gt=0)
    queue_fair_window: int = Field(
        default=20,
        gt=0,
        description="messages in Redis per queue that holds partitioned jobs (fair share)",
    )
    queue_direct_dispatch: bool = Field(
        default=True,
        description="a producer sends a due job to an idle queue itself (tasks/direct_dispatch.py)",
    )
    queue_prefetch: int = Field(
        default=1,
        ge=0,
        description="attempts a busy thread worker reads ahead (tasks/prefetch.py)",
    )
    queue_pop_batch: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="most messages a thread worker's handler pops at once for very short jobs",
    )
    queue_reconcile_grace_seconds: float = Field(default=5.0, ge=0)
    queue_poll_seconds: float = Field(default=0.5, gt=0)
    queue_shutdown_timeout: float = Field(default=25.0, ge=0)
    log_level: str = Field(default="INFO")
    queue_console_session_hours: float = Field(
        default=12.0, gt=0, description="an idle console login ends after this many hours"
    )
    queue_console_password_checks: int = Field(
        default=2, ge=1, le=64, description="argon2 checks at once per console process"
    )
    queue_console_password_check_wait: float = Field(
        default=5.0, ge=0, description="seconds a login waits for a check before 'try again'"
    )
    queue_console_client_ip_header: str | None = Field(
        default=None,
        description="header a trusted reverse proxy sets to the client address (X-Forwarded-For)",
    )
    queue_audit_retention_days: float = Field(
        default=365.0, gt=0, description="audit entries older than this are deleted"
    )
    # retention and rollups (tasks/system_jobs.py, docs/metrics.md)
    queue_retention_completed_hours: float = Field(default=24.0, gt=0)
    queue_retention_failed_days: float = Field(default=7.0, gt=0)
    queue_metrics_retention_days: float = Field(default=90.0, gt=0)
    queue_metrics_recompute_minutes: int = Field(default=5, ge=1, le=60)
    # alerts (tasks/maintenance/alerts.py, docs/operations.md#alerts)
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

    @field_validator("queue_queues")
    @classmethod
    def _valid_queue_names(cls, value: str) -> str:
        bad = [name for name in _names(value) if not QUEUE_NAME.match(name)]
        if bad:
            raise ValueError(
                f"QUEUE_QUEUES: queue name {bad[0]!r} is invalid: 1-64 letters, digits or"
                " underscores"
            )
        return value

    @field_validator("queue_alert_webhook_url")
    @classmethod
    def _http_webhook(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value and (parts.scheme.lower() not in ("http", "https") or not parts.hostname):
            raise ValueError("QUEUE_ALERT_WEBHOOK_URL must be an http:// or https:// URL")
        return value

    @property
    def ledger_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.queue_data_dir / 'ledger.db').resolve()}"

    @property
    def huey_sqlite_path(self) -> Path:
        return (self.queue_data_dir / "huey.db").resolve()

    @property
    def job_modules(self) -> list[str]:
        return _names(self.queue_job_modules)

    @cached_property
    def queues(self) -> tuple[str, ...]:
        """The queues QUEUE_QUEUES declares (the job types declare theirs)."""
        return tuple(_names(self.queue_queues))

    @property
    def embedded(self) -> bool:
        return not self.database_url and not self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
