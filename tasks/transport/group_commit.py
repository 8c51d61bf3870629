"""Group commit: concurrent callers' writes sent together, each caller back once its own is
durable.

A thread that submits while fewer than ``max_in_flight`` batches are being written becomes a
*leader*: it writes its own item together with every item that is waiting (up to
``max_batch``), in one statement and one commit. A thread that arrives while the limit is
reached waits; when a leader finishes, it hands the lead to the first waiting thread, which
writes the next batch, and wakes the callers whose items it wrote. So:

- a lone caller writes its item at once, on its own thread: no hand-off, no added delay;
- under load, one commit (one WAL flush and one round trip) serves many callers, and the
  number of connections in use stays at ``max_in_flight`` whatever the number of threads;
- every caller returns only after the batch holding its item has been written, with that
  batch's error if it failed (a batch is one statement: all its items or none are written);
- waiting items are taken in arrival order.

This is the group commit of database servers, done in the producer so that PostgreSQL
receives one multi-row INSERT instead of one INSERT per thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("done", "error", "item", "lead")

    def __init__(self, item: T) -> None:
        self.item = item
        self.lead = False
        self.error: BaseException | None = None
        self.done = threading.Event()


class GroupCommit(Generic[T]):
    """Writes items of concurrent callers in batches with ``write_batch(items)``."""

    def __init__(
        self,
        write_batch: Callable[[list[T]], None],
        *,
        max_batch: int = 100,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._write_batch = write_batch
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child starts idle

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Waiter[T]] = []
        self._in_flight = 0
        #: batches written and items in them (for benchmarks and tests)
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Callers waiting for a batch to take their items."""
        return len(self._waiting)

    def run(self, item: T) -> None:
        """Write ``item`` (with whatever else is waiting); return once it is written, or raise
        the error of the batch that held it."""
        with self._lock:
            lead = self._in_flight < self.max_in_flight
            if lead:
                self._in_flight += 1
            else:
                me = _Waiter(item)
                self._waiting.append(me)
        if lead:
            self._lead(item)
            return
        me.done.wait()
        if me.lead:  # handed the lead: our item heads the next batch
            self._lead(item)
            return
        if me.error is not None:
            raise me.error

    def _lead(self, item: T) -> None:
        with self._lock:
            followers = self._waiting[: self.max_batch - 1]
            del self._waiting[: len(followers)]
        error: BaseException | None = None
        try:
            self._write_batch([item, *(w.item for w in followers)])
        except BaseException as exc:  # every caller of the batch gets it
            error = exc
        with self._lock:
            self.batches += 1
            self.items += 1 + len(followers)
            if self._waiting:
                successor = self._waiting.pop(0)
                successor.lead = True
                successor.done.set()
            else:
                self._in_flight -= 1
        for w in followers:
            w.error = error
            w.done.set()
        if error is not None:
            raise error
