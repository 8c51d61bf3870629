"""Schedule maths of periodic jobs: crontabs in a time zone across daylight-saving changes,
tick ranges, and the catch-up policies (``plan``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tasks import registry
from tasks.errors import InvalidArgument
from tasks.maintenance.periodic import ON_TIME, plan
from tasks.registry import Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)  # type: ignore[misc]


def all_ticks(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    ticks, total = schedule.ticks_in(after, until, newest=100_000)
    assert len(ticks) == total
    return ticks


def walk_minutes(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The ticks a maintainer polling every minute sees with ``latest_tick``."""
    seen = []
    t = start
    while t < end:
        tick = schedule.latest_tick(t + timedelta(seconds=30))
        if tick is not None and (not seen or seen[-1] != tick):
            seen.append(tick)
        t += timedelta(minutes=1)
    return seen


# --- time zones and DST --------------------------------------------------------------------------


def test_a_0230_daily_job_runs_once_on_the_spring_forward_day() -> None:
    """29 March 2026, Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 never happens on the
    wall clock. The tick comes once, at 01:30 UTC (= 03:30 CEST), the instant 02:30 names with
    the offset in force before the change."""
    nightly = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    ticks = all_ticks(nightly, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert ticks == [
        berlin(2026, 3, 28, 2, 30),  # 01:30 UTC, CET
        utc(2026, 3, 29, 1, 30),  # the spring-forward day: once
        berlin(2026, 3, 30, 2, 30),  # 00:30 UTC, CEST
        berlin(2026, 3, 31, 2, 30),
    ]
    assert ticks[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    assert walk_minutes(nightly, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)) == [ticks[1]]
    assert nightly.next_tick(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 30)
    assert nightly.next_tick(utc(2026, 3, 29, 1, 30)) == utc(2026, 3, 30, 0, 30)


def test_a_0230_daily_job_runs_once_on_the_fall_back_day() -> None:
    """25 October 2026, Berlin: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice.
    The tick comes once, at the first 02:30 (CEST, 00:30 UTC)."""
    nightly = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    ticks = all_ticks(nightly, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert ticks[0] == berlin(2026, 10, 25, 2, 30, fold=0)
    assert walk_minutes(nightly, utc(2026, 10, 24, 22), utc(2026, 10, 25, 22)) == [ticks[0]]
    assert nightly.latest_tick(utc(2026, 10, 25, 1, 30, 5)) is None  # the second 02:30
    assert nightly.next_tick(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_wall_clock_times_stay_put_across_the_change() -> None:
    daily = Schedule(cron="0 9 * * *", tz="Europe/Berlin")
    ticks = all_ticks(daily, utc(2026, 3, 27), utc(2026, 3, 31))
    assert [t.astimezone(BERLIN).hour for t in ticks] == [9, 9, 9, 9]
    assert [t.hour for t in ticks] == [8, 8, 7, 7]  # UTC moves by an hour


def test_an_hourly_job_runs_every_real_hour() -> None:
    """Hour field ``*``: 23 ticks on the short day, 25 on the long one, an hour apart."""
    hourly = Schedule(cron="0 * * * *", tz="Europe/Berlin")
    short = all_ticks(hourly, berlin(2026, 3, 29) - timedelta(seconds=1), berlin(2026, 3, 30))
    assert len(short) == 24  # 00:00 of both days, 23 hours apart
    assert {b - a for a, b in itertools.pairwise(short)} == {timedelta(hours=1)}
    long = all_ticks(hourly, berlin(2026, 10, 25) - timedelta(seconds=1), berlin(2026, 10, 26))
    assert len(long) == 26
    assert {b - a for a, b in itertools.pairwise(long)} == {timedelta(hours=1)}
    quarter = Schedule(cron="*/15 * * * *", tz="Europe/Berlin")
    ticks = all_ticks(quarter, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    assert {b - a for a, b in itertools.pairwise(ticks)} == {timedelta(minutes=15)}


def test_other_zones_and_half_hour_changes() -> None:
    # New York changes on 8 March 2026 (02:00 -> 03:00 EDT): 02:30 runs once, at 07:30 UTC
    ny = Schedule(cron="30 2 * * *", tz="America/New_York")
    assert all_ticks(ny, utc(2026, 3, 8), utc(2026, 3, 9)) == [utc(2026, 3, 8, 7, 30)]
    # Lord Howe Island moves its clocks by 30 minutes (02:00 -> 02:30 on 4 October 2026)
    howe = Schedule(cron="15 2 * * *", tz="Australia/Lord_Howe")
    [tick] = all_ticks(howe, utc(2026, 10, 3, 6), utc(2026, 10, 4, 6))
    assert tick.astimezone(ZoneInfo("Australia/Lord_Howe")).strftime("%H:%M") == "02:45"
    # UTC crontabs are unchanged by all this
    utc_daily = Schedule(cron="30 2 * * *")
    assert all_ticks(utc_daily, utc(2026, 3, 29), utc(2026, 3, 30)) == [utc(2026, 3, 29, 2, 30)]


def test_describe_names_the_zone() -> None:
    assert Schedule(cron="30 2 * * *", tz="Europe/Berlin").describe() == (
        "cron 30 2 * * * (Europe/Berlin)"
    )
    assert Schedule(cron="0 * * * *").describe() == "cron 0 * * * * (UTC)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 * * * *", "tz": ""}, "tz must be an IANA time zone name"),
        ({"cron": "0 * * * *", "tz": "../etc/passwd"}, "unknown time zone"),
        ({"every": timedelta(minutes=1), "tz": "Europe/Berlin"}, "tz= applies to crontab="),
    ],
)
def test_bad_time_zones(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("*", r"\*")):
        Schedule(**kwargs)


