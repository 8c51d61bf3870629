"""Prefetch against real PostgreSQL and Redis: while every handler is busy, a thread worker's
next attempt is popped and its lease read ahead, handed over fresh, read again when old,
never read ahead for long jobs or from under an idle handler, and given back to Redis in
its place when nobody takes it."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator

import pytest

from db.engine import create_ledger_engine
from db.settings import get_settings
from tasks import api
from tasks.transport.broker import LedgerRedisStorage, decode_job_message, make_huey
from tasks.worker.prefetch import PrefetchConfig, Prefetcher
from tasks.worker.runtime import LeaseReads, WorkerRuntime
from tests.processes import Processes, wait_for


@pytest.fixture
def start_prefetcher(storage: LedgerRedisStorage) -> Iterator[object]:
    started: list[Prefetcher] = []

    def start(config: PrefetchConfig, recent_runs: tuple[float, ...] = (0.01,) * 10) -> Prefetcher:
        """A prefetcher whose process recently ran ``recent_runs`` (10 ms jobs by default,
        which it reads ahead for)."""
        held = LeaseReads(api.engine())
        prefetcher = Prefetcher(
            storage.pop,
            storage.pop_ready,
            storage.give_back,
            held.leased_many,
            config,
            release=storage.release,
        )
        for seconds in recent_runs:
            prefetcher.ran(seconds)
        prefetcher.start()
        started.append(prefetcher)
        return prefetcher

    yield start
    for prefetcher in started:
        prefetcher.stop()


#: a lease read stays usable this long in tests about the hand-over, not about freshness
FRESH_ENOUGH = 5.0


def _submit(priority: int = 0) -> uuid.UUID:
    """A job sent to Redis by its producer (direct dispatch: the queue is idle)."""
    job_id = api.submit_job("demo.echo", {"p": priority}, priority)
    assert api.get_job(job_id)["status"] == "dispatched"
    return job_id


def _read_ahead(start_prefetcher, config: PrefetchConfig) -> tuple[uuid.UUID, Prefetcher]:
    """A job in Redis, and a prefetcher that has read it ahead."""
    job_id = _submit()
    prefetcher = start_prefetcher(config)
    wait_for(lambda: prefetcher.ready_count == 1, 5, "the job to be read ahead")
    return job_id, prefetcher


def test_a_handler_takes_the_read_ahead_attempt_from_memory(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    # fresh for 5 s: this test is about the hand-over; freshness has its own test below (the
    # default 50 ms is the poll interval of ``wait_for``, so a loaded machine failed it)
    config = PrefetchConfig(depth=1, fresh_seconds=FRESH_ENOUGH)
    job_id, prefetcher = _read_ahead(start_prefetcher, config)
    data = prefetcher.take(1.0)
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
    job_id, prefetcher = _read_ahead(start_prefetcher, PrefetchConfig(fresh_seconds=0.0))
    # lands after the prefetched read: the worker holds the delivery, so the truthful
    # answer is a request, not "cancelled"
    assert api.cancel_job(job_id) == "cancel_requested"
    data = prefetcher.take(1.0)
    assert data is not None
    # the prefetched read is too old to trust: the handler reads the lease again and sees
    # the request, so it ends the job cancelled without running it
    assert prefetcher.leased(job_id, 1) is None
    again = LeaseReads(api.engine()).leased(job_id, 1)
    assert again is not None and again.cancel_requested


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
    # after a give-back it no longer reads ahead (its jobs run long); a handler pops for
    # itself: the prefetcher looks again (twice) and leaves both messages where they are
    checked = prefetcher.idle_checks
    wait_for(lambda: prefetcher.idle_checks >= checked + 2, 5, "the prefetcher to look again")
    assert storage.size_of("default") == 2
    data = prefetcher.take(1.0)
    assert data is not None and decode_job_message(data)[0] == first
    assert prefetcher.leased(first, 1) is None  # not read ahead: the handler reads it


def test_long_jobs_are_not_read_ahead(storage: LedgerRedisStorage, start_prefetcher) -> None:
    # the recent jobs of this process ran long
    prefetcher = start_prefetcher(PrefetchConfig(depth=1), recent_runs=(30.0,) * 3)
    checked = prefetcher.idle_checks
    _submit()
    # it looked (twice, so at least once with the message there) and did not read ahead
    wait_for(lambda: prefetcher.idle_checks >= checked + 2, 5, "the prefetcher to look")
    assert storage.size_of("default") == 1  # still there for an idle worker elsewhere
    assert prefetcher.take(1.0) is not None  # a handler still gets it, popping for itself


def test_stopping_gives_back_what_no_handler_took(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    job_id, prefetcher = _read_ahead(start_prefetcher, PrefetchConfig(depth=1))
    prefetcher.stop()
    [message] = storage.window("default")
    assert decode_job_message(message)[:2] == (job_id, 1)


def test_a_worker_stopped_with_a_read_ahead_job_hands_it_on_at_once(
    processes: Processes,
) -> None:
    """SIGTERM while one handler runs and the next job is held: the held job goes back to
    Redis, where the next worker takes it."""
    first = processes.worker("--concurrency", "1")
    warm_up = [api.submit_job("test.record", {"seconds": 0.01}) for _ in range(5)]
    for job_id in warm_up:  # short jobs: the worker now reads ahead
        wait_for(lambda j=job_id: api.get_job(j)["status"] == "completed", 30, "the warm-up")
    processes.maintainer()  # dispatches the bulk submit below in one push
    busy, held = api.submit_jobs(
        [
            {"type": "test.record", "data": {"seconds": 1.0, "tag": "busy"}, "priority": 9},
            {"type": "test.record", "data": {"tag": "held"}, "priority": 1},
        ]
    )
    storage = make_huey(get_settings(), ["default"]).storage
    assert isinstance(storage, LedgerRedisStorage)
    wait_for(lambda: api.get_job(busy)["status"] == "running", 30, "the first job to start")
    wait_for(lambda: storage.size_of("default") == 0, 10, "the worker to read the next job ahead")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert api.get_job(busy)["status"] == "completed"  # graceful: the running job finished
    assert api.get_job(held)["status"] == "dispatched"
    assert storage.size_of("default") == 1  # given back
    processes.worker("--concurrency", "1")
    wait_for(lambda: api.get_job(held)["status"] == "completed", 30, "the held job to run")


def test_an_idle_handler_pops_for_itself_and_nothing_is_read_ahead_of_it(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    prefetcher = start_prefetcher(PrefetchConfig(depth=1))
    # Redis is empty: the one read-ahead finds nothing, and no other is tried until a job
    # starts (no polling)
    wait_for(lambda: prefetcher._taken_at_miss == 0, 5, "the first read-ahead to find nothing")
    got: dict[str, object] = {}

    def handler() -> None:
        data = prefetcher.take(3.0)  # the Redis client's socket timeout is 5 s
        got["data"] = data
        got["claimed"] = None if data is None else prefetcher.leased(*decode_job_message(data)[:2])

    thread = threading.Thread(target=handler)
    thread.start()
    wait_for(lambda: prefetcher._popping == 1, 5, "the handler to wait in its own pop")
    job_id = _submit()
    thread.join(10)
    assert got["data"] is not None and decode_job_message(got["data"])[0] == job_id
    assert got["claimed"] is None  # it popped the message itself and reads its own lease
    assert prefetcher.given_back == 0


def test_a_batch_is_popped_best_first_and_its_leases_read_on_a_held_connection(
    storage: LedgerRedisStorage,
) -> None:
    low, high, cancelled = _submit(priority=1), _submit(priority=9), _submit(priority=5)
    assert api.cancel_job(cancelled) == "cancelled"
    entries = storage.pop_ready(5)
    messages = [decode_job_message(e.data)[:2] for e in entries]
    # the cancel blocked the cancelled job's delivery: the pop drops its message
    assert messages == [(high, 1), (low, 1)]
    assert storage.size_of("default") == 0
    assert storage.pop_ready(5) == []  # empty: no wait
    claims = LeaseReads(api.engine()).leased_many([*messages, (cancelled, 1)])
    assert set(claims) == {(high, 1), (low, 1)}  # a cancelled job has nothing to run
    assert claims[(high, 1)].type == "demo.echo"
    assert LeaseReads(api.engine()).leased_many([(low, 2)]) == {}  # a stale lease


#: jobs this short are not read ahead by the prefetch thread, but popped in batches
NO_OP_RUNS = (0.0005,) * 10


def test_a_handler_with_nothing_ready_pops_a_batch_and_leaves_the_rest_ready(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    ids = [_submit() for _ in range(3)]
    prefetcher = start_prefetcher(PrefetchConfig(depth=1, max_batch=4), recent_runs=NO_OP_RUNS)
    data = prefetcher.take(1.0)
    assert data is not None and decode_job_message(data)[0] == ids[0]
    assert prefetcher.ready_count == 2 and storage.queue_size() == 0
    # every delivery is marked taken by the pop that took it: no copy can start elsewhere
    assert storage.delivered([(i, 1) for i in ids]) == {(i, 1) for i in ids}
    # not read with the batch: each handler reads its own lease right before it starts
    assert prefetcher.leased(ids[0], 1) is None
    rest = [prefetcher.take(1.0) for _ in range(2)]
    assert [decode_job_message(d)[0] for d in rest if d is not None] == ids[1:]
    assert prefetcher.leased(ids[1], 1) is None and prefetcher.leased(ids[2], 1) is None
    assert prefetcher.ready_count == 0


def test_the_prefetch_thread_reads_the_leases_a_batch_left_for_jobs_of_a_few_ms(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    # 5 ms jobs: long enough to read leases beside them, short enough to pop in batches
    config = PrefetchConfig(depth=1, max_batch=4, handlers=4, fresh_seconds=FRESH_ENOUGH)
    prefetcher = start_prefetcher(config, recent_runs=(0.005,) * 10)
    # Redis is empty: its read-ahead finds nothing and waits for a job to start
    wait_for(lambda: prefetcher._taken_at_miss == 0, 5, "the first read-ahead to find nothing")
    first, second, cancelled, third = _submit(), _submit(), _submit(), _submit()
    assert api.cancel_job(cancelled) == "cancelled"  # blocked: its delivery mark is taken
    storage.conn.delete(f"{storage.mark_prefix}{cancelled}")  # as if the mark had expired
    data = prefetcher.take(1.0)  # a batch of 4: the handler keeps the first
    assert data is not None and decode_job_message(data)[0] == first

    def read() -> bool:
        with prefetcher._cond:
            return not prefetcher._unread and prefetcher.ready_count == 2

    wait_for(read, 5, "the prefetch thread to read the batch's leases")
    # the ledger refused the cancelled job's delivery: dropped, its mark released
    assert storage.delivered([(cancelled, 1)]) == set()
    for job_id in (second, third):
        data = prefetcher.take(1.0)
        assert data is not None and decode_job_message(data)[0] == job_id
        claimed = prefetcher.leased(job_id, 1)  # read ahead: the handler reads nothing
        assert claimed is not None and claimed.id == job_id


def test_a_busy_process_keeps_a_batch_of_short_jobs_read_ahead(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    """2.5 ms jobs on 4 handlers: the prefetch thread keeps what they run in 10 ms (16
    attempts) popped and read, and refills once half are taken, so no handler pops a batch
    and reads its own lease (5 % of 2 ms jobs did: 2.9 ms of a slot each)."""
    ids = [_submit() for _ in range(24)]
    config = PrefetchConfig(depth=1, handlers=4, max_batch=32, fresh_seconds=FRESH_ENOUGH)
    assert config.ahead(0.0025) == 16 and config.ahead(0.5) == 1  # long jobs: ``depth``
    prefetcher = start_prefetcher(config, recent_runs=(0.0025,) * 10)
    wait_for(lambda: prefetcher.ready_count == 16, 5, "16 attempts read ahead")
    assert storage.queue_size() == 8  # the rest stay in Redis for any worker
    for job_id in ids[:8]:  # taken in order, each with its lease read: none pops
        data = prefetcher.take(1.0)
        assert data is not None and decode_job_message(data)[0] == job_id
        claimed = prefetcher.leased(job_id, 1)
        assert claimed is not None and claimed.id == job_id
    # half taken: refilled with the 8 left in Redis
    wait_for(lambda: prefetcher.ready_count == 16, 5, "the read-ahead refilled")
    assert storage.queue_size() == 0


def test_the_batch_size_follows_the_recent_run_time() -> None:
    config = PrefetchConfig(handlers=4, batch_seconds=0.01, max_batch=32, short_seconds=0.1)
    assert config.batch_size(None) == 1  # nothing has run yet: one message
    assert config.batch_size(0.0001) == 32  # no-op jobs: the most
    assert config.batch_size(0.002) == 20  # what 4 handlers run in 10 ms
    assert config.batch_size(0.02) == 2
    assert config.batch_size(0.05) == 1
    assert config.batch_size(0.5) == 1  # long jobs: every handler pops for itself
    assert PrefetchConfig(max_batch=1).batch_size(0.0001) == 1  # batches off


def test_a_batch_found_empty_goes_straight_to_the_blocking_wait(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    prefetcher = start_prefetcher(PrefetchConfig(depth=1, max_batch=4), recent_runs=NO_OP_RUNS)
    calls: list[bool] = []
    pop = prefetcher.pop_waiting
    prefetcher.pop_waiting = lambda timeout, ready_first: (
        calls.append(ready_first) or pop(timeout, ready_first)
    )
    assert prefetcher.take(0.2) is None
    assert calls == [False]  # no second pop without waiting after the empty batch


def test_a_refused_delivery_has_its_mark_released_by_the_handler(
    storage: LedgerRedisStorage, start_prefetcher
) -> None:
    cancelled, live = _submit(), _submit()
    assert api.cancel_job(cancelled) == "cancelled"  # blocked: its delivery mark is taken
    storage.conn.delete(f"{storage.mark_prefix}{cancelled}")  # as if the mark had expired
    prefetcher = start_prefetcher(PrefetchConfig(depth=1, max_batch=4), recent_runs=NO_OP_RUNS)
    runtime = WorkerRuntime(get_settings(), api.engine(), uuid.uuid4())
    runtime.storage, runtime.reads_leases = storage, True
    runtime.held, runtime.prefetcher = LeaseReads(api.engine()), prefetcher
    data = prefetcher.take(1.0)
    assert data is not None and decode_job_message(data)[:2] == (cancelled, 1)
    assert prefetcher.ready_count == 1  # the live job, left for the next handler
    runtime.run(str(cancelled), 1)  # reads the lease: nothing to run
    # the ledger refused the cancelled job's delivery: no worker holds it, so the reconciler
    # must not find a mark and count a worker's death
    assert storage.delivered([(cancelled, 1)]) == set()
    assert storage.delivered([(live, 1)]) == {(live, 1)}
    assert api.get_job(cancelled)["status"] == "cancelled"


def test_a_handler_thread_opens_its_lease_connection_before_its_first_job(
    storage: LedgerRedisStorage,
) -> None:
    """``LeaseReads.warm`` (a thread worker's startup hook): the thread's connection is open
    and its lease read prepared, so its first job waits for neither (they were 5 of the 15
    slowest starts of a 1,000-job latency run, all in its first 100 ms)."""
    reads = LeaseReads(api.engine())
    reads.warm()
    prepared = reads.connections.run(
        lambda conn: conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    )
    assert any("queue_jobs" in statement for (statement,) in prepared)


def test_warming_up_with_the_ledger_down_is_left_to_the_first_lease_read() -> None:
    down = create_ledger_engine("postgresql+psycopg://root@127.0.0.1:1/nothing_listens_here")
    LeaseReads(down).warm()  # no error: the first job's read retries as before
