"""Periodic jobs you can steer (issue 20, part 3), on SQLite and PostgreSQL: time zones across
DST changes, overlap, catch-up after downtime and pause / resume, driven through the real
periodic enqueuer with an injected clock, and through the real maintainer loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select, update

from db import periodic as store
from db.engine import engine_for, read, transaction, write
from db.models import Job
from db.settings import get_settings
from tasks import api, registry
from tasks.errors import InvalidArgument, QueueError, UnknownJobType
from tasks.maintenance.maintainer import Maintainer
from tasks.maintenance.periodic import PeriodicConfig, PeriodicEnqueuer
from tasks.registry import JobType, Schedule
from tasks.steering import list_periodic, pause_periodic, resume_periodic
from tests.processes import wait_for

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def _noop(data: Any, ctx: Any) -> None:
    return None


@pytest.fixture
def periodic_types(use_ledger: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., JobType]:
    """``add(name, **options)`` registers a periodic type for this test only; the enqueuer
    then sees only the types added here (not the built-in system jobs)."""
    registry.load_job_modules(get_settings().job_modules)
    added: list[JobType] = []
    monkeypatch.setattr(registry, "periodic_types", lambda: sorted(added, key=lambda t: t.name))

    def add(name: str, *, cron: str | None = None, tz: str | None = None, **kw: Any) -> JobType:
        every = kw.pop("every", None if cron else timedelta(minutes=1))
        job_type = JobType(
            name=name,
            func=_noop,
            max_attempts=1,
            schedule=Schedule(cron=cron, every=every, tz=tz),
            **kw,
        )
        monkeypatch.setitem(registry._REGISTRY, name, job_type)
        added.append(job_type)
        return job_type

    return add


def enqueuer(url: str) -> PeriodicEnqueuer:
    """A fresh enqueuer: what a (re)started maintainer has."""
    return PeriodicEnqueuer(engine_for(url), PeriodicConfig())


def tick_keys(url: str, name: str) -> list[str]:
    with read(engine_for(url)) as conn:
        rows = conn.execute(select(Job.tick_key).where(Job.type == name).order_by(Job.tick_key))
        return list(rows.scalars())


def key(name: str, tick: datetime) -> str:
    return f"{name}@{tick.astimezone(UTC).isoformat()}"


def state(name: str) -> dict[str, Any]:
    [row] = [r for r in list_periodic() if r["name"] == name]
    return row


def finish_all(url: str, name: str) -> None:
    """Every job of ``name`` ends (cancelled): the previous run is no longer unfinished."""
    with read(engine_for(url)) as conn:
        ids = list(conn.execute(select(Job.id).where(Job.type == name)).scalars())
    for job_id in ids:
        api.cancel_job(job_id)


def minutes(
    start: datetime, end: datetime, step: timedelta = timedelta(minutes=1)
) -> Iterator[datetime]:
    t = start
    while t <= end:
        yield t
        t += step


# --- time zones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # spring forward: 02:30 never shows on Berlin clocks; one run, at 01:30 UTC (03:30 CEST)
        (datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # fall back: 02:30 shows twice; one run, at the first (CEST, 00:30 UTC)
        (datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_berlin_nightly_job_runs_once_on_a_dst_day(
    periodic_types: Callable[..., JobType], use_ledger: str, day: datetime, expected: datetime
) -> None:
    name = "test.berlin_nightly"
    periodic_types(name, cron="30 2 * * *", tz="Europe/Berlin", overlap="allow")
    loop = enqueuer(use_ledger)
    # a maintainer polling every 20 s from 20:00 UTC the day before to 06:00 UTC
    for now in minutes(day - timedelta(hours=4), day + timedelta(hours=6), timedelta(seconds=20)):
        loop.run_once(now + timedelta(seconds=3))
    assert tick_keys(use_ledger, name) == [key(name, expected)]
    row = state(name)
    assert row["schedule"] == "cron 30 2 * * * (Europe/Berlin)"
    assert (row["last_enqueued_tick"], row["missed_count"], row["skipped_count"]) == (
        expected,
        0,
        0,
    )


# --- overlap -------------------------------------------------------------------------------------


def test_overlap_skip_records_the_skipped_tick(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    name = "test.slow"
    periodic_types(name, every=timedelta(minutes=1))
    loop = enqueuer(use_ledger)
    assert loop.run_once(T0) == 1
    [first] = api.get_jobs(type=name)
    # the first run is still waiting: the next two ticks are skipped and recorded
    assert loop.run_once(T0 + timedelta(seconds=60)) == 0
    assert loop.run_once(T0 + timedelta(seconds=90)) == 0  # no new tick: nothing recorded
    with write(engine_for(use_ledger)) as conn:  # now it runs (a worker claimed it)
        conn.execute(update(Job).where(Job.id == first["id"]).values(status="running"))
    assert loop.run_once(T0 + timedelta(seconds=120)) == 0
    row = state(name)
    assert row["skipped_count"] == 2
    assert row["last_skipped_tick"] == T0 + timedelta(seconds=120)
    assert row["last_skipped_for"] == first["id"]
    assert row["last_enqueued_tick"] == T0
    # a restarted maintainer does not count them again
    assert enqueuer(use_ledger).run_once(T0 + timedelta(seconds=125)) == 0
    assert state(name)["skipped_count"] == 2
    # once the run has finished, the next tick is enqueued
    with write(engine_for(use_ledger)) as conn:
        conn.execute(update(Job).where(Job.id == first["id"]).values(status="queued"))
    finish_all(use_ledger, name)
    assert loop.run_once(T0 + timedelta(seconds=180)) == 1
    assert tick_keys(use_ledger, name) == [key(name, T0), key(name, T0 + timedelta(minutes=3))]
    assert state(name)["skipped_count"] == 2


def test_overlap_allow_enqueues_every_tick(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    name = "test.parallel"
    periodic_types(name, every=timedelta(minutes=1), overlap="allow")
    loop = enqueuer(use_ledger)
    for i in range(3):
        assert loop.run_once(T0 + timedelta(minutes=i, seconds=1)) == 1
    assert len(tick_keys(use_ledger, name)) == 3
    assert state(name)["skipped_count"] == 0


def test_a_run_submitted_by_hand_counts_as_a_run(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    name = "test.by_hand"
    periodic_types(name, every=timedelta(minutes=1))
    job_id = api.submit_job(name, {})
    assert enqueuer(use_ledger).run_once(T0) == 0
    assert state(name)["last_skipped_for"] == job_id
    later = api.schedule_job(name, {}, timedelta(hours=1))  # not started: does not block
    api.cancel_job(job_id)
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=1)) == 1
    assert api.get_job(later)["status"] == "scheduled"


# --- catch-up ------------------------------------------------------------------------------------


def test_catch_up_after_downtime(periodic_types: Callable[..., JobType], use_ledger: str) -> None:
    window = timedelta(hours=1)
    every = timedelta(minutes=10)
    for policy in ("none", "latest", "all"):
        periodic_types(
            f"test.catch_{policy}",
            every=every,
            overlap="allow",
            catch_up=policy,
            catch_up_window=window,
        )
    assert enqueuer(use_ledger).run_once(T0 + timedelta(seconds=2)) == 3
    # no maintainer for 95 minutes: ticks T0+10 .. T0+90 missed; T0+40 .. T0+90 in the window
    back = T0 + timedelta(minutes=95)
    assert enqueuer(use_ledger).run_once(back) == 7
    in_window = [T0 + timedelta(minutes=m) for m in (40, 50, 60, 70, 80, 90)]
    name = "test.catch_none"
    assert tick_keys(use_ledger, name) == [key(name, T0)]
    assert (state(name)["missed_count"], state(name)["caught_up_count"]) == (6, 0)
    assert state(name)["last_missed_tick"] == in_window[-1]
    name = "test.catch_latest"
    assert tick_keys(use_ledger, name) == [key(name, T0), key(name, in_window[-1])]
    assert (state(name)["missed_count"], state(name)["caught_up_count"]) == (5, 1)
    assert state(name)["last_missed_tick"] == in_window[-2]
    name = "test.catch_all"
    assert tick_keys(use_ledger, name) == [key(name, T0)] + [key(name, t) for t in in_window]
    assert (state(name)["missed_count"], state(name)["caught_up_count"]) == (0, 6)
    # a second maintainer at the same moment finds every tick dealt with
    assert enqueuer(use_ledger).run_once(back) == 0
    assert state("test.catch_all")["caught_up_count"] == 6
    # and the schedule goes on: the next tick, on time, for all three
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=100, seconds=1)) == 3
    assert state("test.catch_none")["missed_count"] == 6


def test_catch_up_all_is_bounded(periodic_types: Callable[..., JobType], use_ledger: str) -> None:
    name = "test.catch_many"
    periodic_types(
        name,
        every=timedelta(seconds=10),
        overlap="allow",
        catch_up="all",
        catch_up_window=timedelta(hours=1),
    )
    enqueuer(use_ledger).run_once(T0)
    assert enqueuer(use_ledger).run_once(T0 + timedelta(hours=2)) == registry.MAX_CATCH_UP_TICKS
    row = state(name)
    on_time = 7  # the newest ticks, 0 .. 60 s old, are not late
    assert row["caught_up_count"] == registry.MAX_CATCH_UP_TICKS - on_time
    assert row["missed_count"] == 360 - registry.MAX_CATCH_UP_TICKS


def test_a_new_periodic_job_starts_with_its_next_tick(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """The ledger never saw it: no catch-up of ticks from before it existed."""
    name = "test.new"
    periodic_types(name, every=timedelta(minutes=10), catch_up="all")
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=5)) == 0
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=10, seconds=1)) == 1
    assert tick_keys(use_ledger, name) == [key(name, T0 + timedelta(minutes=10))]


# --- pause / resume ------------------------------------------------------------------------------


def test_pause_and_resume_survive_restarts(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    name = "test.steered"
    periodic_types(name, every=timedelta(minutes=1), overlap="allow", catch_up="all")
    assert enqueuer(use_ledger).run_once(T0) == 1
    assert pause_periodic(name, by="alice", reason="term break") is True
    assert pause_periodic(name, by="bob") is False  # already paused: alice's pause stays
    row = state(name)
    assert (row["paused"], row["paused_by"], row["reason"]) == (True, "alice", "term break")
    # restarted maintainers, while it is paused: ticks are dealt with, none is enqueued
    for m in (1, 2, 3):
        assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=m, seconds=1)) == 0
    assert tick_keys(use_ledger, name) == [key(name, T0)]
    assert state(name)["last_tick"] == T0 + timedelta(minutes=3)
    # resumed; down while paused, no maintainer saw minute 4: still not caught up after resume
    assert resume_periodic(name, now=T0 + timedelta(minutes=4, seconds=30)) is True
    assert resume_periodic(name) is False
    assert state(name)["paused"] is False
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=4, seconds=40)) == 0
    assert enqueuer(use_ledger).run_once(T0 + timedelta(minutes=5, seconds=1)) == 1
    assert tick_keys(use_ledger, name) == [key(name, T0), key(name, T0 + timedelta(minutes=5))]
    assert state(name)["missed_count"] == 0


def test_pause_refuses_what_is_not_a_periodic_job(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    periodic_types("test.real", every=timedelta(minutes=1))
    with pytest.raises(UnknownJobType):
        pause_periodic("test.nope")
    with pytest.raises(InvalidArgument, match="not a periodic job"):
        pause_periodic("demo.echo")
    with pytest.raises(InvalidArgument, match="reason must be at most 500"):
        pause_periodic("test.real", reason="x" * 501)
    with pytest.raises(UnknownJobType):
        resume_periodic("test.nope")
    assert resume_periodic("test.real") is False


def test_a_paused_job_whose_type_is_gone_is_listed_and_can_be_resumed(
    periodic_types: Callable[..., JobType], use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    periodic_types("test.retired", every=timedelta(minutes=1))
    pause_periodic("test.retired", by="alice")
    monkeypatch.delitem(registry._REGISTRY, "test.retired")
    monkeypatch.setattr(registry, "periodic_types", lambda: [])
    [row] = list_periodic()
    assert (row["name"], row["registered"], row["paused"]) == ("test.retired", False, True)
    assert resume_periodic("test.retired") is True
    assert list_periodic() == []


# --- the real maintainer loop --------------------------------------------------------------------


def test_pause_and_resume_with_the_real_maintainer_loop(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """The maintainer (embedded transport, no worker) ticks a 1 s periodic job; paused, it
    deals with ticks without enqueuing them; resumed, it enqueues again."""
    name = "test.live"
    periodic_types(name, every=timedelta(seconds=1), overlap="allow", catch_up="none")
    maintainer = Maintainer(get_settings())
    stop = threading.Event()
    thread = threading.Thread(target=maintainer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(tick_keys(use_ledger, name)) >= 2, 20, "two ticks")
        pause_periodic(name, by="test")
        paused_at = datetime.now(UTC)
        before = set(tick_keys(use_ledger, name))
        # the maintainer goes on dealing with ticks: two past the pause, none enqueued
        wait_for(
            lambda: (state(name)["last_tick"] or T0) >= paused_at + timedelta(seconds=2),
            20,
            "ticks dealt with while paused",
        )
        late = [k for k in set(tick_keys(use_ledger, name)) - before]
        # a tick being enqueued as the pause landed may still appear; nothing after it
        assert all(datetime.fromisoformat(k.split("@")[1]) <= paused_at for k in late), late
        count = len(tick_keys(use_ledger, name))
        resume_periodic(name)
        wait_for(lambda: len(tick_keys(use_ledger, name)) > count, 20, "a tick after resume")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_type_that_cannot_be_enqueued_does_not_stop_the_others(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    class Needs(BaseModel):
        course_id: str

    periodic_types("test.a_broken", every=timedelta(minutes=1), schema=Needs)  # data {}: invalid
    periodic_types("test.b_fine", every=timedelta(minutes=1), overlap="allow")
    loop = enqueuer(use_ledger)
    with pytest.raises(QueueError):
        loop.run_once(T0)
    assert tick_keys(use_ledger, "test.b_fine") == [key("test.b_fine", T0)]
    assert tick_keys(use_ledger, "test.a_broken") == []
    with pytest.raises(QueueError):
        loop.run_once(T0 + timedelta(minutes=1))
    assert len(tick_keys(use_ledger, "test.b_fine")) == 2


def test_catch_up_with_the_real_maintainer_loop(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """The ledger says the last maintainer dealt with a tick 30 minutes before the newest one:
    the maintainer that starts now catches up under each type's policy."""
    every = timedelta(hours=1)
    for policy in ("latest", "all"):
        periodic_types(f"test.live_{policy}", every=every, overlap="allow", catch_up=policy)
    newest = Schedule(every=every).latest_tick(datetime.now(UTC))
    assert newest is not None
    missed = [newest - every * n for n in (2, 1, 0)]
    with transaction(engine_for(use_ledger)) as conn:
        for policy in ("latest", "all"):
            store.ensure_row(conn, f"test.live_{policy}")
            store.record_ticks(
                conn, f"test.live_{policy}", store.TickOutcome(last_tick=newest - 3 * every)
            )
    stop = threading.Event()
    thread = threading.Thread(target=Maintainer(get_settings()).run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (
                len(tick_keys(use_ledger, "test.live_all")) >= 3
                and tick_keys(use_ledger, "test.live_latest")
            ),
            20,
            "the caught-up ticks",
        )
    finally:
        stop.set()
        thread.join(timeout=20)
    if Schedule(every=every).latest_tick(datetime.now(UTC)) != newest:
        pytest.skip("an hour began during the test: the newest tick moved")
    assert set(tick_keys(use_ledger, "test.live_all")) >= {key("test.live_all", t) for t in missed}
    latest = tick_keys(use_ledger, "test.live_latest")
    assert key("test.live_latest", newest) in latest
    assert not {key("test.live_latest", t) for t in missed[:2]} & set(latest)
    assert state("test.live_latest")["missed_count"] == 2
    assert state("test.live_all")["missed_count"] == 0
