"""The worker's graceful stop (``LedgerConsumer``): it waits for the running jobs until they
finish, the shutdown timeout passes, or a second signal says not to wait; the signals only
set events, so nothing is raised in the middle of whatever the main thread is doing."""

from __future__ import annotations

import threading
import time

from huey import MemoryHuey

from tasks.worker.runtime import LedgerConsumer


def _consumer(shutdown_timeout: float | None) -> tuple[LedgerConsumer, threading.Event]:
    """A consumer whose one handler thread runs until the returned event is set."""
    consumer = LedgerConsumer(
        MemoryHuey("graceful-stop-test"),
        workers=1,
        periodic=False,
        worker_type="thread",
        shutdown_timeout=shutdown_timeout,
    )
    job_ends = threading.Event()
    handler = threading.Thread(target=job_ends.wait, daemon=True)
    handler.start()
    consumer.worker_threads = [(None, handler)]
    return consumer, job_ends


def test_the_stop_waits_for_the_running_job_to_finish() -> None:
    consumer, job_ends = _consumer(shutdown_timeout=30)
    threading.Timer(0.2, job_ends.set).start()
    started = time.monotonic()
    assert consumer._wait_for_handlers(threading.Event()) is True
    assert 0.2 <= time.monotonic() - started < 5


def test_a_second_signal_ends_the_wait_while_the_job_runs() -> None:
    consumer, job_ends = _consumer(shutdown_timeout=30)
    hurry = threading.Event()
    threading.Timer(0.2, hurry.set).start()
    started = time.monotonic()
    assert consumer._wait_for_handlers(hurry) is False
    assert time.monotonic() - started < 5  # not the 30 s of the shutdown timeout
    job_ends.set()


def test_the_shutdown_timeout_ends_the_wait() -> None:
    consumer, job_ends = _consumer(shutdown_timeout=0.3)
    started = time.monotonic()
    assert consumer._wait_for_handlers(threading.Event()) is False
    assert 0.3 <= time.monotonic() - started < 5
    job_ends.set()
