"""Prefetch: a thread worker reads its next attempt ahead while all its handlers are busy.

Without it, a handler thread that finishes a job pops the next message (one Redis round
trip) and reads its lease (one PostgreSQL round trip) before it starts again: on a busy
machine that gap was 2 - 3 ms per job, a fifth of a 10 ms job. The prefetch thread does both
while the handlers run, so a handler that finishes takes its next attempt from memory.

- **Only when every handler is busy.** A handler with nothing ready pops for itself and reads
  its own lease, exactly as Huey's loop does, so an idle worker picks up a new job with no
  hand-off between threads. The prefetch thread pops (without waiting) only while no
  handler is waiting in a pop, so it never takes a message from under an idle handler; after
  a pop that found Redis empty it waits for the next job to start before it looks again.
- **Bounded.** A process holds at most ``PrefetchConfig.ahead`` attempts beyond its busy
  slots: ``depth`` (``QUEUE_PREFETCH``, default 1), or for short jobs what its handlers run
  in ``batch_seconds`` (10 ms of work, at most ``max_batch``). It pops and reads them
  together (one script, one pipelined round trip) and again once half are taken, so in a
  backlog of short jobs a handler takes every attempt from memory (2 ms jobs: slots busy
  78 -> 94 % of the time).
- **Only for short jobs.** It reads ahead only while the recent jobs of the process ran
  between ``min_seconds`` and ``short_seconds`` on average: a job never waits behind a long
  one in a busy process while another worker is idle, and jobs shorter than a read-ahead
  gain nothing from it.
- **Given back.** An attempt that no handler took within ``hold_seconds`` is put back in
  Redis with its original score (same priority, same place), where any worker may take it;
  so is every ready attempt at shutdown. A process that dies holding one leaves a
  ``dispatched`` job that is not in Redis: the reconciler sends it again after its grace
  period, as for any lost message.
- **Read again when old.** A handler runs on the prefetched lease read only if it took the
  attempt within ``fresh_seconds`` of that read; otherwise it reads the lease again, so a
  cancel or pause that landed meanwhile is seen as it is without prefetch.
- **Batches for short jobs.** While recent jobs ran shorter than ``short_seconds``, a handler
  that finds nothing ready pops several messages with one script (as many as the process's
  handlers run in ``batch_seconds`` at the recent mean run time, at most ``max_batch``),
  keeps one and leaves the rest ready for the next handlers.
  For jobs shorter than ``min_seconds`` each handler reads its own lease right before it
  starts (one prepared primary-key SELECT: measured cheaper than reading the batch in one
  SELECT); for longer ones the prefetch thread reads the leases the batch left while the
  handlers run, so a handler takes a read attempt from memory (2 ms jobs kept the slots
  busy 77 % of the time instead of 71 %).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db.ledger import attempts
from tasks.transport.broker import ForgedMessage, PoppedEntry, decode_job_message

log = logging.getLogger(__name__)

#: a message's ``(job id, lease)``
Message = tuple[uuid.UUID, int]


@dataclass(frozen=True)
class PrefetchConfig:
    depth: int = 1  # attempts held ready beyond the busy handlers
    hold_seconds: float = 0.5  # an attempt not taken within this is given back to Redis
    fresh_seconds: float = 0.05  # a lease read older than this is read again by the handler
    short_seconds: float = 0.1  # read ahead while recent jobs ran shorter than this (mean)
    #: ... and at least this long: a read-ahead (a pop and a SELECT) takes about a
    #: millisecond, so for shorter jobs it only adds work beside the handlers' own pops
    min_seconds: float = 0.002
    #: handler threads of the process (the batch size scales with them)
    handlers: int = 1
    #: while recent jobs ran shorter than ``short_seconds``, a handler with nothing ready pops
    #: a batch: as many messages as the handlers run in this long at the recent mean (the
    #: work a batch leaves ready in this process, where no other worker can take it)
    batch_seconds: float = 0.01
    #: ... and at most this many (1: every handler pops one message for itself)
    max_batch: int = 32

    def ahead(self, mean_run: float | None) -> int:
        """Attempts the prefetch thread keeps ready after jobs that ran ``mean_run`` seconds
        on average: ``depth``, or for short jobs what the handlers run in ``batch_seconds``
        (a batch's worth), whichever is more. It refills once half of them are taken, so a
        handler of a busy process takes a read attempt from memory instead of popping a
        batch and reading its own lease (5 % of 2 ms jobs did, at 2.9 ms each)."""
        return max(self.depth, self.batch_size(mean_run))

    def batch_size(self, mean_run: float | None) -> int:
        """Messages a handler with nothing ready pops at once, after jobs that ran
        ``mean_run`` seconds on average (None: none has run yet, so one)."""
        if mean_run is None or mean_run >= self.short_seconds or self.max_batch <= 1:
            return 1
        fits = self.batch_seconds * self.handlers / max(mean_run, 1e-5)
        return max(1, min(self.max_batch, int(fits)))


@dataclass(frozen=True)
class _Ready:
    entry: PoppedEntry
    job_id: uuid.UUID | None
    lease: int
    claimed: attempts.Claimed | None  # None: not read (refused message, read failed)
    read_at: float


class Prefetcher(threading.Thread):
    """Pops messages and reads their leases ahead of the handler threads of one process,
    while all of them are busy."""

    def __init__(
        self,
        pop_waiting: Callable[[float, bool], PoppedEntry | None],
        pop_ready: Callable[[int], list[PoppedEntry]],
        give_back: Callable[[Sequence[PoppedEntry]], None],
        read_leases: Callable[[list[Message]], dict[Message, attempts.Claimed]],
        config: PrefetchConfig,
        release: Callable[[list[Message]], None] | None = None,
    ) -> None:
        super().__init__(name="prefetch", daemon=True)
        self.pop_waiting = pop_waiting
        self.pop_ready = pop_ready
        self.give_back = give_back
        self.read_leases = read_leases
        self.release = release
        self.config = config
        self._cond = threading.Condition()
        self._ready: deque[_Ready] = deque()
        #: ``id()`` of batch entries in ``_ready`` whose lease nobody has read yet
        self._unread: set[int] = set()
        self._popping = 0  # handler threads waiting in their own pop
        self._fetching = False  # a read-ahead is in flight
        self._taken = 0  # messages handed to handler threads so far
        self._taken_at_miss = -1  # ``_taken`` when a read-ahead last found Redis empty
        self._mean_run: float | None = None  # moving mean of recent run times (s), None: none yet
        self._stopping = threading.Event()
        self._local = threading.local()
        self.given_back = 0
        self.idle_checks = 0  # passes that found nothing to read ahead (tests wait on it)

    # --- handler threads -------------------------------------------------------------------

    def take(self, timeout: float) -> bytes | None:
        """The next message for the calling handler thread: a ready one, else one it pops
        itself (waiting up to ``timeout``), as Huey's own loop does."""
        with self._cond:
            while self._fetching and not self._ready:  # a read-ahead is on its way
                self._cond.wait()
            ready = self._ready.popleft() if self._ready else None
            batch = 1
            if ready is not None:
                self._unread.discard(id(ready))
                self._taken += 1
                self._wake_if_needed()
            else:
                self._popping += 1
                # one batch at a time: the handlers that come meanwhile wait for it
                batch = self.config.batch_size(self._mean_run)
                self._fetching = self._fetching or batch > 1
        if ready is not None:
            fresh = time.monotonic() - ready.read_at <= self.config.fresh_seconds
            self._local.ready = ready if fresh else None
            return ready.entry.data
        self._local.ready = None
        entry = None
        try:
            if batch > 1:
                try:
                    entry = self._pop_batch(batch)
                finally:
                    with self._cond:  # the handlers that waited for it take what it left
                        self._fetching = False
                        self._cond.notify_all()
            if entry is None:  # a batch that found nothing: straight to the wait
                entry = self.pop_waiting(timeout, batch == 1)
        finally:
            with self._cond:
                self._popping -= 1
                self._taken += entry is not None
                self._wake_if_needed()
        return None if entry is None else entry.data

    def _pop_batch(self, count: int) -> PoppedEntry | None:
        """Pop up to ``count`` messages at once: the first is the caller's, the others wait
        (ready, unread: each handler reads its own lease) for the next handlers that come.
        None: nothing to run in the queues right now."""
        entries = self.pop_ready(count)
        if len(entries) > 1:
            now = time.monotonic()
            rest = [_Ready(e, None, 0, None, now) for e in entries[1:]]
            with self._cond:
                self._ready.extend(rest)
                self._unread.update(id(r) for r in rest)
                self._wake_if_needed()
        return entries[0] if entries else None

    @property
    def ready_count(self) -> int:
        """Attempts read ahead and not yet taken."""
        with self._cond:
            return len(self._ready)

    def leased(self, job_id: uuid.UUID, lease: int) -> attempts.Claimed | None:
        """The calling thread's prefetched read of ``(job_id, lease)`` when it is fresh."""
        ready: _Ready | None = getattr(self._local, "ready", None)
        self._local.ready = None
        if ready is None or ready.job_id != job_id or ready.lease != lease:
            return None
        return ready.claimed

    def ran(self, seconds: float) -> None:
        """A handler finished a job that ran ``seconds``."""
        mean = self._mean_run
        self._mean_run = seconds if mean is None else mean + (seconds - mean) * 0.2

    # --- the prefetch thread ---------------------------------------------------------------

    def _wake_if_needed(self) -> None:
        """Under the lock: wake the prefetch thread only when it has something to do (a
        wake-up per job would cost the handlers the GIL for nothing)."""
        if self._should_read_ahead() or self._should_read_leases():
            self._cond.notify()

    def _should_read_ahead(self) -> bool:
        """Under the lock: every handler is busy, at most half of the attempts to keep ready
        (``PrefetchConfig.ahead``; with one, none) are, recent jobs ran long enough to hide a
        read-ahead behind and short enough not to hold one long, and a job started since
        Redis was last found empty."""
        return (
            self._popping == 0
            and len(self._ready) <= self.config.ahead(self._mean_run) // 2
            and self._mean_run is not None
            and self.config.min_seconds <= self._mean_run < self.config.short_seconds
            and self._taken != self._taken_at_miss
        )

    def _should_read_leases(self) -> bool:
        """Under the lock: a batch left attempts whose leases nobody has read, and recent
        jobs ran long enough (``min_seconds``) for the prefetch thread to read them while the
        handlers run; for shorter jobs each handler reads its own (measured cheaper)."""
        return (
            bool(self._unread)
            and self._mean_run is not None
            and self.config.min_seconds <= self._mean_run < self.config.short_seconds
        )

    def _read_unread(self) -> None:
        """Read the leases of the batch entries waiting unread (:meth:`_read`) and put them
        back in place, read, without those the ledger refuses; a handler that took one
        meanwhile reads its own."""
        with self._cond:
            todo = [r for r in self._ready if id(r) in self._unread]
            self._unread.clear()
        if not todo:
            return
        read = {id(r.entry): r for r in self._read([r.entry for r in todo])}
        unread = {id(r) for r in todo}
        with self._cond:
            self._ready = deque(
                read[id(r.entry)] if id(r) in unread else r
                for r in self._ready
                if id(r) not in unread or id(r.entry) in read
            )

    def _overdue(self) -> list[_Ready]:
        """Ready attempts held past ``hold_seconds`` (under the lock)."""
        limit = time.monotonic() - self.config.hold_seconds
        old = [r for r in self._ready if r.read_at < limit]
        for r in old:
            self._ready.remove(r)
            self._unread.discard(id(r))
        return old

    def _give_back(self, held: Sequence[_Ready]) -> None:
        if not held:
            return
        # nobody took them in time: the jobs here run long, so stop reading ahead until
        # short jobs bring the mean down again
        self._mean_run = max(self._mean_run or 0.0, self.config.hold_seconds)
        try:
            self.give_back([r.entry for r in held])
            self.given_back += len(held)
        except Exception as exc:  # the reconciler sends them again after its grace period
            log.warning("could not give back %d prefetched message(s): %s", len(held), exc)

    def _read(self, entries: list[PoppedEntry]) -> list[_Ready]:
        """The popped messages with their leases read, without those that have
        nothing to run."""
        decoded: list[tuple[PoppedEntry, Message | None]] = []
        for entry in entries:
            try:
                job_id, lease, _ = decode_job_message(entry.data)
                decoded.append((entry, (job_id, lease)))
            except ForgedMessage:  # the handler thread's deserializer logs and refuses it
                decoded.append((entry, None))
        messages = [m for _, m in decoded if m is not None]
        try:
            claims: dict[Message, attempts.Claimed] | None = self.read_leases(messages)
        except Exception as exc:  # the handlers read them again, with their retries
            log.warning("prefetch: lease read of %d job(s) failed: %s", len(messages), exc)
            claims = None
        now = time.monotonic()
        ready = []
        refused = []
        for entry, message in decoded:
            if message is None:
                ready.append(_Ready(entry, None, 0, None, now))
            elif claims is None:
                ready.append(_Ready(entry, message[0], message[1], None, now))
            elif message in claims:
                ready.append(_Ready(entry, message[0], message[1], claims[message], now))
            else:
                log.debug("job %s: nothing to run (stale message, cancelled)", message[0])
                refused.append(message)
        if refused and self.release is not None:
            # the ledger refuses these deliveries: no worker holds them (the reconciler must
            # not take them for a worker's death)
            self.release(refused)
        return ready

    def run(self) -> None:
        while not self._stopping.is_set():
            overdue: list[_Ready] = []
            with self._cond:
                reading = False
                while not (self._stopping.is_set() or self._should_read_ahead()):
                    overdue = self._overdue()
                    reading = self._should_read_leases()
                    if overdue or reading:
                        break
                    self.idle_checks += 1  # looked, and nothing to read ahead now
                    self._cond.wait(self.config.hold_seconds / 2)
                if self._stopping.is_set():
                    break
                if not (overdue or reading):
                    self._fetching = True  # handlers that come now wait for it: none pops
                    count = self.config.ahead(self._mean_run) - len(self._ready)
                    taken = self._taken
            if overdue:
                self._give_back(overdue)
                continue
            if reading:
                self._read_unread()
                continue
            entries: list[PoppedEntry] = []
            ready: list[_Ready] = []
            try:
                entries = self.pop_ready(count)
                ready = self._read(entries) if entries else []
            except Exception as exc:  # Redis down: tried again once another job has started
                log.warning("prefetch: cannot read from the queue: %s", exc)
            finally:
                with self._cond:
                    self._fetching = False
                    self._ready.extend(ready)
                    if not entries:
                        self._taken_at_miss = taken
                    self._cond.notify_all()  # handlers waiting for this read-ahead
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
