"""Settings read from the environment (documented in README.md), one class per owner.

``Settings`` here: the ledger, the transport, the queues, workers, the maintainer and
retention, which every process shares. The console's own settings are
``console.settings.ConsoleSettings`` and the alerts' ``tasks.alerts.settings.AlertSettings``;
each is built with :func:`settings_getter` from :class:`EnvSettings`, and
``get_settings.cache_clear()`` (any getter's) makes all of them read the environment again.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: a queue name: 1-64 letters, digits or underscores (Redis keys and metric labels carry it)
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class EnvSettings(BaseSettings):
    """Settings from environment variables named as the fields (any case); others ignored."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")


class Settings(EnvSettings):
    """The shared settings. Unset DATABASE_URL / REDIS_URL select the embedded default."""

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
        description=(
            "a producer sends a due job to an idle queue itself "
            "(tasks/transport/direct_dispatch.py)"
        ),
    )
    queue_prefetch: int = Field(
        default=1,
        ge=0,
        description="attempts a busy thread worker reads ahead (tasks/worker/prefetch.py)",
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
    queue_audit_retention_days: float = Field(
        default=365.0, gt=0, description="audit entries older than this are deleted"
    )
    # retention and rollups (tasks/jobs/system.py, docs/metrics.md)
    queue_retention_completed_hours: float = Field(default=24.0, gt=0)
    queue_retention_failed_days: float = Field(default=7.0, gt=0)
    queue_metrics_retention_days: float = Field(default=90.0, gt=0)
    queue_metrics_recompute_minutes: int = Field(default=5, ge=1, le=60)

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


S = TypeVar("S", bound=EnvSettings)


class SettingsGetter(Generic[S]):
    """``getter()``: the settings of one owner, read from the environment at the first call.
    ``cache_clear()`` forgets every owner's (tests and benchmarks change the environment)."""

    _all: ClassVar[list[SettingsGetter[Any]]] = []

    def __init__(self, cls: type[S]) -> None:
        self._cls = cls
        self._value: S | None = None
        SettingsGetter._all.append(self)

    def __call__(self) -> S:
        value = self._value
        if value is None:
            value = self._value = self._cls()
        return value

    def cache_clear(self) -> None:
        for getter in SettingsGetter._all:
            getter._value = None


def settings_getter(cls: type[S]) -> SettingsGetter[S]:
    return SettingsGetter(cls)


get_settings = settings_getter(Settings)
