"""The fetch thread of a process worker against real PostgreSQL and Redis: it pops for idle
job processes, reads leases in one SELECT, and a job process that becomes idle is served at
once even right after the queues were found empty (the pause between read-aheads does not
delay it)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from db.settings import get_settings
from tasks import api
from tasks.transport.broker import LedgerRedisStorage
from tasks.worker.attempt_fetcher import AttemptFetcher, FetchConfig
from tasks.worker.runtime import HeldConnections, WorkerRuntime
from tests.processes import wait_for


@pytest.fixture
def fetcher(storage: LedgerRedisStorage) -> Iterator[AttemptFetcher]:
    engine = api.engine()
    runtime = WorkerRuntime(get_settings(), engine, uuid.uuid4())
    runtime.storage, runtime.reads_leases = storage, True
    runtime.held = HeldConnections(engine)
    wake_r, wake_w = socket.socketpair()
    # a long pause after an empty read-ahead: a test that waited it out would time out
    fetch = AttemptFetcher(runtime, storage, 1, wake_w, FetchConfig(miss_pause_seconds=60))
    fetch.start()
    yield fetch
    fetch.stop()
    wake_r.close()
    wake_w.close()


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
