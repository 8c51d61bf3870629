"""Fair share (``@job(partition_by=...)``): partitions are taken round-robin, limits hold per
partition, and bad partitions are refused. The dispatcher's passes are run by hand on each
ledger (PostgreSQL and SQLite, SQLite transport); tests/acceptance/test_fair_share.py runs
real worker processes."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from db.engine import engine_for, transaction
from db.ledger import attempts
from db.models import Job
from db.settings import get_settings
from queuectl import cli
from tasks import api, registry
from tasks.errors import InvalidArgument, QueueError
from tasks.maintenance.dispatcher import Dispatcher, DispatcherConfig
from tasks.transport.broker import QueueStorage, decode_job_message, make_huey, storage_of

jobs = Job.__table__


@pytest.fixture
def fair(use_ledger: str, monkeypatch: pytest.MonkeyPatch) -> Dispatcher:
    """A dispatcher (fair window 20) over the ledger, with the test job types loaded."""
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    storage = storage_of(make_huey(get_settings(), ["default"]))
    return Dispatcher(engine_for(use_ledger), storage, DispatcherConfig(window=200, fair_window=20))


def popped(storage: QueueStorage) -> list[uuid.UUID]:
    """Every message waiting, in the order workers would get them (emptied)."""
    out = []
    while (message := storage.dequeue()) is not None:
        out.append(decode_job_message(message)[0])
    return out


def partition_of(ids: list[uuid.UUID]) -> list[str]:
    with transaction(engine_for(get_settings().ledger_url)) as conn:
        rows = {i: p for i, p in conn.execute(select(jobs.c.id, jobs.c.partition_key))}
    return [rows[i] for i in ids]


def school_jobs(school: str, n: int, **extra: Any) -> list[uuid.UUID]:
    items = [{"type": "test.school", "data": {"school": school, "tag": str(i)}} for i in range(n)]
    return api.submit_jobs([{**item, **extra} for item in items])


def test_a_small_school_is_not_queued_behind_a_big_one(fair: Dispatcher) -> None:
    school_jobs("A", 100)
    school_jobs("B", 7)
    school_jobs("C", 5)
    assert fair.run_once() == 20  # the fair window, not the 200 of the queue's window
    order = partition_of(popped(fair.storage))
    # one job per school per round, the schools in turn; C runs out after 5 rounds
    assert order[:15] == ["A", "B", "C"] * 5
    assert Counter(order) == {"A": 8, "B": 7, "C": 5}
    assert fair.run_once() == 20  # the rest of A
    assert set(partition_of(popped(fair.storage))) == {"A"}


def test_the_rounds_go_on_from_where_the_last_pass_stopped(fair: Dispatcher) -> None:
    for school in "ABCDEFGHIJKLMNOPQRSTUVWXY":  # 25 schools, 3 jobs each, window 20
        school_jobs(school, 3)
    assert fair.run_once() == 20
    first = partition_of(popped(fair.storage))
    assert first == list("ABCDEFGHIJKLMNOPQRST")
    assert fair.run_once() == 20
    second = partition_of(popped(fair.storage))
    # the next round starts at U, then wraps round to A
    assert second == list("UVWXY") + list("ABCDEFGHIJKLMNO")


def test_priority_comes_before_the_rounds(fair: Dispatcher) -> None:
    school_jobs("A", 10)
    urgent = api.submit_job("test.school", {"school": "B"}, priority=9)
    fair.run_once()
    assert popped(fair.storage)[0] == urgent


def test_concurrency_holds_per_partition(fair: Dispatcher) -> None:
    items = [
        {"type": "test.school_one", "data": {"school": school}}
        for school in ("north", "south", "east")
        for _ in range(3)
    ]
    api.submit_jobs(items)
    fair.run_once()
    first = popped(fair.storage)
    assert sorted(partition_of(first)) == ["east", "north", "south"]  # one each, side by side
    assert fair.run_once() == 0  # each school has its one job dispatched
    north = next(i for i, p in zip(first, partition_of(first), strict=True) if p == "north")
    with transaction(engine_for(get_settings().ledger_url)) as conn:
        lease = conn.execute(select(jobs.c.lease).where(jobs.c.id == north)).scalar_one()
        attempts.complete(conn, north, lease, None)
    fair.run_once()
    assert partition_of(popped(fair.storage)) == ["north"]  # the freed slot, and only it


def test_a_rate_limit_holds_per_partition(fair: Dispatcher) -> None:
    api.submit_jobs(
        [
            {"type": "test.school_rated", "data": {"school": school}}
            for school in ("north", "south", "east")
            for _ in range(3)
        ]
    )
    fair.run_once()
    assert Counter(partition_of(popped(fair.storage))) == {"north": 2, "south": 2, "east": 2}
    assert fair.run_once() == 0  # each school used its 2 starts of the minute


def test_jobs_of_other_types_share_the_fair_window(fair: Dispatcher) -> None:
    school_jobs("A", 30)
    plain = api.submit_jobs([{"type": "test.record", "data": {}} for _ in range(30)])
    assert fair.run_once() == 20  # a queue holding partitioned jobs keeps the fair window
    sent = popped(fair.storage)
    assert 0 < len(set(sent) & set(plain)) < 20
    while fair.run_once():
        popped(fair.storage)
    with transaction(engine_for(get_settings().ledger_url)) as conn:
        statuses = set(conn.execute(select(jobs.c.status)).scalars())
    assert statuses == {"dispatched"}  # nothing left behind, of either type


def test_a_partitioned_backlog_is_not_walked_for_other_jobs_every_pass(use_ledger: str) -> None:
    """Looking for a queue's unpartitioned jobs walks its partitioned ones in dispatch order:
    once none was found, the next passes skip the look for the dispatcher's interval, unless a
    wake-up names the queue (a new job there)."""
    storage = storage_of(make_huey(get_settings(), ["default"]))
    config = DispatcherConfig(window=200, fair_window=20, interval=60.0)
    dispatcher = Dispatcher(engine_for(use_ledger), storage, config)
    registry.load_job_modules(["tests.jobs_for_tests"])
    school_jobs("A", 100)
    assert dispatcher.run_once() == 20  # looked, found no other job: all 20 for school A
    popped(storage)
    plain = api.submit_job("test.record", {})
    for _ in range(2):  # not looked for
        dispatcher.run_once()
        assert plain not in popped(storage)
    dispatcher.run_once(woken_for={"default"})  # the wake-up of its insert
    assert plain in popped(storage)


def test_a_queue_without_partitioned_jobs_keeps_its_whole_window(fair: Dispatcher) -> None:
    api.submit_jobs([{"type": "test.record", "data": {}} for _ in range(50)])
    assert fair.run_once() == 50


def test_a_job_queued_before_its_type_was_partitioned_still_runs(fair: Dispatcher) -> None:
    legacy = api.submit_job("test.school", {"school": "A"})
    with transaction(engine_for(get_settings().ledger_url)) as conn:
        conn.execute(update(jobs).where(jobs.c.id == legacy).values(partition_key=None))
    assert fair.run_once() == 1
    assert popped(fair.storage) == [legacy]


def test_the_partition_comes_from_the_data_or_the_submit(fair: Dispatcher) -> None:
    from_data = api.submit_job("test.school", {"school": 42})
    given = api.submit_job("test.school", {"school": "A"}, partition="course-7")
    bulk = api.submit_jobs([{"type": "test.school", "data": {"school": "x"}, "partition": 3}])[0]
    scheduled = api.schedule_job("test.school", {"school": "later"}, 3600)
    assert partition_of([from_data, given, bulk, scheduled]) == ["42", "course-7", "3", "later"]
    assert api.get_job(given)["partition_key"] == "course-7"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "test.school", "data": {"tag": "no school"}}, "school"),  # by its schema
        ({"type": "demo.echo", "data": {}, "partition": "A"}, "not partitioned"),
        ({"type": "test.record", "data": {}, "partition": "A"}, "not partitioned"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": ""}, "printable"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": "   "}, "printable"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": "a\nb"}, "printable"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": "x" * 201}, "1-200"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": True}, "string or"),
        ({"type": "test.school", "data": {"school": "A"}, "partition": ["A"]}, "string or"),
    ],
)
def test_a_bad_partition_is_refused_and_writes_nothing(
    fair: Dispatcher, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueueError, match=message):
        api.submit_job(**kwargs)
    with pytest.raises(QueueError, match=message):
        api.submit_jobs([{"type": "test.record", "data": {}}, kwargs])
    with transaction(engine_for(get_settings().ledger_url)) as conn:
        assert conn.execute(select(jobs.c.id)).first() is None


def test_a_partition_field_missing_from_data_without_a_schema_is_named() -> None:
    job_type = registry.JobType(name="t", func=lambda data, ctx: None, partition_by="school")
    with pytest.raises(InvalidArgument, match="partitioned by data field 'school'"):
        job_type.partition_of({"class": "7b"})
    assert job_type.partition_of({"school": 7}) == "7"
    assert job_type.partition_of({}, "given") == "given"


def test_partition_by_must_name_a_field() -> None:
    with pytest.raises(InvalidArgument, match="partition_by"):
        registry.job("test.bad_partition", partition_by="school id")(lambda data, ctx: None)


def test_the_command_line_submits_to_a_partition_and_refuses_a_bad_one(fair: Dispatcher) -> None:
    runner = CliRunner()
    done = runner.invoke(
        cli.app, ["submit", "test.school", "--data", '{"school": "A"}', "--partition", "B"]
    )
    assert done.exit_code == 0, done.output
    assert partition_of([uuid.UUID(done.stdout.strip())]) == ["B"]
    refused = runner.invoke(cli.app, ["submit", "demo.echo", "--partition", "B"])
    assert refused.exit_code == 2 and "not partitioned" in refused.stderr
