"""Reconciler: ``dispatched`` jobs whose message (job id and lease) is no longer in Redis and
that no worker started (Redis flushed or restarted, a push that never happened, a worker
killed between its pop and its start record) go back to ``queued``, giving their attempt
back. Their lease stays used, so a worker that still holds such a message writes nothing.

A job counts as lost only when two passes in a row find it so. One pass reads the ledger, then
Redis: a message popped between the two reads is in neither, while its worker is running it
and will record it within milliseconds (start records come 50 ms after the start, outcomes
sooner). By the next pass such a job is no longer ``dispatched``; a lost one still is."""

from __future__ import annotations

import logging
import uuid
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
        self._suspects: set[tuple[uuid.UUID, int]] = set()  # missing in the previous pass

    def run_once(self) -> int:
        with read(self.engine) as conn:
            candidates = ledger.dispatched_before(conn, self.config.grace_seconds)
        missing = set()
        for queue, ids in candidates.items():
            in_redis = self.storage.window_leases(queue)  # read after the ledger
            missing.update(lease for lease in ids if lease not in in_redis)
        lost = sorted(missing & self._suspects)
        self._suspects = missing - self._suspects
        if not lost:
            return 0
        with write(self.engine) as conn:
            n = ledger.requeue_lost(conn, lost)
        if n:
            log.warning("requeued %d dispatched job(s) whose message was lost", n)
        return n
