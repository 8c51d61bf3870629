from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks.api import resolve_schedule
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
