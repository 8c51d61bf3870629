"""Prefetch: a thread worker keeps its next attempt ready while its handlers run.

Without it, a handler thread that finishes a job pops the next message (one Redis round
trip) and reads its lease (one PostgreSQL round trip) before the next handler starts: on a
busy machine that gap was 2 - 3 ms per job, a fifth of a 10 ms job. The prefetch thread does
both while the handlers run, so a handler that finishes takes its next attempt from memory.

What keeps it safe:

- **Bounded.** The thread pops only while fewer attempts are ready than handler threads are
  waiting plus ``depth`` (``QUEUE_PREFETCH``, default 1), so a process holds at most
  ``depth`` attempts beyond its free slots.
- **Only for short jobs.** It reads ahead only while the recent jobs of the process ran
  shorter than ``short_seconds`` on average; with long jobs it pops only for a handler that
  is waiting, as Huey does, so a job never waits behind a long one in a busy process.
- **Given back.** An attempt that no handler took within ``hold_seconds`` is put back in
  Redis with its original score (same priority, same place), where any worker may take it.
  So is every ready attempt at shutdown. A process that dies holding one leaves a
  ``dispatched`` job that is not in Redis: the reconciler sends it again after its grace
  period, as for any lost message.
- **Read again when old.** A handler runs on the prefetched lease read only if it took the
  attempt within ``fresh_seconds`` of that read; otherwise it reads the lease again, so a
  cancel or pause that landed meanwhile is seen as it is without prefetch.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db import ledger
from tasks.broker import ForgedMessage, PoppedEntry, decode_job_message

log = logging.getLogger(__name__)


MIN_ERROR_DELAY = 0.1  # seconds before popping again after a Redis error, doubling
MAX_ERROR_DELAY = 2.0


@dataclass(frozen=True)
class PrefetchConfig:
    depth: int = 1  # attempts held beyond the handlers that are waiting
    hold_seconds: float = 0.5  # an attempt not taken within this is given back to Redis
    fresh_seconds: float = 0.05  # a lease read older than this is read again by the handler
    short_seconds: float = 0.1  # read ahead while recent jobs ran shorter than this (mean)


@dataclass(frozen=True)
class _Ready:
    entry: PoppedEntry
    job_id: uuid.UUID | None
    lease: int
    claimed: ledger.Claimed | None  # None: not read (refused message, read failed)
    read_at: float


class Prefetcher(threading.Thread):
    """Pops messages and reads their leases ahead of the handler threads of one process."""

    def __init__(
        self,
        pop: Callable[[float], PoppedEntry | None],
        give_back: Callable[[Sequence[PoppedEntry]], None],
        read_lease: Callable[[uuid.UUID, int], ledger.Claimed | None],
        config: PrefetchConfig,
    ) -> None:
        super().__init__(name="prefetch", daemon=True)
        self.pop = pop
        self.give_back = give_back
        self.read_lease = read_lease
        self.config = config
        self._cond = threading.Condition()
        self._ready: deque[_Ready] = deque()
        self._waiting = 0  # handler threads blocked in take()
        self._mean_run = 0.0  # moving mean of recent job run times, seconds
        self._stopping = threading.Event()
        self._local = threading.local()
        self.given_back = 0
        self._error_delay = MIN_ERROR_DELAY

    # --- handler threads -------------------------------------------------------------------

    def take(self, timeout: float) -> bytes | None:
        """The next message for the calling handler thread, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while not self._ready:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping.is_set():
                        self._local.ready = None
                        return None
                    self._cond.wait(left)
                ready = self._ready.popleft()
            finally:
                self._waiting -= 1
            self._cond.notify_all()
        fresh = time.monotonic() - ready.read_at <= self.config.fresh_seconds
        self._local.ready = ready if fresh else None
        return ready.entry.data

    def leased(self, job_id: uuid.UUID, lease: int) -> ledger.Claimed | None:
        """The calling thread's prefetched read of ``(job_id, lease)`` when it is fresh."""
        ready: _Ready | None = getattr(self._local, "ready", None)
        self._local.ready = None
        if ready is None or ready.job_id != job_id or ready.lease != lease:
            return None
        return ready.claimed

    def ran(self, seconds: float) -> None:
        """A handler finished a job that ran ``seconds``."""
        self._mean_run += (seconds - self._mean_run) * 0.2

    # --- the prefetch thread ---------------------------------------------------------------

    def _wanted(self) -> int:
        ahead = self.config.depth if self._mean_run < self.config.short_seconds else 0
        return self._waiting + ahead

    def _overdue(self) -> list[_Ready]:
        """Ready attempts held past ``hold_seconds`` (under the lock)."""
        limit = time.monotonic() - self.config.hold_seconds
        old = [r for r in self._ready if r.read_at < limit]
        for r in old:
            self._ready.remove(r)
        return old

    def _give_back(self, held: Sequence[_Ready]) -> None:
        if not held:
            return
        # nobody took them in time: the jobs here run long, so stop reading ahead until
        # short jobs bring the mean down again
        self._mean_run = max(self._mean_run, self.config.hold_seconds)
        try:
            self.give_back([r.entry for r in held])
            self.given_back += len(held)
        except Exception as exc:  # the reconciler sends them again after its grace period
            log.warning("could not give back %d prefetched message(s): %s", len(held), exc)

    def _read(self, entry: PoppedEntry) -> _Ready | None:
        """The popped message with its lease read; None when there is nothing to run."""
        try:
            job_id, lease, _ = decode_job_message(entry.data)
        except ForgedMessage:  # the handler thread's deserializer logs and refuses it
            return _Ready(entry, None, 0, None, time.monotonic())
        try:
            claimed = self.read_lease(job_id, lease)
        except Exception as exc:  # the handler reads it again, with its retries
            log.warning("prefetch: lease read of job %s failed: %s", job_id, exc)
            return _Ready(entry, job_id, lease, None, time.monotonic())
        if claimed is None:
            log.debug("job %s: nothing to run (stale or duplicate message, cancelled)", job_id)
            return None
        return _Ready(entry, job_id, lease, claimed, time.monotonic())

    def run(self) -> None:
        while not self._stopping.is_set():
            overdue: list[_Ready] = []
            with self._cond:
                while not self._stopping.is_set() and len(self._ready) >= self._wanted():
                    overdue = self._overdue()
                    if overdue:
                        break
                    self._cond.wait(self.config.hold_seconds / 2)
            if overdue:
                self._give_back(overdue)
                continue
            if self._stopping.is_set():
                break
            try:
                entry = self.pop(1.0)
            except Exception as exc:  # Redis down or restarting: keep trying, as Huey does
                log.warning("prefetch: cannot read from the queue (%s); retrying", exc)
                self._stopping.wait(self._error_delay)
                self._error_delay = min(self._error_delay * 2, MAX_ERROR_DELAY)
                continue
            self._error_delay = MIN_ERROR_DELAY
            ready = None if entry is None else self._read(entry)
            if ready is None:
                continue
            with self._cond:
                self._ready.append(ready)
                self._cond.notify_all()
        with self._cond:
            held = list(self._ready)
            self._ready.clear()
        self._give_back(held)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop fetching and give back every attempt no handler took."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.join(timeout)
