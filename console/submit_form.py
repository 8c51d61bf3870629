"""The checks of the Submit page's fields, before anything is sent: each problem is reported
for its field, in the job API's own words where the API has a public check
(``check_declared_queue``, ``resolve_schedule``) and against its bounds otherwise, so a value
is never clamped or dropped silently. Errors the job API raises afterwards are mapped back to
their field (``field_of``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from db.models import PRIORITY_MAX, PRIORITY_MIN
from tasks import api
from tasks.errors import (
    IdempotencyConflict,
    InvalidJobData,
    InvalidPriority,
    InvalidSchedule,
    QueueError,
    UnknownQueue,
)

#: the fields a message can be shown under
FIELDS = ("data", "priority", "queue", "max_attempts", "key", "date", "delay", "form")
NOW, AT, AFTER = "Now", "At a date and time (UTC)", "After a delay"
WHEN = (NOW, AT, AFTER)
MAX_KEY = 255


@dataclass(frozen=True)
class Fields:
    """What the form holds (raw widget values)."""

    priority: Any
    queue: str
    max_attempts: Any
    key: str
    when: str
    day: date | None
    clock: time | None
    delay: Any


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def check_priority(value: Any) -> str | None:
    n = _whole(value)
    if n is None or not PRIORITY_MIN <= n <= PRIORITY_MAX:
        return (
            f"Priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX} "
            f"(higher runs first); got {value}."
        )
    return None


def check_max_attempts(value: Any) -> str | None:
    n = _whole(value)
    if n is None or not 1 <= n <= api.MAX_ATTEMPTS_LIMIT:
        return (
            f"Max attempts must be a whole number from 1 to {api.MAX_ATTEMPTS_LIMIT}; got {value}."
        )
    return None


def check_key(value: str) -> str | None:
    if not value:
        return None
    if len(value) > MAX_KEY or "\x00" in value:
        return f"An idempotency key has 1 to {MAX_KEY} characters (no NUL); got {len(value)}."
    return None


def check_queue(value: str) -> str | None:
    """Empty (the type's own queue) or a declared queue."""
    if not value:
        return None
    try:
        api.check_declared_queue(value)
    except QueueError as exc:
        return str(exc)
    return None


def schedule_of(fields: Fields) -> datetime | float | None:
    """The schedule the form asks for: None (now), a UTC datetime or a delay in seconds."""
    if fields.when == AT:
        if fields.day is None or fields.clock is None:
            return None
        return datetime.combine(fields.day, fields.clock, tzinfo=UTC)
    if fields.when == AFTER:
        return float(fields.delay) if isinstance(fields.delay, int | float) else None
    return None


def check_schedule(fields: Fields, now: datetime | None = None) -> tuple[str, str] | None:
    """(field, message) when the date or the delay is outside what the job API takes."""
    if fields.when == NOW:
        return None
    field = "date" if fields.when == AT else "delay"
    if fields.when == AT and (fields.day is None or fields.clock is None):
        return field, "Choose a date and a time (UTC)."
    if fields.when == AFTER and not isinstance(fields.delay, int | float):
        return field, "Enter a delay in seconds."
    try:
        api.resolve_schedule(schedule_of(fields), now)
    except InvalidSchedule as exc:
        return field, f"{exc}."
    return None


def problems(fields: Fields, now: datetime | None = None) -> dict[str, str]:
    """Every field whose value the job API would refuse, with the reason."""
    found: dict[str, str] = {}
    for name, message in (
        ("priority", check_priority(fields.priority)),
        ("queue", check_queue(fields.queue.strip())),
        ("max_attempts", check_max_attempts(fields.max_attempts)),
        ("key", check_key(fields.key)),
    ):
        if message:
            found[name] = message
    if (bad := check_schedule(fields, now)) is not None:
        found[bad[0]] = bad[1]
    return found


def field_of(exc: BaseException | None, when: str) -> str:
    """The field a job API error is about (``form`` when it is about none in particular)."""
    if isinstance(exc, IdempotencyConflict):
        return "key"
    if isinstance(exc, InvalidPriority):
        return "priority"
    if isinstance(exc, UnknownQueue):
        return "queue"
    if isinstance(exc, InvalidSchedule):
        return "date" if when == AT else "delay"
    if isinstance(exc, InvalidJobData):
        return "data"
    text = str(exc or "")
    for marker, field in (
        ("max_attempts", "max_attempts"),
        ("idempotency_key", "key"),
        ("queue", "queue"),
        ("priority", "priority"),
    ):
        if marker in text:
            return field
    return "form"
