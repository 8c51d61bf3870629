"""Waiting for a server (``tasks.service_wait``) and the worker's queue reads through a Redis
outage (``tasks.worker.runtime.QueueReader``), without servers: probes and clocks are fakes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from tasks.service_wait import (
    Outage,
    ledger_unreachable,
    one_line,
    redis_unreachable,
    stop_on_signals,
    wait_until_reachable,
)
from tasks.worker.runtime import QueueReader, ScheduleReader

STARTING_UP = psycopg.OperationalError(
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    "the database system is starting up"
)


def sqlalchemy_error(orig: Exception, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    return cls("SELECT 1", {}, orig)


class Clock(threading.Event):
    """A stop event whose waits take no time and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.is_set()


class FailingProbe:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlalchemy_error(STARTING_UP), True),  # cannot connect: starting up, refused
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (sqlalchemy_error(psycopg.errors.AdminShutdown("terminating connection")), True),
        (DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), True),
        (sqlalchemy_error(sqlite3.OperationalError("no such table: queue_workers")), False),
        (sqlalchemy_error(psycopg.errors.UndefinedTable("relation"), ProgrammingError), False),
        (sqlalchemy_error(psycopg.errors.UniqueViolation("dup"), IntegrityError), False),
        (ValueError("not a database error"), False),
    ],
)
def test_which_ledger_errors_are_waited_out(error: Exception, expected: bool) -> None:
    assert ledger_unreachable(error) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379."), True),
        (redis.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (redis.TimeoutError("Timeout reading from socket"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (redis.ResponseError("WRONGTYPE Operation against a key"), False),
    ],
)
def test_which_redis_errors_are_waited_out(error: Exception, expected: bool) -> None:
    assert redis_unreachable(error) is expected


def test_a_long_outage_is_one_warning_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tasks.service_wait")
    probe = FailingProbe([sqlalchemy_error(STARTING_UP)] * 7)
    clock = Clock()
    assert wait_until_reachable(probe, "ledger", unreachable=ledger_unreachable, stop=clock)
    assert probe.calls == 8
    assert clock.waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # doubling, at most 5 s
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith("ledger unreachable, waiting: (psycopg.OperationalError)")
    assert "the database system is starting up" in warning
    assert "\n" not in warning
    (back,) = messages(caplog, logging.INFO)
    assert back.startswith("ledger is back after ")
    assert len(messages(caplog, logging.DEBUG)) == 6  # each further try, at DEBUG only


def test_a_reachable_server_is_not_mentioned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tasks.service_wait")
    clock = Clock()
    assert wait_until_reachable(lambda: None, "Redis", unreachable=redis_unreachable, stop=clock)
    assert clock.waits == []
    assert caplog.records == []


def test_any_other_error_is_raised_at_once() -> None:
    probe = FailingProbe([sqlalchemy_error(psycopg.errors.UndefinedTable("x"), ProgrammingError)])
    with pytest.raises(ProgrammingError):
        wait_until_reachable(probe, "ledger", unreachable=ledger_unreachable, stop=Clock())
    assert probe.calls == 1


def test_setting_the_stop_event_ends_the_wait_at_once() -> None:
    stop = threading.Event()
    probe = FailingProbe([redis.ConnectionError("refused")] * 1000)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    reached = wait_until_reachable(
        probe, "Redis", unreachable=redis_unreachable, stop=stop, first_delay=30.0
    )
    assert reached is False
    assert time.monotonic() - started < 5
    assert probe.calls == 1


def test_sigterm_sets_the_stop_event_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_outage_seen_by_many_threads_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tasks.service_wait")
    outage = Outage("Redis")
    gate = threading.Barrier(8)

    def fail() -> None:
        gate.wait()
        for _ in range(50):
            outage.failed(redis.ConnectionError("Error 111\nsecond line"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outage.answered()
    outage.answered()
    assert messages(caplog, logging.WARNING) == ["Redis unreachable, waiting: Error 111"]
    assert len(messages(caplog, logging.INFO)) == 1
    assert not outage.down


def test_one_line_keeps_the_first_line() -> None:
    assert one_line(ValueError("\n  first\nsecond")) == "first"
    assert one_line(ValueError("")) == "ValueError"


class FakeHuey:
    """Huey as the worker loop sees it: ``dequeue`` replies from a script."""

    storage = type("Storage", (), {"blocking": True})

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.executed: list[Any] = []

    def dequeue(self) -> Any:
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def execute(self, task: Any, now: Any = None) -> None:
        self.executed.append(task)

    def read_schedule(self, now: Any = None) -> list[Any]:
        reply = self.dequeue()
        return [] if reply is None else [reply]

    def enqueue(self, task: Any) -> None:
        self.executed.append(task)


def test_the_worker_loop_logs_a_redis_outage_once_not_a_traceback_per_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    down = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    huey = FakeHuey([down, down, down, None, "task", down, None])
    reader = QueueReader(huey, threading.Event(), 0.001, 0.001, 1.15)
    reader.redis_outage = Outage("Redis", logging.getLogger("tasks.worker.runtime"))
    for _ in range(7):
        reader.loop()
    assert huey.executed == ["task"]
    warnings = messages(caplog, logging.WARNING)
    assert warnings == [f"Redis unreachable, waiting: {down}"] * 2  # two outages
    backs = [m for m in messages(caplog, logging.INFO) if m.startswith("Redis is back after")]
    assert len(backs) == 2
    assert not [r for r in caplog.records if r.exc_info]


def test_the_worker_loop_still_reports_other_read_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = QueueReader(FakeHuey([ValueError("bad message")]), threading.Event(), 0, 0, 1.15)
    reader.redis_outage = Outage("Redis")
    reader.loop()
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "Error reading from queue"
    assert record.exc_info is not None


def test_the_scheduler_loop_logs_a_redis_outage_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    down = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
    huey = FakeHuey([down, down, None])
    stopped = threading.Event()
    stopped.set()  # its once-a-second sleep returns at once
    scheduler = ScheduleReader(huey, stopped, 1, False)
    scheduler.redis_outage = Outage("Redis", logging.getLogger("tasks.worker.runtime"))
    for _ in range(3):
        scheduler._next_loop = time.monotonic()  # never behind
        scheduler.loop()
    assert messages(caplog, logging.WARNING) == [f"Redis unreachable, waiting: {down}"]
    assert [m for m in messages(caplog, logging.INFO) if m.startswith("Redis is back")]
    assert not [r for r in caplog.records if r.exc_info]
