"""Dispatcher: moves due ``queued`` jobs into Redis, best first, keeping at most a bounded
window of messages per queue (so priority stays global and lost messages are detectable).

Paused queues get nothing. Job types with a concurrency limit or a rate limit are metered
here: each pass dispatches at most what their limit allows, counting the jobs already
dispatched or running (concurrency) or started within the period (rate), across all workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from db import ledger
from db.engine import transaction, write
from db.locks import lock_key
from tasks import registry
from tasks.broker import QueueStorage, encode_job_message

log = logging.getLogger(__name__)


def _messages(rows: list[Any]) -> list[tuple[bytes, int]]:
    """``(message, priority)`` of dispatched rows, in their order, for ``QueueStorage.push``."""
    return [(encode_job_message(r.id, r.lease, r.timeout_seconds), r.priority) for r in rows]


@dataclass(frozen=True)
class DispatcherConfig:
    window: int = 200  # messages per queue allowed to wait in Redis
    interval: float = 0.5
    #: while a queue's window is the limit, refill it once this share of it has drained:
    #: a pass sends a batch, not the few messages taken since the last pass
    refill_share: float = 0.25


class Dispatcher:
    name = "dispatcher"

    def __init__(self, engine: Engine, storage: QueueStorage, config: DispatcherConfig) -> None:
        self.engine = engine
        self.storage = storage
        self.config = config
        self.interval = config.interval
        self.backlog = False  # True when the last pass left due jobs behind (window full)
        self._full: set[str] = set()  # the queues whose window that pass filled

    def needs_refill(self) -> bool:
        """While backlogged: has a full window drained enough to be worth a pass? (Redis only;
        no database work while the workers drain the window.)"""
        room = max(1, int(self.config.window * self.config.refill_share))
        return any(self.config.window - self.storage.size_of(q) >= room for q in self._full)

    def _allowances(self, conn: Connection) -> dict[str, int]:
        """How many more jobs of each metered type may be dispatched now."""
        metered = registry.limited_types()
        active = ledger.active_counts(conn, [t.name for t in metered if t.concurrency])
        allowed: dict[str, int] = {}
        for t in metered:
            room = []
            if t.concurrency is not None:
                room.append(t.concurrency - active.get(t.name, 0))
            if t.rate_limit is not None:
                used = ledger.starts_since(conn, t.name, t.rate_limit.period_seconds)
                room.append(t.rate_limit.count - used)
            allowed[t.name] = max(0, min(room))
        return allowed

    def run_queues(self, queues: set[str]) -> int:
        """A wake-up that names the queues that got new jobs (PostgreSQL NOTIFY): each is
        dispatched with one autocommit statement, its window read from Redis first. Falls
        back to a full pass when job types are metered or the ledger is SQLite."""
        if registry.limited_types() or self.engine.dialect.name != "postgresql":
            return self.run_once()
        key = lock_key(self.name)
        sent = 0
        for queue in sorted(queues):
            free = self.config.window - self.storage.size_of(queue)
            if free <= 0:
                self._full.add(queue)
                self.backlog = True
                continue
            with write(self.engine) as conn:
                rows = ledger.dispatch_queue_now(conn, queue, free, key)
            self.storage.push(queue, _messages(rows))
            if len(rows) == free:
                self._full.add(queue)
                self.backlog = True
            sent += len(rows)
        return sent

    def run_once(self) -> int:
        pushes: dict[str, list[tuple[bytes, int]]] = {}
        backlog = False
        full: set[str] = set()
        with transaction(self.engine) as conn:
            plan = ledger.dispatch_plan(conn, lock_key(self.name))
            if not plan.locked:
                return 0
            if not plan.queues:
                self.backlog = False
                self._full = set()
                return 0
            allowed = self._allowances(conn)
            for queue in plan.queues:
                if queue in plan.paused:
                    continue
                free = self.config.window - self.storage.size_of(queue)
                if free <= 0:  # workers are busy or absent: wait for the next poll
                    full.add(queue)
                    continue
                rows = []
                for type_name, room in allowed.items():
                    if room > 0 and free > 0:
                        picked = ledger.dispatch(conn, queue, min(room, free), only_type=type_name)
                        allowed[type_name] -= len(picked)
                        free -= len(picked)
                        rows.extend(picked)
                if free > 0:
                    general = ledger.dispatch(conn, queue, free, exclude_types=list(allowed))
                    if len(general) == free:
                        backlog = True
                        full.add(queue)
                    rows.extend(general)
                rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
                pushes[queue] = _messages(rows)
        # after commit: a crash here leaves rows `dispatched` that the reconciler requeues
        for queue, items in pushes.items():
            self.storage.push(queue, items)
        self.backlog = backlog
        self._full = full
        return sum(len(items) for items in pushes.values())