# --- tick ranges ---------------------------------------------------------------------------------


def test_interval_tick_ranges_are_counted_not_listed() -> None:
    every = Schedule(every=timedelta(seconds=2))
    start = utc(2026, 1, 1)
    ticks, total = every.ticks_in(start, start + timedelta(days=30), newest=3)
    assert total == 30 * 24 * 3600 // 2
    assert ticks == [start + timedelta(days=30, seconds=s) for s in (-4, -2, 0)]
    assert every.ticks_in(start, start, newest=5) == ([], 0)
    ticks, total = every.ticks_in(start + timedelta(seconds=1), start + timedelta(seconds=2), 5)
    assert (ticks, total) == ([start + timedelta(seconds=2)], 1)  # after < t <= until


def test_crontab_tick_ranges_keep_the_newest() -> None:
    hourly = Schedule(cron="0 * * * *")
    ticks, total = hourly.ticks_in(utc(2026, 1, 1), utc(2026, 1, 2), newest=2)
    assert total == 24
    assert ticks == [utc(2026, 1, 1, 23), utc(2026, 1, 2)]


# --- catch-up policies ---------------------------------------------------------------------------

NOW = utc(2026, 6, 1, 12, 0, 10)


def periodic_type(catch_up: str) -> registry.JobType:
    return registry.JobType(
        name="test.plan",
        func=lambda data, ctx: None,
        schedule=Schedule(every=timedelta(minutes=10)),
        catch_up=catch_up,
    )


MISSED = [utc(2026, 6, 1, 11, m) for m in (20, 30, 40, 50)]


@pytest.mark.parametrize(
    ("catch_up", "ticks", "total", "chosen", "missed"),
    [
        # after downtime: 4 due ticks in the window (6 due in all), newest 10 minutes old
        ("none", MISSED, 6, [], 6),
        ("latest", MISSED, 6, MISSED[-1:], 5),
        ("all", MISSED, 6, MISSED, 2),
        # a normal pass: one tick, just due
        ("none", [utc(2026, 6, 1, 12)], 1, [utc(2026, 6, 1, 12)], 0),
        ("latest", [utc(2026, 6, 1, 12)], 1, [utc(2026, 6, 1, 12)], 0),
        ("all", [utc(2026, 6, 1, 12)], 1, [utc(2026, 6, 1, 12)], 0),
        # "none" after downtime: the current tick still runs, the missed ones do not
        ("none", [*MISSED, utc(2026, 6, 1, 12)], 5, [utc(2026, 6, 1, 12)], 4),
        ("latest", [], 0, [], 0),
    ],
)
def test_catch_up_plans(
    catch_up: str, ticks: list[datetime], total: int, chosen: list[datetime], missed: int
) -> None:
    assert plan(periodic_type(catch_up), ticks, total, NOW) == (chosen, missed)


def test_on_time_is_a_minute() -> None:
    assert timedelta(seconds=60) == ON_TIME
    late = [NOW - ON_TIME - timedelta(seconds=1)]
    assert plan(periodic_type("none"), late, 1, NOW) == ([], 1)
    assert plan(periodic_type("none"), [NOW - ON_TIME], 1, NOW) == ([NOW - ON_TIME], 0)


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": "queue"}, "overlap must be one of skip, allow"),
        ({"catch_up": "some"}, "catch_up must be one of none, latest, all"),
        ({"catch_up_window": timedelta(0)}, "catch_up_window must be"),
        ({"catch_up_window": timedelta(days=32)}, "catch_up_window must be"),
        ({"catch_up_window": 3600}, "catch_up_window must be"),
    ],
)
def test_bad_policies(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        registry.periodic_job("test.bad_policy", every=timedelta(minutes=1), **kwargs)


def test_policies_default_to_skip_and_latest_within_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", {})
    registry.periodic_job("test.defaults", crontab="30 2 * * *", tz="Europe/Berlin")(
        lambda data, ctx: None
    )
    [jt] = registry.periodic_types()
    assert (jt.overlap, jt.catch_up, jt.catch_up_window) == ("skip", "latest", timedelta(days=1))
    assert jt.schedule == Schedule(cron="30 2 * * *", tz="Europe/Berlin")
