"""Direct dispatch: a producer that submits one due job to an idle queue sends it itself.

The usual path of a new job is INSERT (``queued``) → NOTIFY → the maintainer wakes, reads the
queue's window in Redis, dispatches (one UPDATE and its commit) → pushes the message. When the
queue is idle, none of that decides anything: no job waits in the ledger that the new one
could overtake, the queue is not paused and its window has room. Then the producer's INSERT
writes the row already ``dispatched`` (attempt 1, lease 1; ``producer.insert_batch_dbapi``
with a window checks the three conditions in the same statement) and, after the commit, the
producer pushes the message. A job reaches a worker with one database round trip and one
Redis push, like a plain Huey ``enqueue`` plus the ledger's commit.

What does not change: the row exists (committed) before its message; a worker still reads
the lease before running it; a push that fails or never happens (the producer died) leaves a
``dispatched`` row that is not in Redis, which the reconciler sends again after its grace
period, exactly as for a dispatcher that died between its commit and its push. Jobs with a
schedule, an idempotency or unique key, a periodic tick, a partition, or a concurrency or rate
limit, bulk
submits, and the embedded SQLite mode keep the usual path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from functools import lru_cache

import redis
from sqlalchemy import Engine

from db.driver import driver_for
from db.engine import driver_write
from db.ledger import producer
from db.settings import Settings
from tasks import registry
from tasks.transport.broker import LedgerRedisStorage, encode_job_message
from tasks.transport.group_commit import GroupCommit

log = logging.getLogger(__name__)

#: seconds a producer waits for Redis before leaving the job to the reconciler
PUSH_TIMEOUT = 2.0
#: after a failed push, this process submits the usual way for this many seconds
BACKOFF_SECONDS = 5.0


class DirectDispatch:
    """One per process and Redis: inserts eligible jobs dispatched and pushes their messages.

    Concurrent submits are written together (``tasks.transport.group_commit``): one statement
    inserts the batch and one ``ZADD`` per queue sends the messages of its dispatched jobs."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        pool = redis.ConnectionPool.from_url(
            redis_url, socket_timeout=PUSH_TIMEOUT, socket_connect_timeout=PUSH_TIMEOUT
        )
        self.storage = LedgerRedisStorage(namespace, connection_pool=pool)
        self._off_until = 0.0
        self._groups: dict[tuple[Engine, int], GroupCommit[producer.NewJob]] = {}
        self._groups_lock = threading.Lock()

    def submit(self, engine: Engine, new: producer.NewJob, window: int) -> None:
        """Insert ``new`` (dispatched when its queue is idle, else queued) and push its message."""
        self.group(engine, window).run(new)

    def group(self, engine: Engine, window: int) -> GroupCommit[producer.NewJob]:
        """The group commit of submits to ``engine`` (the hot-path engine in production)."""
        key = (engine, window)
        group = self._groups.get(key)
        if group is None:
            with self._groups_lock:
                group = self._groups.setdefault(
                    key, GroupCommit(lambda batch: self._write(engine, window, batch))
                )
        return group

    def _write(self, engine: Engine, window: int, batch: list[producer.NewJob]) -> None:
        leases: dict[uuid.UUID, int] = {}
        with driver_write(engine) as conn:
            sending = time.monotonic() >= self._off_until  # not after a failed push
            leases = producer.insert_batch_dbapi(
                conn, engine.dialect, batch, window if sending else 0
            )
        # queued jobs: the insert's NOTIFY wakes the dispatcher
        self._push([new for new in batch if new.id in leases], leases)

    def _push(self, sent: list[producer.NewJob], leases: dict[uuid.UUID, int]) -> None:
        by_queue: dict[str, list[tuple[bytes, int]]] = {}
        for new in sent:
            message = encode_job_message(new.id, leases[new.id], new.timeout_seconds)
            by_queue.setdefault(new.queue, []).append((message, new.priority))
        try:
            self.storage.push_many(by_queue)
        except (redis.RedisError, OSError) as exc:
            self._off_until = time.monotonic() + BACKOFF_SECONDS
            log.warning(
                "%d job(s) (%s) are saved but their messages were not sent (%s); the "
                "reconciler sends them again after its grace period. Submitting without "
                "direct dispatch for %.0f s.",
                len(sent),
                ", ".join(str(new.id) for new in sent[:5]),
                exc,
                BACKOFF_SECONDS,
            )


def eligible(settings: Settings, engine: Engine, new: producer.NewJob) -> bool:
    """Whether ``new`` may be dispatched by its producer (see the module docstring)."""
    if not (settings.queue_direct_dispatch and settings.redis_url):
        return False
    if not driver_for(engine).prepared_hot_path:  # its writes go through driver_write
        return False
    if not new.due_without_keys:
        return False
    return not registry.get(new.type).metered


@lru_cache(maxsize=4)
def for_redis(redis_url: str, namespace: str) -> DirectDispatch:
    return DirectDispatch(redis_url, namespace)
