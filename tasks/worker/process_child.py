"""A child process of a process worker (``tasks.worker.process_pool``): it only runs handlers.

The parent owns Redis and the ledger; a child opens no connection of its own (unless a
handler reads ``ctx.dependency_results``, which reads the ledger). It reads one :class:`Run`
at a time from its pipe, runs the job's handler and answers with one :class:`Done`; while
recent jobs are short the parent sends the next ``Run`` before the ``Done`` of the one
running, so the child starts it at once. While the handler runs, ``ctx.progress`` and
``ctx.cancel_requested`` talk to the parent over the same pipe (the parent writes progress
and reads cancel requests in the ledger), and so do the lines the handler logs
(``tasks.worker.job_logs``). A child ignores SIGINT and SIGTERM: the parent decides when it stops
(it closes the pipe, or kills the child whose attempt ran past its timeout), and a child
kills itself the moment the parent's end of the pipe closes.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tasks import registry
from tasks.payload import cap_result
from tasks.worker import job_logs
from tasks.worker.job_logs import AttemptLog

#: a child asks the parent whether a cancel was requested at most this often
CANCEL_CHECK_INTERVAL = 0.25
#: a child sends progress at most this often (the latest value always goes with ``Done``)
PROGRESS_SEND_INTERVAL = 0.1


@dataclass(frozen=True)
class Run:
    """One attempt for a child to run."""

    job_id: uuid.UUID
    attempt: int
    max_attempts: int
    type: str
    queue: str
    data: Any
    worker_id: uuid.UUID


@dataclass(frozen=True)
class Done:
    """How an attempt ended in the child. ``error`` is None on success."""

    result: Any = None
    error: str | None = None  # "<exception type>: <message>"
    traceback: str | None = None
    cancelled: bool = False  # the handler raised JobCancelled
    progress: tuple[float, str | None] | None = None  # last progress not sent yet


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str | None


class CancelQuery:
    """The child asks whether a cancel was requested; the parent answers with a bool."""


class _Channel:
    """The child's side of a running attempt: progress, log lines and cancel over the pipe
    (a handler may use them from several threads: every send holds a lock)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self.pending: tuple[float, str | None] | None = None
        self._sent_at = 0.0
        self._checked_at = 0.0
        self._cancelled = False

    def progress(self, fraction: float, message: str | None) -> None:
        self.pending = (fraction, message)
        if time.monotonic() - self._sent_at >= PROGRESS_SEND_INTERVAL:
            self._sent_at = time.monotonic()
            self.send(Progress(fraction, message))
            self.pending = None

    def cancel_requested(self) -> bool:
        if not self._cancelled and time.monotonic() - self._checked_at >= CANCEL_CHECK_INTERVAL:
            self._checked_at = time.monotonic()
            with self._query_lock:  # one question in flight: the parent answers in order
                self.send(CancelQuery())
                answer = self.conn.recv()
                while isinstance(answer, Run):  # the next attempt, sent ahead (pipelining)
                    _SENT_AHEAD.append(answer)
                    answer = self.conn.recv()
                self._cancelled = bool(answer)
        return self._cancelled

    def send(self, message: object) -> None:
        with self._send_lock:
            self.conn.send(message)


#: the attempt this job process is running (for the per-job log capture)
_CURRENT: AttemptLog | None = None
#: attempts the parent sent while one ran, read off the pipe while waiting for an answer
_SENT_AHEAD: deque[Run] = deque()


def run_attempt(run: Run, conn: Connection) -> Done:
    """Run one attempt's handler; every exception becomes a :class:`Done` with an error."""
    global _CURRENT
    channel = _Channel(conn)
    _CURRENT = AttemptLog(run.job_id, run.attempt, channel.send)
    try:
        return _run_handler(run, channel)
    finally:
        attempt_log, _CURRENT = _CURRENT, None
        attempt_log.close()


def _run_handler(run: Run, channel: _Channel) -> Done:
    ctx = registry.JobContext(
        job_id=run.job_id,
        attempt=run.attempt,
        max_attempts=run.max_attempts,
        type=run.type,
        queue=run.queue,
        worker_id=run.worker_id,
        _cancel_probe=channel.cancel_requested,
        _progress_sink=channel.progress,
    )
    try:
        result = registry.run_handler(run.type, run.data, ctx)
    except BaseException as exc:  # every failure is recorded by the parent (sys.exit too)
        return Done(
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
            cancelled=isinstance(exc, registry.JobCancelled),
            progress=channel.pending,
        )
    return Done(result=cap_result(result), progress=channel.pending)


def _die_with_parent(conn: Connection) -> None:
    """Kill this process as soon as the worker's end of the pipe closes (the worker exited or
    was killed), even in the middle of a handler: a job process never outlives its worker.
    (The kernel's parent-death signal cannot do it: the parent of a job process is
    multiprocessing's fork server, which lives as long as any job process does.)"""
    poller = select.poll()
    poller.register(conn.fileno(), 0)  # only hang-up and error are reported

    def watch() -> None:
        while not poller.poll():
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_main(conn: Connection, job_modules: list[str]) -> None:
    """The child's loop: run what the parent sends until the pipe closes."""
    _die_with_parent(conn)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    registry.load_job_modules(job_modules)
    job_logs.capture(lambda: _CURRENT)
    while True:
        try:
            run = _SENT_AHEAD.popleft() if _SENT_AHEAD else conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        done = run_attempt(run, conn)
        try:
            conn.send(done)
        except (BrokenPipeError, OSError):
            return
