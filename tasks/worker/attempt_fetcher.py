"""The fetch thread of a process worker (``tasks.worker.process_pool``): it keeps attempts ready
for the job processes, so the parent's main loop does no Redis or ledger I/O per job.

It pops messages in batches (one script marks each taken: the delivery gate of
``tasks.transport.broker``), reads their leases on a held connection (or, on the embedded
transport, claims each attempt with its guarded UPDATE), and appends the runnable attempts to
the ready list, waking the main loop. How much it holds:

- **for idle job processes**: as many as are idle; with none ready and the queues empty it
  waits for the next message in a blocking pop (Redis) or polls (embedded, backing off);
- **ahead, for short jobs**: while every job process is busy and recent jobs ran shorter than
  ``short_seconds``, about ``ahead_seconds`` (10 ms) of work more per job process at the
  recent mean run time (at least 2 attempts, at most ``max_ahead``), refilled once half are
  used, so the batches stay large; the same rule as a thread worker's batches
  (``tasks.worker.prefetch``). After a read-ahead found the queues empty it waits
  ``miss_pause_seconds`` before it looks again.

Stale, duplicate, cancelled or paused deliveries are refused by the lease read and their
marks released; an attempt whose cancel was requested before it started ends ``cancelled``
unrun.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from db.ledger import attempts
from tasks.service_wait import Outage, redis_unreachable
from tasks.transport.broker import (
    ForgedMessage,
    LedgerRedisStorage,
    LedgerSqliteStorage,
    PoppedEntry,
    QueueStorage,
    decode_job_message,
)

if TYPE_CHECKING:  # the runtime imports this module (through tasks.worker.process_pool)
    from tasks.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchConfig:
    short_seconds: float = 0.1  # read ahead while recent jobs ran shorter than this (mean)
    ahead_seconds: float = 0.01  # hold about this much work ahead per job process
    max_ahead: int = 16  # and at most this many attempts per job process
    miss_pause_seconds: float = 0.05  # after an empty read-ahead, wait this long
    blocking_pop_seconds: float = 1.0  # one blocking pop waits at most this long
    max_poll_seconds: float = 0.5  # the embedded transport is polled, backing off to this


@dataclass
class Ready:
    """An attempt whose lease was read (or claimed), waiting for a job process."""

    entry: PoppedEntry | None  # None on the embedded transport (claimed: never given back)
    claimed: attempts.Claimed
    read_at: float


class AttemptFetcher(threading.Thread):
    def __init__(
        self,
        runtime: WorkerRuntime,
        storage: QueueStorage,
        concurrency: int,
        wake: socket.socket,
        config: FetchConfig | None = None,
    ) -> None:
        super().__init__(name="fetch", daemon=True)
        self.runtime = runtime
        self.storage = storage
        self.concurrency = concurrency
        self.wake = wake
        self.config = config or FetchConfig()
        self.redis = storage if isinstance(storage, LedgerRedisStorage) else None
        self.cond = threading.Condition()
        #: attempts ready for a job process; the main loop takes them under ``cond``
        self.ready: deque[Ready] = deque()
        self.idle = 0  # job processes with nothing to run (set by the main loop)
        self.free = 0  # places for an attempt now (set by the main loop)
        self.mean_run = 0.0  # moving mean of recent run times, seconds (set by the main loop)
        self.stopping = threading.Event()
        self.outage = Outage("Redis", log)
        self._missed_at = -1.0
        self._poll_delay = 0.05

    # --- called by the main loop (under ``cond``) ------------------------------------------

    def update(self, idle: int, free: int, mean_run: float) -> None:
        """The main loop's view changed: wake the fetch thread if it now has work."""
        with self.cond:
            self.idle, self.free, self.mean_run = idle, free, mean_run
            if self._wanted() > 0:
                self.cond.notify()

    def take(self, count: int) -> list[Ready]:
        with self.cond:
            taken = [self.ready.popleft() for _ in range(min(count, len(self.ready)))]
            if taken and self._wanted() > 0:
                self.cond.notify()
            return taken

    def put_back(self, ready: Sequence[Ready]) -> None:
        with self.cond:
            self.ready.extendleft(reversed(ready))

    def take_old(self, older_than: float) -> list[Ready]:
        """Remove the ready attempts read before ``older_than`` (to give them back)."""
        with self.cond:
            old = [r for r in self.ready if r.read_at < older_than and r.entry is not None]
            for r in old:
                self.ready.remove(r)
            if old:
                self.mean_run = max(self.mean_run, self.config.short_seconds)  # stop ahead
            return old

    def stop(self) -> list[Ready]:
        """Stop fetching; returns every ready attempt nobody took (to give back)."""
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.join(self.config.blocking_pop_seconds + 5)
        with self.cond:
            left, self.ready = list(self.ready), deque()
        return left

    # --- the fetch thread --------------------------------------------------------------------

    def _ahead(self) -> int:
        """How many attempts to hold beyond the free job processes: about
        ``ahead_seconds`` of work per job process (at least 2, at most ``max_ahead``)."""
        if self.redis is None or self.mean_run >= self.config.short_seconds:
            return 0
        per_process = self.config.ahead_seconds / max(self.mean_run, 1e-4)
        return self.concurrency * max(2, min(self.config.max_ahead, round(per_process)))

    def _wanted(self) -> int:
        """How many to fetch now (0: enough ready). Under ``cond``."""
        ready, ahead = len(self.ready), self._ahead()
        spare = ready - self.free  # ready beyond the free places
        if spare >= 0 and (ahead == 0 or spare > ahead // 2):
            return 0  # refill the read-ahead in batches, not one message per finished job
        return self.free + ahead - ready

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.cond:
                want = self._wanted()
                starving = self.idle > len(self.ready)
                if want <= 0:
                    self.cond.wait(0.25)
                    continue
                # the queues were empty a moment ago: read ahead again only after a pause,
                # but at once when a job process becomes idle (``update`` notifies)
                pause = self._missed_at + self.config.miss_pause_seconds - time.monotonic()
                if not starving and pause > 0:
                    self.cond.wait(pause)
                    continue
            try:
                found = self._fetch(want, starving)
            except Exception as exc:  # keep fetching through outages
                if redis_unreachable(exc):
                    self.outage.failed(exc)
                else:
                    log.exception("fetching the next attempts failed")
                self.stopping.wait(0.5)
                continue
            if found:
                with self.cond:
                    self.ready.extend(found)
                with contextlib.suppress(OSError):
                    self.wake.send(b"\0")

    def _fetch(self, want: int, starving: bool) -> list[Ready]:
        if self.redis is None:
            return self._fetch_embedded(want)
        entries = self.redis.pop_ready(want)
        self.outage.answered()
        if not entries:
            self._missed_at = time.monotonic()
            if not starving:
                return []
            entry = self.redis.pop(self.config.blocking_pop_seconds)  # wait for work
            entries = [] if entry is None else [entry]
        return self._admit(entries)

    def _fetch_embedded(self, want: int) -> list[Ready]:
        assert isinstance(self.storage, LedgerSqliteStorage)
        found: list[Ready] = []
        for _ in range(want):
            data = self.storage.dequeue()
            if data is None:
                break
            decoded = _decode(data)
            if decoded is None:
                continue
            claimed = self._claim(*decoded)
            if claimed is not None and self._runnable(claimed):
                found.append(Ready(None, claimed, time.monotonic()))
        if found:
            self._poll_delay = 0.05
        else:
            self.stopping.wait(self._poll_delay)
            self._poll_delay = min(self._poll_delay * 2, self.config.max_poll_seconds)
        return found

    def _claim(self, job_id: uuid.UUID, lease: int) -> attempts.Claimed | None:
        tries = 0

        def begin() -> attempts.Claimed | None:
            nonlocal tries
            tries += 1
            return self.runtime._begin(job_id, lease, retried=tries > 1)

        claimed: attempts.Claimed | None = self.runtime._with_db_retry("claim", begin)
        return claimed

    def _admit(self, entries: Sequence[PoppedEntry]) -> list[Ready]:
        """Read the leases of popped messages and keep the runnable attempts."""
        messages: list[tuple[PoppedEntry, uuid.UUID, int]] = []
        for entry in entries:
            decoded = _decode(entry.data)
            if decoded is not None:
                messages.append((entry, *decoded))
        if not messages:
            return []
        found = read_leases(self.runtime, [(job_id, lease) for _, job_id, lease in messages])
        now = time.monotonic()
        ready, refused = [], []
        for entry, job_id, lease in messages:
            claimed = found.get((job_id, lease))
            if claimed is None:
                refused.append((job_id, lease))
            elif self._runnable(claimed):
                ready.append(Ready(entry, claimed, now))
        if refused:  # stale, duplicate, cancelled, paused: no worker holds these deliveries
            log.debug("nothing to run for %d message(s)", len(refused))
            self.runtime._release(refused)
        return ready

    def _runnable(self, claimed: attempts.Claimed) -> bool:
        if claimed.cancel_requested:  # cancelled before any job process started it
            self.runtime._cancelled_before_start(claimed)
            return False
        return True


def _decode(data: bytes) -> tuple[uuid.UUID, int] | None:
    try:
        job_id, lease, _ = decode_job_message(data)
    except ForgedMessage as exc:
        log.error("rejected a message from the queue: %s (%r)", exc, data[:200])
        return None
    return job_id, lease


def read_leases(
    runtime: WorkerRuntime, messages: list[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], attempts.Claimed]:
    """The attempts these deliveries may run (read on a held PostgreSQL connection)."""
    held = runtime.held  # set once, before the worker starts
    if held is not None:
        return runtime._with_db_retry("lease read", lambda: held.leased_many(messages))
    result = {}
    for job_id, lease in messages:
        claimed = runtime._with_db_retry(
            "lease read", partial(runtime._begin, job_id, lease, retried=False)
        )
        if claimed is not None:
            result[(job_id, lease)] = claimed
    return result
