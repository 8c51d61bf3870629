"""The periodic enqueuer (``tasks/maintenance/periodic.py``) against a real ledger, driven by
``run_once(now)`` with an injected clock: one ledger row per tick however often it polls and
however many enqueuers run the tick at once; ticks passed over between two polls are dealt
with by the type's ``catch_up`` policy (default ``latest``); a pause written by someone else
stops a long-running enqueuer at its next tick.

The policies themselves (overlap, catch-up after a restart, time zones, pause/resume across
restarts) are covered in ``test_periodic_steering.py``; this file reuses its fixture."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from db import periodic as store
from db.engine import create_ledger_engine, engine_for, read, transaction
from db.models import Job
from tasks.maintenance.periodic import PeriodicConfig, PeriodicEnqueuer
from tasks.registry import JobType
from tests.integration import test_periodic_steering as steering
from tests.integration.test_periodic_steering import T0, enqueuer, key, tick_keys

periodic_types = steering.periodic_types  # the fixture: registers types for one test
MINUTE = timedelta(minutes=1)


def state(url: str, name: str) -> dict[str, Any]:
    with read(engine_for(url)) as conn:
        return store.states(conn, [name])[name]


def test_each_tick_is_one_job_however_often_the_enqueuer_polls(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    name = "test.every_minute"
    periodic_types(name, every=MINUTE, overlap="allow", periodic_data={"report": "daily"})
    loop = enqueuer(use_ledger)
    polls = [T0 + timedelta(seconds=s) for s in range(1, 190, 7)]  # every 7 s, 3 minutes
    inserted = sum(loop.run_once(now) for now in polls)
    ticks = [T0 + i * MINUTE for i in range(4)]
    assert tick_keys(use_ledger, name) == [key(name, t) for t in ticks]
    assert inserted == 4
    with read(engine_for(use_ledger)) as conn:
        jobs = conn.execute(
            select(Job.status, Job.queue, Job.attempt, Job.data).where(Job.type == name)
        ).all()
    assert len(jobs) == 4
    assert {(j.status, j.queue, j.attempt) for j in jobs} == {("queued", "default", 0)}
    assert all(j.data == {"report": "daily"} for j in jobs)
    # a maintainer (re)started at the same moment finds every tick dealt with
    assert enqueuer(use_ledger).run_once(polls[-1]) == 0


def test_two_enqueuers_running_the_same_ticks_at_once_enqueue_each_once(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """Two maintainers (two engines, so two connection pools) poll at the same instants."""
    name = "test.contended"
    periodic_types(name, every=MINUTE, overlap="allow")
    other_engine = create_ledger_engine(use_ledger)
    loops = [enqueuer(use_ledger), PeriodicEnqueuer(other_engine, PeriodicConfig())]
    polls = [T0 + i * MINUTE + timedelta(seconds=1) for i in range(10)]
    together = threading.Barrier(2, timeout=10)

    def poll_every_tick(loop: PeriodicEnqueuer) -> list[int]:
        counts = []
        for now in polls:
            together.wait()
            counts.append(loop.run_once(now))
        return counts

    try:
        with ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(poll_every_tick, loops))
    finally:
        other_engine.dispose()
    # per tick one of the two enqueued it, the other found it dealt with
    assert [a + b for a, b in zip(*counts, strict=True)] == [1] * 10
    assert tick_keys(use_ledger, name) == [key(name, T0 + i * MINUTE) for i in range(10)]
    row = state(use_ledger, name)
    assert (row["last_tick"], row["last_enqueued_tick"]) == (T0 + 9 * MINUTE, T0 + 9 * MINUTE)
    assert (row["missed_count"], row["skipped_count"], row["caught_up_count"]) == (0, 0, 0)


def test_ticks_passed_over_between_two_polls_are_missed_but_the_newest(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """The same enqueuer, stalled for five minutes (say, a long database outage): under the
    default ``catch_up="latest"`` only the newest due tick is enqueued; the four before it are
    counted missed, once."""
    name = "test.stalled"
    job_type = periodic_types(name, every=MINUTE, overlap="allow")
    assert job_type.catch_up == "latest"
    loop = enqueuer(use_ledger)
    assert loop.run_once(T0 + timedelta(seconds=1)) == 1
    back = T0 + 5 * MINUTE + timedelta(seconds=1)
    assert loop.run_once(back) == 1
    assert loop.run_once(back + timedelta(seconds=30)) == 0
    assert tick_keys(use_ledger, name) == [key(name, T0), key(name, T0 + 5 * MINUTE)]
    row = state(use_ledger, name)
    assert (row["missed_count"], row["last_missed_tick"]) == (4, T0 + 4 * MINUTE)
    assert row["caught_up_count"] == 0  # the newest tick was on time: not a catch-up


def test_a_pause_written_elsewhere_stops_a_running_enqueuer_at_its_next_tick(
    periodic_types: Callable[..., JobType], use_ledger: str
) -> None:
    """The enqueuer keeps its cursor in memory between passes, but reads the pause in the
    transaction of every tick: a console's pause and resume reach a long-running maintainer."""
    name = "test.steered_live"
    periodic_types(name, every=MINUTE, overlap="allow")
    loop = enqueuer(use_ledger)
    assert loop.run_once(T0 + timedelta(seconds=1)) == 1
    with transaction(engine_for(use_ledger)) as conn:
        assert store.set_paused(conn, name, by="console", reason="exams")
    assert loop.run_once(T0 + MINUTE + timedelta(seconds=1)) == 0
    assert state(use_ledger, name)["last_tick"] == T0 + MINUTE  # dealt with, not enqueued
    with transaction(engine_for(use_ledger)) as conn:
        assert store.set_resumed(conn, name, now=T0 + MINUTE + timedelta(seconds=30))
    assert loop.run_once(T0 + 2 * MINUTE + timedelta(seconds=1)) == 1
    assert tick_keys(use_ledger, name) == [key(name, T0), key(name, T0 + 2 * MINUTE)]
