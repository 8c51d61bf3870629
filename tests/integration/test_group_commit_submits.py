"""Group-committed single submits against real PostgreSQL and Redis: the batch statements
write what one-row inserts write, decide direct dispatch per queue as one-row inserts do,
and concurrent ``submit_job`` calls lose nothing and send every dispatched job once."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import Any

import pytest

from db.engine import driver_write, write
from db.ledger import producer
from db.queries import get_job
from db.settings import get_settings
from tasks import api, registry
from tasks.transport.broker import QueueStorage, decode_job_message, make_huey, storage_of

COMPARED = ("type", "queue", "priority", "data", "status", "attempt", "lease", "max_attempts")


@pytest.fixture
def storage(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> QueueStorage:
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    monkeypatch.setenv("QUEUE_QUEUES", "busy,side")  # queues of no job type
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    return storage_of(make_huey(get_settings(), ["default", "reports", "busy"]))


def _job(job_id: uuid.UUID) -> dict[str, Any]:
    with write(api.engine()) as conn:
        row = get_job(conn, job_id)
    assert row is not None, f"job {job_id} is not in the ledger"
    return row


def _count() -> int:
    with write(api.engine()) as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM queue_jobs").scalar_one()


def _new(i: int, queue: str = "default") -> producer.NewJob:
    return api.build_job("demo.echo", {"i": i, "text": 'tab\t"quote" ünï'}, i % 5, queue=queue)


def test_a_batch_insert_writes_the_rows_a_single_insert_writes(storage: QueueStorage) -> None:
    engine = api.engine()
    single, batch = _new(1), [_new(2), _new(3), _new(4)]
    with driver_write(engine) as conn:
        assert producer.insert_batch_dbapi(conn, engine.dialect, [single]) == {}
        assert producer.insert_batch_dbapi(conn, engine.dialect, batch) == {}
    want = _job(single.id)
    assert want["status"] == "queued" and want["errors"] == []
    for new in batch:
        row = _job(new.id)
        assert {k: row[k] for k in COMPARED} == {
            **{k: want[k] for k in COMPARED},
            "priority": new.priority,
            "data": new.data,
        }
        assert row["errors"] == [] and row["dispatched_at"] is None
        assert row["scheduled_at"] == row["created_at"]  # due at once
        assert row["timeout_seconds"] == want["timeout_seconds"]


def test_a_batch_dispatches_per_queue_as_single_direct_inserts_do(storage: QueueStorage) -> None:
    engine = api.engine()
    waiting = producer.NewJob(type="demo.echo", queue="busy", priority=0, data={}, max_attempts=3)
    with write(engine) as conn:  # a backlog in "busy": its new jobs wait their turn
        producer.insert_jobs(conn, [waiting])
    with driver_write(engine) as conn:  # sent already: one job of "default", two of "side"
        for new in (_new(7), _new(8, "side"), _new(9, "side")):
            assert producer.insert_batch_dbapi(conn, engine.dialect, [new], 4) == {new.id: 1}
    api.pause_queue("reports", reason="test")
    idle = [_new(i) for i in range(5)]
    side = _new(12, "side")
    batch = [idle[0], _new(10, "busy"), idle[1], _new(11, "reports"), *idle[2:], side]
    with driver_write(engine) as conn:
        leases = producer.insert_batch_dbapi(conn, engine.dialect, batch, window=3)
    # "default" has room for two more in its window of 3 and "side" for one; the rest of
    # "default", and the jobs of the busy and the paused queue, wait in the ledger
    assert leases == {j.id: 1 for j in [*idle[:2], side]}
    assert [_job(j.id)["status"] for j in batch] == [
        "dispatched",
        "queued",
        "dispatched",
        "queued",
        "queued",
        "queued",
        "queued",
        "dispatched",
    ]
    sent = _job(idle[0].id)
    assert (sent["attempt"], sent["lease"]) == (1, 1) and sent["dispatched_at"] is not None
    later = _job(idle[2].id)
    assert (later["attempt"], later["lease"], later["dispatched_at"]) == (0, 0, None)

    with driver_write(engine) as conn:  # the same batch again (a retry after a lost reply)
        assert producer.insert_batch_dbapi(conn, engine.dialect, batch, window=3) == {}
        producer.insert_batch_dbapi(conn, engine.dialect, batch)
    assert _count() == len(batch) + 4


def test_a_retried_insert_of_one_job_writes_it_once(storage: QueueStorage) -> None:
    """A group commit of one job whose reply was lost is sent again: the second insert
    writes nothing and reports nothing sent, with or without direct dispatch."""
    engine = api.engine()
    plain, sent = _new(1, "busy"), _new(2, "side")
    with driver_write(engine) as conn:
        assert producer.insert_batch_dbapi(conn, engine.dialect, [plain]) == {}
        assert producer.insert_batch_dbapi(conn, engine.dialect, [sent], 3) == {sent.id: 1}
        assert producer.insert_batch_dbapi(conn, engine.dialect, [plain]) == {}
        assert producer.insert_batch_dbapi(conn, engine.dialect, [sent], 3) == {}
    assert _count() == 2
    assert (_job(plain.id)["status"], _job(sent.id)["status"]) == ("queued", "dispatched")


def test_a_batch_refuses_keys_and_sends_no_scheduled_job(storage: QueueStorage) -> None:
    engine = api.engine()
    keyed = api.build_job("demo.echo", {}, idempotency_key="k")
    later = api.build_job("demo.echo", {}, schedule=60)
    with driver_write(engine) as conn:
        with pytest.raises(ValueError, match="with keys or dependencies"):
            producer.insert_batch_dbapi(conn, engine.dialect, [_new(1), keyed])
        with pytest.raises(ValueError, match="only due jobs without keys"):
            producer.insert_batch_dbapi(conn, engine.dialect, [_new(2), later], window=3)
    assert _count() == 0  # a refused batch writes nothing


def test_scheduled_and_partitioned_submits_write_what_a_transaction_writes(
    storage: QueueStorage,
) -> None:
    """``schedule_job`` and partitioned jobs are group-committed too: the rows are those the
    insert in a transaction (``insert_jobs``) writes."""
    later = api.build_job("demo.echo", {"n": 1}, schedule=60)
    part = api.build_job("demo.echo", {"n": 2}, queue="side")
    part = dataclasses.replace(part, partition_key="school-7")
    engine = api.engine()
    with driver_write(engine) as conn:
        assert producer.insert_batch_dbapi(conn, engine.dialect, [later, part]) == {}
    twins = [dataclasses.replace(j, id=uuid.uuid4()) for j in (later, part)]
    with write(engine) as conn:
        producer.insert_jobs(conn, twins)
    keys = (*COMPARED, "partition_key", "timeout_seconds", "errors", "dispatched_at")
    for new, twin in zip((later, part), twins, strict=True):
        row, want = _job(new.id), _job(twin.id)
        assert {k: row[k] for k in keys} == {k: want[k] for k in keys}
    assert _job(later.id)["status"] == "scheduled"
    assert _job(later.id)["scheduled_at"] == later.scheduled_at
    assert _job(part.id)["partition_key"] == "school-7"


def _submit_from_threads(threads: int, per_thread: int, queues: int) -> list[uuid.UUID]:
    ids: list[list[uuid.UUID]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def produce(slot: int) -> None:
        start.wait()
        for n in range(per_thread):
            queue = ("default", "reports")[n % queues]
            ids[slot].append(api.submit_job("demo.echo", {"slot": slot, "n": n}, queue=queue))

    pool = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not any(t.is_alive() for t in pool)
    return [job_id for chunk in ids for job_id in chunk]


def test_concurrent_submits_are_written_together_and_none_is_lost(
    storage: QueueStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DIRECT_DISPATCH", "false")
    get_settings.cache_clear()
    group = api.plain_inserts()
    before = (group.batches, group.items)
    ids = _submit_from_threads(threads=12, per_thread=40, queues=1)
    assert len(set(ids)) == 480
    assert _count() == 480
    for job_id in ids[::37]:
        row = _job(job_id)
        assert row["status"] == "queued" and row["data"]["n"] < 40
    batches, items = group.batches - before[0], group.items - before[1]
    assert items == 480 and batches < items  # commits were shared


def test_concurrent_direct_submits_send_each_dispatched_job_once(storage: QueueStorage) -> None:
    group = api.direct_inserts()
    before = (group.batches, group.items)
    ids = _submit_from_threads(threads=12, per_thread=40, queues=2)  # window 200 per queue
    statuses = {job_id: _job(job_id)["status"] for job_id in ids}
    dispatched = {j for j, s in statuses.items() if s == "dispatched"}
    # a window of 200 per queue; a batch written at the same time as another does not see
    # the other's rows yet, so the window may be passed by at most that batch's jobs
    assert 400 <= len(dispatched) <= 400 + group.max_batch * (group.max_in_flight - 1)
    assert set(statuses.values()) == {"dispatched", "queued"}
    messages = [decode_job_message(m) for q in ("default", "reports") for m in storage.window(q)]
    assert sorted(m[0] for m in messages) == sorted(dispatched)  # each once, none for queued
    assert {m[1] for m in messages} == {1}
    assert group.items - before[1] == 480 and group.batches - before[0] < 480
