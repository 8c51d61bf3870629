"""Prefetch against real PostgreSQL and Redis: a thread worker's next attempt is popped and
its lease read ahead of the handlers, handed over fresh, read again when old, never read
ahead for long jobs, and given back to Redis in its place when nobody takes it."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from db.settings import get_settings
from tasks import api, registry
from tasks.broker import LedgerRedisStorage, decode_job_message, make_huey
from tasks.prefetch import PrefetchConfig, Prefetcher
from tasks.worker import HeldConnections
from tests.processes import Processes, wait_for


@pytest.fixture
def storage(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> LedgerRedisStorage:
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    storage = make_huey(get_settings(), ["default"]).storage
    assert isinstance(storage, LedgerRedisStorage)
    return storage


@pytest.fixture
def start_prefetcher(storage: LedgerRedisStorage) -> Iterator[object]:
    started: list[Prefetcher] = []

    def start(config: PrefetchConfig, recent_runs: tuple[float, ...] = ()) -> Prefetcher:
        held = HeldConnections(api.engine())
        prefetcher = Prefetcher(storage.pop, storage.give_back, held.leased, config)
        for seconds in recent_runs:
            prefetcher.ran(seconds)
        prefetcher.start()
        started.append(prefetcher)
        return prefetcher

    yield start
    for prefetcher in started:
        prefetcher.stop()


def _submit(priority: int = 0) -> uuid.UUID:
    """A job sent to Redis by its producer (direct dispatch: the queue is idle)."""
    job_id = api.submit_job("demo.echo", {"p": priority}, priority)
    assert api.get_job(job_id)["status"] == "dispatched"
    return job_id


def test_a_handler_takes_the_read_ahead_attempt_from_memory(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    job_id = _submit()
    prefetcher = start_prefetcher(PrefetchConfig(depth=1))
    wait_for(lambda: storage.size_of("default") == 0, 5, "the prefetch thread to pop the job")
    data = prefetcher.take(5.0)
    assert data is not None and decode_job_message(data)[0] == job_id
    claimed = prefetcher.leased(job_id, 1)
    assert claimed is not None and (claimed.id, claimed.lease, claimed.type) == (
        job_id,
        1,
        "demo.echo",
    )
    assert prefetcher.leased(job_id, 1) is None  # handed over once


def test_an_attempt_taken_late_is_read_again_by_its_handler(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    job_id = _submit()
    prefetcher = start_prefetcher(PrefetchConfig(depth=1, fresh_seconds=0.0))
    wait_for(lambda: storage.size_of("default") == 0, 5, "the prefetch thread to pop the job")
    assert api.cancel_job(job_id) == "cancelled"  # lands after the prefetched read
    data = prefetcher.take(5.0)
    assert data is not None
    # the prefetched read is too old to trust: the handler reads the lease again and finds
    # nothing to run
    assert prefetcher.leased(job_id, 1) is None
    assert HeldConnections(api.engine()).leased(job_id, 1) is None


def test_an_attempt_nobody_takes_goes_back_in_its_place(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    first, second = _submit(priority=9), _submit(priority=1)
    before = storage.window("default")
    prefetcher = start_prefetcher(PrefetchConfig(depth=1, hold_seconds=0.2))
    wait_for(lambda: prefetcher.given_back == 1, 5, "the held attempt to be given back")
    # same order as before: the best job is first in line again, for any worker
    assert storage.window("default") == before
    assert [decode_job_message(m)[0] for m in before] == [first, second]
    # after a give-back it no longer reads ahead (its jobs run long): it pops for a waiting
    # handler only
    time.sleep(0.5)  # what must not happen: a pop within this time
    assert storage.size_of("default") == 2
    data = prefetcher.take(5.0)
    assert data is not None and decode_job_message(data)[0] == first


def test_long_jobs_are_not_read_ahead(storage: LedgerRedisStorage, start_prefetcher) -> None:
    # the recent jobs of this process ran long
    prefetcher = start_prefetcher(PrefetchConfig(depth=1), recent_runs=(30.0, 30.0, 30.0))
    _submit()
    time.sleep(0.5)  # what must not happen: a pop within this time
    assert storage.size_of("default") == 1  # still there for an idle worker elsewhere
    assert prefetcher.take(5.0) is not None  # a waiting handler still gets it


def test_stopping_gives_back_what_no_handler_took(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    job_id = _submit()
    prefetcher = start_prefetcher(PrefetchConfig(depth=1))
    wait_for(lambda: storage.size_of("default") == 0, 5, "the prefetch thread to pop the job")
    prefetcher.stop()
    [message] = storage.window("default")
    assert decode_job_message(message)[:2] == (job_id, 1)


def test_a_worker_stopped_with_a_read_ahead_job_hands_it_on_at_once(
    processes: Processes,
) -> None:
    """SIGTERM while one handler runs and the next job is held: the held job goes back to
    Redis and another worker runs it without waiting for the reconciler (no maintainer
    runs here)."""
    busy = api.submit_job("test.record", {"seconds": 1.0, "tag": "busy"})
    first = processes.worker("--concurrency", "1")
    wait_for(lambda: api.get_job(busy)["status"] == "running", 30, "the first job to start")
    held = api.submit_job("test.record", {"tag": "held"})
    storage = make_huey(get_settings(), ["default"]).storage
    assert isinstance(storage, LedgerRedisStorage)
    wait_for(lambda: storage.size_of("default") == 0, 10, "the worker to read the next job ahead")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert api.get_job(busy)["status"] == "completed"  # graceful: the running job finished
    assert api.get_job(held)["status"] == "dispatched"
    assert storage.size_of("default") == 1  # given back
    processes.worker("--concurrency", "1")
    wait_for(lambda: api.get_job(held)["status"] == "completed", 30, "the held job to run")
