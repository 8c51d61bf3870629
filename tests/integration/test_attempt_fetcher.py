"""The fetch thread of a process worker against real PostgreSQL and Redis: it pops for idle
job processes, reads leases in one SELECT, and a job process that becomes idle is served at
once even right after the queues were found empty (the pause between read-aheads does not
delay it)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from db.settings import get_settings
from tasks import api
from tasks.transport.broker import LedgerRedisStorage
from tasks.worker.attempt_fetcher import AttemptFetcher, FetchConfig
from tasks.worker.runtime import LeaseReads, WorkerRuntime
from tests.processes import wait_for


@contextmanager
def started_fetcher(
    storage: LedgerRedisStorage, config: FetchConfig, mean_run: float = 0.0
) -> Iterator[AttemptFetcher]:
    engine = api.engine()
    runtime = WorkerRuntime(get_settings(), engine, uuid.uuid4())
    runtime.storage, runtime.reads_leases = storage, True
    runtime.held = LeaseReads(engine)
    wake_r, wake_w = socket.socketpair()
    fetch = AttemptFetcher(runtime, storage, 1, wake_w, config)
    fetch.update(idle=0, free=0, mean_run=mean_run)  # the main loop's first view
    fetch.start()
    try:
        yield fetch
    finally:
        fetch.stop()
        wake_r.close()
        wake_w.close()


@pytest.fixture
def fetcher(storage: LedgerRedisStorage) -> Iterator[AttemptFetcher]:
    # a long pause after an empty read-ahead: a test that waited it out would time out
    with started_fetcher(storage, FetchConfig(miss_pause_seconds=60)) as fetch:
        yield fetch


def _submit() -> uuid.UUID:
    job_id = api.submit_job("demo.echo", {})
    assert api.get_job(job_id)["status"] == "dispatched"  # sent to Redis by its producer
    return job_id


def test_an_idle_job_process_gets_the_next_job_with_its_lease_read(
    fetcher: AttemptFetcher,
) -> None:
    job_id = _submit()
    fetcher.update(idle=1, free=1, mean_run=0.0)
    wait_for(lambda: len(fetcher.ready) == 1, 10, "the job to be fetched")
    [ready] = fetcher.take(1)
    assert (ready.claimed.id, ready.claimed.lease, ready.claimed.type) == (job_id, 1, "demo.echo")


def test_a_process_that_becomes_idle_is_served_at_once_after_a_miss(
    fetcher: AttemptFetcher, storage: LedgerRedisStorage
) -> None:
    fetcher.update(idle=0, free=0, mean_run=0.001)  # busy, short jobs: it reads ahead
    wait_for(lambda: fetcher._missed_at > 0, 10, "a read-ahead to find the queues empty")
    job_id = _submit()  # arrives during the pause after the miss
    fetcher.update(idle=1, free=1, mean_run=0.001)  # the job process finished its job
    wait_for(lambda: len(fetcher.ready) == 1, 10, "the new job, without waiting the pause out")
    assert fetcher.take(1)[0].claimed.id == job_id


def test_short_jobs_are_read_ahead_by_about_ten_ms_of_work_and_refilled_in_batches(
    storage: LedgerRedisStorage,
) -> None:
    """With every job process busy on 1 ms jobs the fetch thread holds about 10 ms of work
    per job process (10 attempts here; a deeper read-ahead would delay a higher-priority job
    that arrives later, and age the lease reads), pops them in one batch, leaves the rest
    in Redis, and refills once half are used."""
    ids = [_submit() for _ in range(40)]
    with started_fetcher(storage, FetchConfig(), mean_run=0.001) as fetcher:
        _read_ahead(fetcher, storage, ids)


def _read_ahead(fetcher: AttemptFetcher, storage: LedgerRedisStorage, ids: list[uuid.UUID]) -> None:
    wait_for(lambda: len(fetcher.ready) == 10, 10, "ten attempts read ahead")
    assert storage.size_of("default") == 30  # exactly what it wanted was popped
    assert [r.claimed.id for r in fetcher.take(6)] == ids[:6]  # in the order sent
    wait_for(lambda: len(fetcher.ready) == 10, 10, "the read-ahead refilled")
    assert storage.size_of("default") == 24
    # 50 ms jobs: two per job process, the least it holds ahead
    fetcher.update(idle=0, free=0, mean_run=0.05)
    assert fetcher._ahead() == 2
    fetcher.update(idle=0, free=0, mean_run=0.00001)  # no-op jobs: at most 16 per process
    assert fetcher._ahead() == 16
