"""Reconciler: ``dispatched`` jobs whose message (job id and lease) is no longer in Redis and
that no worker started (Redis flushed or restarted, a push that never happened, a worker
killed between its pop and its start record) go back to ``queued``, giving their attempt
back. Their lease stays used, so a worker that still holds such a message writes nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from db import ledger
from db.engine import read, write
from tasks.broker import QueueStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcilerConfig:
    interval: float = 2.0
    grace_seconds: float = 5.0  # a popped message is recorded started within milliseconds


class Reconciler:
    name = "reconciler"

    def __init__(self, engine: Engine, storage: QueueStorage, config: ReconcilerConfig) -> None:
        self.engine = engine
        self.storage = storage
        self.config = config
        self.interval = config.interval

    def run_once(self) -> int:
        with read(self.engine) as conn:
            candidates = ledger.dispatched_before(conn, self.config.grace_seconds)
        lost = []
        for queue, ids in candidates.items():
            in_redis = self.storage.window_leases(queue)  # read after the ledger
            lost.extend(lease for lease in ids if lease not in in_redis)
        if not lost:
            return 0
        with write(self.engine) as conn:
            n = ledger.requeue_lost(conn, lost)
        if n:
            log.warning("requeued %d dispatched job(s) whose message was lost", n)
        return n
