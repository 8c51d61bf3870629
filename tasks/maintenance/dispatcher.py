"""Dispatcher: moves due ``queued`` jobs into Redis, best first, keeping at most a bounded
window of messages per queue (so priority stays global and lost messages are detectable)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from db import ledger
from db.engine import transaction
from db.locks import try_xact_lock
from tasks.broker import QueueStorage, encode_job_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatcherConfig:
    window: int = 200  # messages per queue allowed to wait in Redis
    interval: float = 0.5


class Dispatcher:
    name = "dispatcher"

    def __init__(self, engine: Engine, storage: QueueStorage, config: DispatcherConfig) -> None:
        self.engine = engine
        self.storage = storage
        self.config = config
        self.interval = config.interval
        self.backlog = False  # True when the last pass left due jobs behind (window full)

    def run_once(self) -> int:
        pushes: dict[str, list[tuple[bytes, int]]] = {}
        backlog = False
        with transaction(self.engine) as conn:
            if not try_xact_lock(conn, self.name):
                return 0
            for queue in ledger.queues_with_queued_jobs(conn):
                free = self.config.window - self.storage.size_of(queue)
                if free <= 0:
                    backlog = True
                    continue
                rows = ledger.dispatch(conn, queue, free)
                backlog = backlog or len(rows) == free
                pushes[queue] = [
                    (encode_job_message(r.id, r.timeout_seconds), r.priority) for r in rows
                ]
        # after commit: a crash here leaves rows `dispatched` that the reconciler requeues
        for queue, items in pushes.items():
            self.storage.push(queue, items)
        self.backlog = backlog
        return sum(len(items) for items in pushes.values())
