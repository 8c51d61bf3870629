"""Reconciler: ``dispatched`` jobs whose message (job id and lease) is no longer in Redis and
that no worker recorded as started.

- **No worker took it** (Redis flushed or restarted, a push that never happened): back to
  ``queued``, giving the attempt back (``cancelled`` if a cancel was requested). The lease
  stays used, so a message that turns up later starts nothing.
- **A worker took it** (its delivery mark in Redis still holds the lease: the worker died
  between its pop and its start record, or a job killed it at once): the delivery counts as
  an attempt, like a rescued one: ``retrying``, ``failed`` when none is left, ``cancelled``
  if a cancel was requested, with an ``errors`` entry that says so. A job that kills its
  worker therefore uses up its attempts instead of crash-looping workers for ever.
- A job given back :data:`db.ledger.MAX_GIVEN_BACK` times already is counted the same way, so
  even without marks (Redis lost them) no job circles for ever.

A job counts as lost only when two passes in a row find it so. One pass reads the ledger, then
Redis: a message popped between the two reads is in neither, while its worker is running it
and will record it within milliseconds (start records come 50 ms after the start, outcomes
sooner). By the next pass such a job is no longer ``dispatched``; a lost one still is."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from db.engine import read, write
from db.ledger import attempts, core, maintainer
from tasks import registry
from tasks.transport.broker import QueueStorage

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
            candidates = maintainer.dispatched_before(conn, self.config.grace_seconds)
        missing: set[tuple[uuid.UUID, int]] = set()
        for queue, ids in candidates.items():
            in_redis = self.storage.window_leases(queue)  # read after the ledger
            missing.update(lease for lease in ids if lease not in in_redis)
        lost = sorted(missing & self._suspects)
        self._suspects = missing - self._suspects
        if not lost:
            return 0
        taken = self.storage.delivered(lost)
        with write(self.engine) as conn:
            n = maintainer.requeue_lost(conn, [d for d in lost if d not in taken])
        if n:
            log.warning("requeued %d dispatched job(s) whose message was lost", n)
        with read(self.engine) as conn:
            counted = maintainer.still_dispatched(conn, lost)
        for job in counted:
            n += self._count_attempt(job, taken=(job.id, job.lease) in taken)
        return n

    def _count_attempt(self, job: Any, *, taken: bool) -> int:
        """End a delivery that no worker recorded as started as a failed attempt."""
        reason = (
            "worker lost: it took the job from the queue and died before recording its start"
            if taken
            else f"delivered {maintainer.MAX_GIVEN_BACK} times without a recorded start"
        )
        entry = core.error_entry(
            job.attempt, f"Rescued: {reason}", traceback=None, worker=None, kind="rescued"
        )
        delay = registry.retry_delay(job.type, job.attempt)
        with write(self.engine) as conn:
            status = attempts.fail_attempt(conn, job.id, job.lease, entry, delay)
        if status is None:
            return 0
        log.warning("job %s attempt %d: %s -> %s", job.id, job.attempt, reason, status)
        return 1
