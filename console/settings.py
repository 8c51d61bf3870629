"""The console's settings (environment variables ``QUEUE_CONSOLE_*``, README.md)."""

from __future__ import annotations

from pydantic import Field

from db.settings import EnvSettings, settings_getter


class ConsoleSettings(EnvSettings):
    """Sign-in sessions, password checks and the client address behind a proxy."""

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


get_console_settings = settings_getter(ConsoleSettings)
