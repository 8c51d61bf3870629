"""Dispatcher: moves due ``queued`` jobs into Redis, best first, keeping at most a bounded
window of messages per queue (so priority stays global and lost messages are detectable).

Paused queues get nothing. Job types with a concurrency limit or a rate limit are metered
here: each pass dispatches at most what their limit allows, counting the jobs already
dispatched or running (concurrency) or started within the period (rate), across all workers.

Partitioned types (``@job(partition_by=...)``, fair share) are dispatched by partition: the
limits hold per partition, and jobs of equal priority are taken one per partition per round,
the partitions in turn (a cursor per queue and type goes round their keys). A queue that
holds partitioned jobs keeps at most ``fair_window`` messages in Redis, so a partition's new
job waits behind at most that many jobs of other partitions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from db import partitions
from db.driver import driver_for
from db.engine import transaction, write
from db.ledger import maintainer
from db.locks import lock_key
from tasks import registry
from tasks.transport.broker import QueueStorage, encode_job_message

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
    #: fair share: messages a queue holding partitioned jobs may have waiting in Redis
    fair_window: int = 20
    #: fair share: partitions of a type a pass considers (the next ones on the next pass)
    fair_partitions: int = 100


class Dispatcher:
    name = "dispatcher"

    def __init__(self, engine: Engine, storage: QueueStorage, config: DispatcherConfig) -> None:
        self.engine = engine
        self.storage = storage
        self.config = config
        self.interval = config.interval
        self.backlog = False  # True when the last pass left due jobs behind (window full)
        #: the queues whose window that pass filled, with that window's size
        self._full: dict[str, int] = {}
        #: fair share: per (queue, type), the partition served last (the next pass starts after)
        self._cursor: dict[tuple[str, str], str] = {}
        #: fair share: queues holding partitioned jobs whose last look for other jobs found
        #: none, and when (monotonic). That look walks the queue's partitioned jobs in dispatch
        #: order, so it is skipped for ``interval`` unless a wake-up names the queue
        self._no_others: dict[str, float] = {}

    def needs_refill(self) -> bool:
        """While backlogged: has a full window drained enough to be worth a pass? (Redis only;
        no database work while the workers drain the window.)"""
        share = self.config.refill_share
        return any(
            window - self.storage.size_of(q) >= max(1, int(window * share))
            for q, window in self._full.items()
        )

    def _allowances(self, conn: Connection) -> dict[str, int]:
        """How many more jobs of each metered type without partitions may be dispatched now."""
        metered = [t for t in registry.limited_types() if t.partition_by is None]
        active = maintainer.active_counts(conn, [t.name for t in metered if t.concurrency])
        allowed: dict[str, int] = {}
        for t in metered:
            room = []
            if t.concurrency is not None:
                room.append(t.concurrency - active.get(t.name, 0))
            if t.rate_limit is not None:
                used = maintainer.starts_since(conn, t.name, t.rate_limit.period_seconds)
                room.append(t.rate_limit.count - used)
            allowed[t.name] = max(0, min(room))
        return allowed

    def _partition_room(
        self, conn: Connection, job_type: registry.JobType, keys: list[str], most: int
    ) -> dict[str, int]:
        """How many more jobs each partition may have dispatched now (at most ``most``)."""
        room = dict.fromkeys(keys, most)
        if job_type.concurrency is not None:
            active = partitions.active_by_partition(conn, job_type.name, keys)
            for key in keys:
                room[key] = min(room[key], job_type.concurrency - active.get(key, 0))
        if job_type.rate_limit is not None:
            limit = job_type.rate_limit
            used = partitions.starts_by_partition(conn, job_type.name, keys, limit.period_seconds)
            for key in keys:
                room[key] = min(room[key], limit.count - used.get(key, 0))
        return room

    def _fair_pass(
        self, conn: Connection, queue: str, types: list[registry.JobType], room: int
    ) -> tuple[list[Any], bool]:
        """Dispatch up to ``room`` jobs of the partitioned ``types`` in ``queue``, round-robin
        across partitions. Returns the rows (in the order to push them) and whether the queue
        holds queued partitioned jobs at all (then its window is the fair window)."""
        rows: list[Any] = []
        found = False
        for job_type in types:
            cursor = (queue, job_type.name)
            keys = partitions.queued_partitions(
                conn,
                queue,
                job_type.name,
                after=self._cursor.get(cursor, ""),
                limit=self.config.fair_partitions if room > 0 else 1,
            )
            found = found or bool(keys)
            if not keys or room <= 0:
                continue
            # each partition's best jobs, about two rounds' worth: the pass reads O(room) rows
            share = max(1, -(-2 * room // len(keys)))
            caps = self._partition_room(conn, job_type, keys, share)
            best = partitions.best_queued(conn, queue, job_type.name, caps)
            chosen = partitions.round_robin(best, keys, room)
            if chosen:
                self._cursor[cursor] = chosen[-1].partition_key
            by_id = {r.id: r for r in maintainer.dispatch_ids(conn, [c.id for c in chosen])}
            picked = [by_id[c.id] for c in chosen if c.id in by_id]  # a cancelled one is gone
            rows.extend(picked)
            room -= len(picked)
        return rows, found

    def run_queues(self, queues: set[str]) -> int:
        """A wake-up that names the queues that got new jobs (PostgreSQL NOTIFY): each is
        dispatched with one autocommit statement, its window read from Redis first. Falls
        back to a full pass when job types are metered or the ledger has no notifications."""
        if registry.limited_types() or not driver_for(self.engine).notifies:
            return self.run_once(woken_for=queues)
        key = lock_key(self.name)
        sent = 0
        for queue in sorted(queues):
            free = self.config.window - self.storage.size_of(queue)
            if free <= 0:
                self._full[queue] = self.config.window
                self.backlog = True
                continue
            with write(self.engine) as conn:
                rows = maintainer.dispatch_queue_now(conn, queue, free, key)
            self.storage.push(queue, _messages(rows))
            if len(rows) == free:
                self._full[queue] = self.config.window
                self.backlog = True
            sent += len(rows)
        return sent

    def _others_worth_a_look(self, queue: str, woken_for: set[str] | None) -> bool:
        """Whether to look for a partitioned queue's other (unpartitioned) jobs this pass."""
        since = self._no_others.get(queue)
        if since is None or (woken_for is not None and queue in woken_for):
            return True
        return time.monotonic() - since >= self.interval

    def run_once(self, woken_for: set[str] | None = None) -> int:
        """One full pass over every queue with queued jobs. ``woken_for``: the queues a
        wake-up named (new jobs there)."""
        pushes: dict[str, list[tuple[bytes, int]]] = {}
        backlog = False
        full: dict[str, int] = {}
        with transaction(self.engine) as conn:
            plan = maintainer.dispatch_plan(conn, lock_key(self.name))
            if not plan.locked:
                return 0
            if not plan.queues:
                self.backlog = False
                self._full = {}
                return 0
            allowed = self._allowances(conn)
            fair_types = [t for t in registry.limited_types() if t.partition_by is not None]
            for queue in plan.queues:
                if queue in plan.paused:
                    continue
                size = self.storage.size_of(queue)
                window = self.config.window
                fair: list[Any] = []
                found = False
                if fair_types:
                    # the partitioned jobs get half the room first, the others the rest, then
                    # the partitioned jobs what the others left (neither starves the other)
                    fair_room = min(window, self.config.fair_window) - size
                    fair, found = self._fair_pass(conn, queue, fair_types, -(-fair_room // 2))
                    if found:  # partitioned jobs wait: the whole queue keeps the fair window
                        window = min(window, self.config.fair_window)
                free = window - size - len(fair)
                if free <= 0:  # workers are busy or absent: wait until the window drains
                    full[queue] = window
                    backlog = backlog or window < self.config.window
                    if fair:
                        pushes[queue] = _messages(fair)
                    continue
                rows = []
                for type_name, room in allowed.items():
                    if room > 0 and free > 0:
                        picked = maintainer.dispatch(
                            conn, queue, min(room, free), only_type=type_name
                        )
                        allowed[type_name] -= len(picked)
                        free -= len(picked)
                        rows.extend(picked)
                if free > 0 and (not found or self._others_worth_a_look(queue, woken_for)):
                    general = maintainer.dispatch(
                        conn,
                        queue,
                        free,
                        exclude_types=list(allowed),
                        unpartitioned_of=[t.name for t in fair_types],
                    )
                    rows.extend(general)
                    free -= len(general)
                    if found and not general:
                        self._no_others[queue] = time.monotonic()
                    else:
                        self._no_others.pop(queue, None)
                if found and free > 0:
                    more, _ = self._fair_pass(conn, queue, fair_types, free)
                    fair.extend(more)
                    free -= len(more)
                if free == 0:
                    backlog = True
                    full[queue] = window
                rows.sort(key=lambda r: (-r.priority, r.scheduled_at, r.id))
                # the fair rows keep their round-robin order among jobs of their priority
                pushes[queue] = _messages(sorted(fair + rows, key=lambda r: -r.priority))
        # after commit: a crash here leaves rows `dispatched` that the reconciler requeues
        for queue, items in pushes.items():
            self.storage.push(queue, items)
        self.backlog = backlog
        self._full = full
        return sum(len(items) for items in pushes.values())
