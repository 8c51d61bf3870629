"""Group commit of job completions: one statement (one commit) for every completion that a
worker process produced within a couple of milliseconds, instead of one commit per job.

A handler thread hands its result over and takes the next message at once. The job stays
``running`` in the ledger until the batch commits, so a job is never reported completed
before it is; if the process dies first, the rescuer re-runs it (at-least-once). Shutdown
flushes the queue before unfinished jobs are handed back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db import ledger
from db.engine import write

log = logging.getLogger(__name__)

MAX_BATCH = 500
LINGER_SECONDS = 0.002  # wait this long for more completions to share the commit


class CompletionWriter(threading.Thread):
    def __init__(self, engine: Engine) -> None:
        super().__init__(name="completion-writer", daemon=True)
        self.engine = engine
        self._queue: queue.Queue[tuple[uuid.UUID, int, Any]] = queue.Queue()
        self._closing = threading.Event()
        self.fenced = 0

    def submit(self, job_id: uuid.UUID, attempt: int, result: Any) -> None:
        self._queue.put((job_id, attempt, result))

    def _take_batch(self) -> list[tuple[uuid.UUID, int, Any]]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + LINGER_SECONDS
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[tuple[uuid.UUID, int, Any]]) -> bool:
        delay = 0.1
        while True:
            try:
                with write(self.engine) as conn:
                    recorded = ledger.complete_many(conn, batch)
                fenced = len(batch) - len(recorded)
                if fenced:
                    self.fenced += fenced
                    log.warning(
                        "%d finished attempt(s) were fenced off (rescued meanwhile)", fenced
                    )
                return True
            except DBAPIError as exc:
                if self._closing.is_set():
                    log.error("dropping %d completion(s): database down at shutdown", len(batch))
                    return False
                log.warning("completion write failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()):
            batch = self._take_batch()
            if batch:
                self._write(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted so far, then stop."""
        self._closing.set()
        self.join(timeout)
