"""Per-job logs: the lines a handler logs through ``ctx.log`` (or any logger under
``job.<type>``), kept per attempt in ``queue_job_logs`` and shown with the job.

- **Captured at INFO and above** in worker processes, whatever ``LOG_LEVEL`` says; a line
  also goes to the worker's own log when it passes ``LOG_LEVEL``, as before.
- **Bounded at the source**: an attempt keeps at most ``MAX_LINES`` lines and
  ``MAX_BYTES`` bytes of text (each line cut at ``MAX_LINE_CHARS``); past that, lines are
  counted, not kept, and the attempt ends with one marker line saying how many were dropped.
  So a handler that logs in a tight loop costs the ledger 1,000 rows, not millions.
- **Batched**: lines go to one writer thread per worker process that inserts whatever
  arrived within ``FLUSH_SECONDS`` in one statement, so a running job's lines show within a
  fraction of a second and a chatty job does not slow the others. A job that logs nothing
  costs nothing (no thread wakes, no write).
- Thread workers know the attempt from the handler thread (lines logged from threads the
  handler starts itself are not kept); a job process has one attempt at a time and sends its
  lines to the parent over its pipe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db import job_logs
from db.engine import write
from db.job_logs import LogLine
from tasks.service_wait import one_line

log = logging.getLogger(__name__)

MAX_LINES = 1000  # lines kept per attempt
MAX_BYTES = 64 * 1024  # bytes of text kept per attempt
MAX_LINE_CHARS = 4000  # a longer line is cut
FLUSH_SECONDS = 0.25  # lines are written at most this long after they were logged
MAX_BATCH = 2000
#: the logger whose descendants are kept (``ctx.log`` is ``job.<type>``)
JOB_LOGGER = "job"


class AttemptLog:
    """The bounded log of one running attempt; hands each kept line to ``sink``."""

    def __init__(self, job_id: uuid.UUID, attempt: int, sink: Callable[[LogLine], None]) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.sink = sink
        self.kept = 0
        self.kept_bytes = 0
        self.dropped = 0
        self._lock = threading.Lock()  # a handler may log from several threads

    @property
    def full(self) -> bool:
        return self.kept >= MAX_LINES

    def add(self, level: str, message: str) -> None:
        text = message if len(message) <= MAX_LINE_CHARS else message[:MAX_LINE_CHARS] + " …"
        size = len(text.encode("utf-8", "replace"))
        with self._lock:
            if self.kept >= MAX_LINES or self.kept_bytes + size > MAX_BYTES:
                self.dropped += 1
                return
            self.kept += 1
            self.kept_bytes += size
        self.sink(LogLine(self.job_id, self.attempt, datetime.now(UTC), level, text))

    def close(self) -> None:
        """The attempt ended: say how many lines were not kept, if any."""
        if self.dropped:
            marker = (
                f"[truncated: {self.dropped} more line(s) not kept; an attempt keeps "
                f"{MAX_LINES} lines / {MAX_BYTES // 1024} KB]"
            )
            self.sink(LogLine(self.job_id, self.attempt, datetime.now(UTC), "WARNING", marker))


class _Capture(logging.Handler):
    """Installed on the ``job`` logger: keeps each record in the current attempt's log and
    passes it on to the process's own handlers when it passes their level."""

    def __init__(self, current: Callable[[], AttemptLog | None]) -> None:
        super().__init__(logging.INFO)
        self.current = current

    def emit(self, record: logging.LogRecord) -> None:
        attempt_log = self.current()
        if attempt_log is not None:
            if attempt_log.full:  # counted without formatting it
                attempt_log.add(record.levelname, "")
            else:
                try:
                    attempt_log.add(record.levelname, record.getMessage())
                except Exception:  # a bad format string must not fail the handler
                    self.handleError(record)
        root = logging.getLogger()
        if record.levelno >= root.getEffectiveLevel():
            root.handle(record)


def capture(current: Callable[[], AttemptLog | None]) -> None:
    """Keep the lines logged under ``job.<type>`` for the attempt ``current()`` returns."""
    job_logger = logging.getLogger(JOB_LOGGER)
    for handler in list(job_logger.handlers):
        if isinstance(handler, _Capture):
            job_logger.removeHandler(handler)
    job_logger.addHandler(_Capture(current))
    job_logger.setLevel(logging.INFO)
    job_logger.propagate = False  # _Capture passes records on itself, by the root's level


class ThreadAttempts:
    """The attempt each handler thread is running (thread workers)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def current(self) -> AttemptLog | None:
        return getattr(self._local, "attempt_log", None)

    def begin(self, attempt_log: AttemptLog) -> None:
        self._local.attempt_log = attempt_log

    def end(self) -> None:
        attempt_log = self.current()
        self._local.attempt_log = None
        if attempt_log is not None:
            attempt_log.close()


class JobLogWriter(threading.Thread):
    """Writes the lines of every attempt of this worker process, batched by time."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="job-log-writer", daemon=True)
        self.engine = engine
        self._queue: queue.Queue[LogLine] = queue.Queue()
        self._closing = threading.Event()

    def put(self, line: LogLine) -> None:
        self._queue.put(line)

    def _take(self) -> list[LogLine]:
        try:
            first = self._queue.get(timeout=1.0)
        except queue.Empty:
            return []
        lines = [first]
        deadline = time.monotonic() + (0 if self._closing.is_set() else FLUSH_SECONDS)
        while len(lines) < MAX_BATCH:
            try:
                lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return lines

    def _write(self, lines: list[LogLine]) -> None:
        delay = 0.1
        while True:
            try:
                with write(self.engine) as conn:
                    job_logs.insert_lines(conn, lines)
                return
            except DBAPIError as exc:
                if self._closing.is_set():
                    log.warning("dropping %d job log line(s): %s", len(lines), one_line(exc))
                    return
                log.warning("job log write failed (%s); retrying in %.1fs", one_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()):
            lines = self._take()
            if lines:
                self._write(lines)

    def close(self, timeout: float = 10.0) -> None:
        """Write what was logged so far, then stop."""
        self._closing.set()
        self.join(timeout)
