from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks.api import SCHEDULE_MAX_AHEAD, SCHEDULE_MAX_PAST, resolve_schedule
from tasks.errors import InvalidArgument, InvalidSchedule
from tasks.registry import Schedule

NOW = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)


def test_schedule_forms() -> None:
    assert resolve_schedule(timedelta(seconds=5), NOW) == NOW + timedelta(seconds=5)
    assert resolve_schedule(5, NOW) == NOW + timedelta(seconds=5)
    assert resolve_schedule(2.5, NOW) == NOW + timedelta(seconds=2.5)
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 12, 1, 9, 0, tzinfo=paris)
    assert resolve_schedule(at, NOW) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", [datetime(2026, 1, 1), -1, "10", None, True, float("nan")])
def test_bad_schedules(bad: object) -> None:
    with pytest.raises(InvalidSchedule):
        resolve_schedule(bad, NOW)


def test_the_window_is_one_day_back_and_ten_years_ahead() -> None:
    assert timedelta(days=1) == SCHEDULE_MAX_PAST
    assert timedelta(days=3660) == SCHEDULE_MAX_AHEAD  # ten years of 366 days
    assert resolve_schedule(NOW - SCHEDULE_MAX_PAST, NOW) == NOW - SCHEDULE_MAX_PAST
    assert resolve_schedule(NOW + SCHEDULE_MAX_AHEAD, NOW) == NOW + SCHEDULE_MAX_AHEAD
    assert resolve_schedule(SCHEDULE_MAX_AHEAD, NOW) == NOW + SCHEDULE_MAX_AHEAD
    assert resolve_schedule(0, NOW) == NOW


@pytest.mark.parametrize(
    "outside",
    [
        NOW - SCHEDULE_MAX_PAST - timedelta(microseconds=1),
        NOW + SCHEDULE_MAX_AHEAD + timedelta(microseconds=1),
        SCHEDULE_MAX_AHEAD + timedelta(microseconds=1),
        datetime.min.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
        timedelta.max,
        float("inf"),
        1e300,
        2**80,
    ],
)
def test_outside_the_window_is_an_invalid_schedule(outside: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        resolve_schedule(outside, NOW)
    assert str(info.value).endswith(
        "is outside the allowed window 2026-11-27T12:00:30Z .. 2036-12-05T12:00:30Z"
        " (now - 1 day .. now + 3660 days)"
    )


def test_interval_ticks_are_aligned() -> None:
    every = Schedule(every=timedelta(seconds=10))
    assert every.latest_tick(NOW) == datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)
    later = NOW + timedelta(seconds=9.9)
    assert every.latest_tick(later) == every.latest_tick(NOW)
    assert every.next_tick(NOW) == NOW + timedelta(seconds=10)


def test_crontab_ticks_once_per_matching_minute() -> None:
    hourly = Schedule(cron="0 * * * *")
    assert hourly.latest_tick(NOW) == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert hourly.latest_tick(NOW + timedelta(minutes=1)) is None
    top = datetime(2026, 11, 28, 13, 0, 40, tzinfo=UTC)
    assert hourly.latest_tick(top) == datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    assert hourly.next_tick(top) == datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize("kwargs", [{}, {"cron": "* * *"}, {"every": timedelta(0)}])
def test_bad_periodic_schedules(kwargs: dict) -> None:
    with pytest.raises(InvalidArgument):
        Schedule(**kwargs)


def test_job_options_are_validated() -> None:
    from tasks.registry import job

    for bad in ({"max_attempts": 101}, {"timeout": 0}, {"backoff": -1}, {"rate_limit": "5/d"}):
        with pytest.raises(InvalidArgument):
            job("test.bad_options", **bad)(lambda data, ctx: None)  # type: ignore[arg-type]
