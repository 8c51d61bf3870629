"""Issue #15, bounds everywhere a value enters: schedule times lie in a window, deep or
overflowing input is a ``QueueError``, an idempotency key answers only for the same type and
data, and only declared queues take jobs. Each refusal writes nothing (SQLite and PostgreSQL,
API and ``queuectl``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.engine import engine_for, read, write
from db.ledger import producer
from db.models import Job, QueueControl
from db.settings import get_settings
from queuectl import cli
from tasks import api
from tasks.errors import (
    IdempotencyConflict,
    InvalidJobData,
    InvalidSchedule,
    QueueError,
    UnknownQueue,
)

PLUS_14 = timezone(timedelta(hours=14))
MINUS_14 = timezone(timedelta(hours=-14))
DEEP_LISTS = "[" * 100_000 + "]" * 100_000


def job_count(url: str) -> int:
    with read(engine_for(url)) as conn:
        return conn.execute(select(func.count()).select_from(Job)).scalar_one()


def control_count(url: str) -> int:
    with read(engine_for(url)) as conn:
        return conn.execute(select(func.count()).select_from(QueueControl)).scalar_one()


def declare(monkeypatch: pytest.MonkeyPatch, queues: str) -> None:
    monkeypatch.setenv("QUEUE_QUEUES", queues)
    get_settings.cache_clear()


def nested_lists(depth: int) -> list[Any]:
    top: list[Any] = []
    node = top
    for _ in range(depth - 1):
        node.append([])
        node = node[0]
    return top


# --- 1. schedule times lie in [now - 1 day, now + ten years] ---------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=PLUS_14),  # was a bare OverflowError
        datetime(9999, 12, 31, 23, 59, tzinfo=MINUS_14),  # was a bare OverflowError
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2099, 12, 31, tzinfo=UTC),
        timedelta.max,
        1e300,
        float("inf"),
    ],
)
def test_a_schedule_outside_the_window_is_refused_and_writes_nothing(
    use_ledger: str, schedule: Any
) -> None:
    with pytest.raises(InvalidSchedule, match="allowed window") as info:
        api.schedule_job("demo.echo", {}, schedule)
    assert "1 day" in str(info.value) and f"{api.SCHEDULE_MAX_AHEAD.days} days" in str(info.value)
    with pytest.raises(InvalidSchedule, match=r"item 1: .*allowed window"):
        api.submit_jobs(
            [
                {"type": "demo.echo", "data": {}},
                {"type": "demo.echo", "data": {}, "schedule": schedule},
            ]
        )
    assert job_count(use_ledger) == 0


@pytest.mark.parametrize("delay", [-1, -0.001, timedelta(seconds=-1), float("nan")])
def test_a_negative_delay_is_refused(use_ledger: str, delay: Any) -> None:
    with pytest.raises(InvalidSchedule, match="zero or more seconds"):
        api.schedule_job("demo.echo", {}, delay)
    assert job_count(use_ledger) == 0


def test_the_edges_of_the_window_are_accepted(use_ledger: str) -> None:
    now = datetime.now(UTC)
    early = api.schedule_job("demo.echo", {}, now - api.SCHEDULE_MAX_PAST + timedelta(minutes=1))
    late = api.schedule_job("demo.echo", {}, now + api.SCHEDULE_MAX_AHEAD - timedelta(minutes=1))
    longest = api.schedule_job("demo.echo", {}, api.SCHEDULE_MAX_AHEAD - timedelta(minutes=1))
    assert api.get_job(early)["status"] == "queued"
    assert api.get_job(late)["status"] == "scheduled"
    assert api.get_job(longest)["status"] == "scheduled"


def test_overflowing_filter_times_are_a_queue_error(use_ledger: str) -> None:
    for name in ("since", "until"):
        for value in (datetime.min.replace(tzinfo=PLUS_14), datetime.max.replace(tzinfo=MINUS_14)):
            with pytest.raises(InvalidSchedule, match=f"{name} is out of range"):
                api.get_jobs(**{name: value})


# --- 2. deep nesting ---------------------------------------------------------------------------


def test_deeply_nested_data_is_refused_by_its_depth(use_ledger: str) -> None:
    with pytest.raises(InvalidJobData, match="nested deeper than 32 levels"):
        api.submit_job("demo.echo", {"x": nested_lists(100_000)})
    with pytest.raises(InvalidJobData, match="item 0: data is nested deeper"):
        api.submit_jobs([{"type": "demo.echo", "data": {"x": nested_lists(100_000)}}])
    assert job_count(use_ledger) == 0


# --- 3. an idempotency key answers for its type and data only ---------------------------------


def test_the_same_key_type_and_data_returns_the_live_job(use_ledger: str) -> None:
    first = api.submit_job("demo.echo", {"a": 1, "b": [1, 2]}, idempotency_key="k")
    # key order does not matter, nor other options (priority, queue, schedule)
    assert api.submit_job("demo.echo", {"b": [1, 2], "a": 1}, 9, idempotency_key="k") == first
    assert api.schedule_job("demo.echo", {"a": 1, "b": (1, 2)}, 60, idempotency_key="k") == first
    assert api.submit_jobs(
        [{"type": "demo.echo", "data": {"a": 1, "b": [1, 2]}, "idempotency_key": "k"}]
    ) == [first]
    assert job_count(use_ledger) == 1


@pytest.mark.parametrize(
    ("submit", "message"),
    [
        (lambda: api.submit_job("demo.sleep", {"seconds": 1}, idempotency_key="k"), "type"),
        (lambda: api.submit_job("demo.echo", {"a": 2}, idempotency_key="k"), "data"),
        (lambda: api.schedule_job("demo.echo", {}, 60, idempotency_key="k"), "data"),
    ],
)
def test_the_same_key_with_another_type_or_data_is_a_conflict(
    use_ledger: str, submit: Callable[[], uuid.UUID], message: str
) -> None:
    first = api.submit_job("demo.echo", {"a": 1}, idempotency_key="k")
    with pytest.raises(IdempotencyConflict) as info:
        submit()
    text = str(info.value)
    assert str(first) in text and "demo.echo" in text and message in text
    assert isinstance(info.value, QueueError)
    assert job_count(use_ledger) == 1


def test_a_bulk_conflict_writes_nothing(use_ledger: str) -> None:
    first = api.submit_job("demo.echo", {"a": 1}, idempotency_key="k")
    items = [
        {"type": "demo.echo", "data": {"n": 1}},
        {"type": "demo.echo", "data": {"n": 2}, "idempotency_key": "fresh"},
        {"type": "demo.echo", "data": {"a": 2}, "idempotency_key": "k"},
    ]
    with pytest.raises(IdempotencyConflict, match=f"item 2: .*{first}.*demo.echo"):
        api.submit_jobs(items)
    assert job_count(use_ledger) == 1


def test_two_items_of_one_bulk_call_with_one_key(use_ledger: str) -> None:
    same = {"type": "demo.echo", "data": {"a": 1}, "idempotency_key": "twin"}
    a, b = api.submit_jobs([same, dict(same)])
    assert a == b and job_count(use_ledger) == 1
    other = {"type": "demo.echo", "data": {"a": 2}, "idempotency_key": "pair"}
    with pytest.raises(IdempotencyConflict, match="item 1: "):
        api.submit_jobs([{**other, "data": {"a": 1}}, other])
    assert job_count(use_ledger) == 1


def test_a_finished_job_frees_its_key_for_other_data(use_ledger: str) -> None:
    first = api.submit_job("demo.echo", {"a": 1}, idempotency_key="k")
    api.cancel_job(first)
    second = api.submit_job("demo.sleep", {"seconds": 1}, idempotency_key="k")
    assert second != first


def test_the_ledger_refuses_a_key_of_another_job(ledger_url: str) -> None:
    def new(**kw: Any) -> producer.NewJob:
        base = {"type": "demo.echo", "queue": "default", "priority": 5, "data": {}}
        return producer.NewJob(**{**base, "max_attempts": 1, **kw})

    with write(engine_for(ledger_url)) as conn:
        first = producer.insert_jobs(conn, [new(idempotency_key="k", data={"a": 1})])[0]
        assert producer.insert_jobs(conn, [new(idempotency_key="k", data={"a": 1})]) == [first]
        clash = new(idempotency_key="k", type="demo.sleep", data={"a": 1})
        with pytest.raises(producer.KeyConflict) as info:
            producer.insert_jobs(conn, [clash])
    assert (info.value.job_id, info.value.existing_id) == (clash.id, first)
    assert info.value.existing_type == "demo.echo"


def test_a_keyed_submit_on_postgres_with_direct_dispatch_checks_the_key(
    pg_redis: dict[str, str],
) -> None:
    first = api.submit_job("demo.echo", {"a": 1}, idempotency_key="k")
    assert api.submit_job("demo.echo", {"a": 1}, idempotency_key="k") == first
    with pytest.raises(IdempotencyConflict, match=str(first)):
        api.submit_job("demo.echo", {"a": 2}, idempotency_key="k")
    assert job_count(pg_redis["DATABASE_URL"]) == 1


def test_concurrent_submits_of_one_key_with_other_data(pg_redis: dict[str, str]) -> None:
    """Threads race on one key with two payloads: one job is written; every caller gets its
    id (same data) or a conflict naming it (other data)."""
    outcomes: list[tuple[int, Any]] = []
    start = threading.Barrier(8)

    def submit(n: int) -> None:
        start.wait()
        try:
            outcomes.append((n % 2, api.submit_job("demo.echo", {"v": n % 2}, idempotency_key="r")))
        except IdempotencyConflict as exc:
            outcomes.append((n % 2, exc))

    pool = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    [job] = api.get_jobs()
    winner = job["data"]["v"]
    for variant, outcome in outcomes:
        if variant == winner:
            assert outcome == job["id"]
        else:
            assert isinstance(outcome, IdempotencyConflict) and str(job["id"]) in str(outcome)
    assert len(outcomes) == 8


# --- 4. only declared queues take jobs --------------------------------------------------------


def test_the_default_queues_are_declared(use_ledger: str) -> None:
    assert {"default", "reports", "notifications", "system"} <= set(api.declared_queues())
    for queue in ("default", "reports", "notifications", "system"):
        assert api.get_job(api.submit_job("demo.echo", {}, queue=queue))["queue"] == queue


@pytest.mark.parametrize(
    "submit",
    [
        lambda: api.submit_job("demo.echo", {}, queue="nope"),
        lambda: api.schedule_job("demo.echo", {}, 60, queue="nope"),
        lambda: api.submit_jobs([{"type": "demo.echo", "data": {}, "queue": "nope"}]),
    ],
)
def test_an_undeclared_queue_is_refused_and_writes_nothing(
    use_ledger: str, submit: Callable[[], Any]
) -> None:
    with pytest.raises(UnknownQueue) as info:
        submit()
    text = str(info.value)
    assert "'nope' is not declared" in text
    assert "default, notifications, reports, system" in text and "QUEUE_QUEUES" in text
    assert job_count(use_ledger) == 0


def test_a_bulk_call_with_thousands_of_queues_writes_nothing(use_ledger: str) -> None:
    items = [{"type": "demo.echo", "data": {}, "queue": f"q{i}"} for i in range(5000)]
    with pytest.raises(UnknownQueue, match="item 0: queue 'q0' is not declared"):
        api.submit_jobs(items)
    assert job_count(use_ledger) == 0


def test_queue_queues_declares_more_queues(
    use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare(monkeypatch, " urgent , batch_2 ,")
    assert {"urgent", "batch_2", "default"} <= set(api.declared_queues())
    job_id = api.submit_job("demo.echo", {}, queue="urgent")
    assert api.get_job(job_id)["queue"] == "urgent"
    assert api.submit_jobs([{"type": "demo.echo", "data": {}, "queue": "batch_2"}])
    with pytest.raises(UnknownQueue, match="batch_2, default"):
        api.submit_job("demo.echo", {}, queue="other")


def test_an_invalid_queue_queues_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    declare(monkeypatch, "good,bad name")
    with pytest.raises(ValidationError, match=r"QUEUE_QUEUES.*'bad name'"):
        get_settings()
    get_settings.cache_clear()


def test_pausing_an_undeclared_queue_is_refused(
    use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UnknownQueue, match=r"'nope' is not declared.*default"):
        api.pause_queue("nope", by="test")
    with pytest.raises(UnknownQueue, match="'nope' is not declared"):
        api.resume_queue("nope")
    assert control_count(use_ledger) == 0
    # a queue paused while declared can still be resumed after its declaration went away
    declare(monkeypatch, "retired")
    api.pause_queue("retired", by="test")
    declare(monkeypatch, "")
    api.resume_queue("retired")
    assert [c["paused"] for c in api.get_queue_controls()] == [False]


# --- the command line: one line on stderr, exit code 2 ---------------------------------------


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--at", "0001-01-01T00:00:00Z"], ["allowed window"]),
        (["--at", "0001-01-01T00:00:00+14:00"], ["allowed window"]),
        (["--at", "9999-12-31T23:59:59-14:00"], ["allowed window"]),
        (["--at", "2020-01-01T00:00:00Z"], ["allowed window"]),
        (["--delay", "-5"], ["zero or more seconds"]),
        (["--delay", "1e300"], ["allowed window"]),
        (["--data", '{"x": ' + DEEP_LISTS + "}"], ["nested deeper than 32 levels"]),
        (["--queue", "nope"], ["'nope' is not declared", "default, notifications"]),
    ],
)
def test_queuectl_submit_refuses_out_of_bounds_input(
    use_ledger: str, args: list[str], fragments: list[str]
) -> None:
    assert_refused(run_cli("submit", "demo.echo", *args), *fragments)
    assert job_count(use_ledger) == 0


def test_queuectl_submit_reports_an_idempotency_conflict(use_ledger: str) -> None:
    ok = run_cli("submit", "demo.echo", "--data", '{"a": 1}', "--idempotency-key", "k")
    assert ok.exit_code == 0, ok.output
    first = ok.stdout.strip()
    again = run_cli("submit", "demo.echo", "--data", '{"a": 1}', "--idempotency-key", "k")
    assert again.stdout.strip() == first
    clash = run_cli("submit", "demo.sleep", "--data", '{"seconds": 1}', "--idempotency-key", "k")
    assert_refused(clash, first, "demo.echo")
    assert job_count(use_ledger) == 1


def test_queuectl_pause_resume_and_worker_refuse_undeclared_queues(
    use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_refused(run_cli("pause", "nope"), "'nope' is not declared")
    assert_refused(run_cli("resume", "nope"), "'nope' is not declared")
    assert control_count(use_ledger) == 0
    started: list[list[str]] = []
    monkeypatch.setattr(
        "tasks.worker.runtime.run_worker", lambda _s, names, *_a: started.append(names)
    )
    assert_refused(run_cli("worker", "--queues", "default,nope"), "'nope' is not declared")
    assert started == []
    declare(monkeypatch, "urgent")
    assert run_cli("worker", "--queues", "urgent,default").exit_code == 0
    assert run_cli("worker").exit_code == 0  # every declared queue, sorted
    assert started == [
        ["urgent", "default"],
        ["default", "notifications", "reports", "system", "urgent"],
    ]
