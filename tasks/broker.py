"""The Huey transport: one Redis sorted set (or SQLite table rows) per queue, carrying job ids.

Redis is only the doorbell: a message is ``{"v": 2, "id": <job id>, "lease": <n>, "timeout":
<s>}`` as JSON, never pickle, so nothing read from Redis can run code. A message that is not
exactly that shape is refused (logged) and dropped; the ledger still has the job and the
reconciler re-dispatches it. The lease is the fence token the dispatcher took for this
delivery (``queue_jobs.lease``): a worker runs the message only while it is the job's lease.
"""

from __future__ import annotations

import json
import logging
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from huey import Huey
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import PriorityRedisStorage, SqliteStorage

from db.settings import Settings

log = logging.getLogger(__name__)

#: Huey's registry name of the one task every message runs (``tasks.worker.run_job``).
RUN_JOB_TASK = "tasks.worker.run_job"
_MESSAGE_KEYS = {"v", "id", "lease", "timeout"}
MESSAGE_VERSION = 2


class ForgedMessage(ValueError):
    """A message in the queue that this system did not write."""


def encode_job_message(job_id: uuid.UUID, lease: int, timeout: float | None = None) -> bytes:
    message = {"v": MESSAGE_VERSION, "id": str(job_id), "lease": lease, "timeout": timeout}
    return json.dumps(message).encode()


def decode_job_message(data: bytes) -> tuple[uuid.UUID, int, float | None]:
    """``(job id, lease, timeout)`` of a message, or ``ForgedMessage``."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ForgedMessage("message is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != _MESSAGE_KEYS or obj["v"] != MESSAGE_VERSION:
        raise ForgedMessage("message does not have the job-message shape")
    timeout = obj["timeout"]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ForgedMessage("message timeout is not a positive number")
    lease = obj["lease"]
    if isinstance(lease, bool) or not isinstance(lease, int) or lease < 1:
        raise ForgedMessage("message lease is not a positive integer")
    try:
        return uuid.UUID(str(obj["id"])), lease, timeout
    except ValueError:
        raise ForgedMessage("message id is not a UUID") from None


class JobMessageSerializer(Serializer):
    """Huey serializer that reads and writes only job-id messages as JSON."""

    def _serialize(self, data: Message) -> bytes:
        if data.name != RUN_JOB_TASK:
            raise ForgedMessage(f"only {RUN_JOB_TASK} messages are sent, not {data.name}")
        job_id, lease = data.args
        return encode_job_message(uuid.UUID(str(job_id)), int(lease), data.timeout)

    def _deserialize(self, data: bytes) -> Message:
        try:
            job_id, lease, timeout = decode_job_message(data)
        except ForgedMessage as exc:
            log.error("rejected a message from the queue: %s (%r)", exc, data[:200])
            raise
        return Message(
            id=str(job_id),
            name=RUN_JOB_TASK,
            retries=0,
            retry_delay=0,
            args=(str(job_id), lease),
            kwargs={},
            timeout=timeout,
        )


@dataclass(frozen=True)
class PoppedEntry:
    """A message taken out of a Redis queue, with what puts it back in the same place."""

    key: str
    member: bytes  # the 8-byte FIFO prefix, then the message
    score: float  # minus the priority

    @property
    def data(self) -> bytes:
        return self.member[8:]

    @classmethod
    def of(cls, key: bytes | str, member: bytes, score: float | bytes) -> PoppedEntry:
        """From what Redis replies (``BZPOPMIN``, or ``ZPOPMIN`` inside a script)."""
        return cls(key.decode() if isinstance(key, bytes) else key, member, float(score))


class QueueStorage:
    """What the ledger needs from a Huey storage beyond Huey's own contract."""

    queues: list[str]

    def push(self, queue: str, items: Sequence[tuple[bytes, int]]) -> None:
        """Add messages ``(data, priority)`` to ``queue``, in the given order."""
        raise NotImplementedError

    def push_many(self, by_queue: Mapping[str, Sequence[tuple[bytes, int]]]) -> None:
        """:meth:`push` to several queues."""
        for queue, items in by_queue.items():
            self.push(queue, items)

    def size_of(self, queue: str) -> int:
        raise NotImplementedError

    def window(self, queue: str) -> list[bytes]:
        """Every message now waiting in ``queue`` (small by design: the dispatch window)."""
        raise NotImplementedError

    def window_leases(self, queue: str) -> set[tuple[uuid.UUID, int]]:
        """``(job id, lease)`` of every valid message waiting in ``queue``."""
        leases = set()
        for data in self.window(queue):
            try:
                job_id, lease, _ = decode_job_message(data)
            except ForgedMessage:
                continue
            leases.add((job_id, lease))
        return leases


#: ZPOPMIN with a count on the first non-empty key, as BZPOPMIN picks its key
_POP_MANY_LUA = """
for _, key in ipairs(KEYS) do
  local popped = redis.call('ZPOPMIN', key, ARGV[1])
  if #popped > 0 then return {key, popped} end
end
return false
"""


class LedgerRedisStorage(QueueStorage, PriorityRedisStorage):
    """Priority sorted set per queue; a worker pops from its queues with one BZPOPMIN."""

    def __init__(self, name: str, queues: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.queues = list(queues)
        self._keys = [self.key_for(q) for q in self.queues]
        self._pop_many = self.conn.register_script(_POP_MANY_LUA)  # no I/O until first use

    def key_for(self, queue: str) -> str:
        return f"huey.redis.{self.name}.{queue}"

    def push(self, queue: str, items: Sequence[tuple[bytes, int]]) -> None:
        if items:
            self.conn.zadd(self.key_for(queue), self._members(items))

    def push_many(self, by_queue: Mapping[str, Sequence[tuple[bytes, int]]]) -> None:
        """One round trip: a ZADD per queue, pipelined."""
        pipe = self.conn.pipeline(transaction=False)
        for queue, items in by_queue.items():
            if items:
                pipe.zadd(self.key_for(queue), self._members(items))
        pipe.execute()

    @staticmethod
    def _members(items: Sequence[tuple[bytes, int]]) -> dict[bytes, int]:
        # score orders by priority (higher first); the prefix keeps FIFO within a priority.
        # One ZADD with every member: one command, whatever the batch.
        base = int(time.time() * 1e6)
        return {struct.pack(">Q", base + i) + data: -p for i, (data, p) in enumerate(items)}

    #: set by a thread worker that prefetches (``tasks.prefetch``): handler threads take
    #: their messages from it instead of popping Redis themselves
    take: Callable[[float], bytes | None] | None = None

    def dequeue(self) -> bytes | None:
        if self.take is not None:
            return self.take(self.read_timeout)
        entry = self.pop(self.read_timeout)
        return None if entry is None else entry.data

    def pop(self, timeout: float) -> PoppedEntry | None:
        """The next message of this worker's queues (highest priority first), waiting up to
        ``timeout`` seconds for one."""
        if not self._keys:
            return None
        try:
            popped = self.conn.bzpopmin(self._keys, timeout=timeout)
        except (TimeoutError, TypeError, IndexError):
            return None
        if not popped:
            return None
        key, member, score = popped
        return PoppedEntry.of(key, member, score)

    def pop_ready(self, count: int) -> list[PoppedEntry]:
        """Up to ``count`` messages of the first of this worker's queues that has any
        (highest priority first), without waiting: one call, whatever the count."""
        if not self._keys:
            return []
        found = self._pop_many(keys=self._keys, args=[count])
        if not found:
            return []
        key, flat = found
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [PoppedEntry.of(key, member, score) for member, score in pairs]

    def give_back(self, entries: Sequence[PoppedEntry]) -> None:
        """Put popped messages back where they were (same score, same FIFO prefix)."""
        with self.conn.pipeline(transaction=False) as pipe:
            for e in entries:
                pipe.zadd(e.key, {e.member: e.score})
            pipe.execute()

    def size_of(self, queue: str) -> int:
        return int(self.conn.zcard(self.key_for(queue)))

    def window(self, queue: str) -> list[bytes]:
        return [m[8:] for m in self.conn.zrange(self.key_for(queue), 0, -1)]

    def queue_size(self) -> int:
        return sum(self.size_of(q) for q in self.queues)


class LedgerSqliteStorage(QueueStorage, SqliteStorage):
    """The embedded transport: SqliteHuey's task table, one ``queue`` value per queue."""

    def __init__(self, name: str, queues: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.queues = list(queues)
        self._keys = [self.key_for(q) for q in self.queues]

    def key_for(self, queue: str) -> str:
        return f"{self.name}.{queue}"

    def push(self, queue: str, items: Sequence[tuple[bytes, int]]) -> None:
        if not items:
            return
        key = self.key_for(queue)
        with self.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [(key, self.to_blob(data), priority) for data, priority in items],
            )

    def dequeue(self) -> bytes | None:
        if not self._keys:
            return None
        marks = ",".join("?" for _ in self._keys)
        with self.db(commit=True) as curs:
            curs.execute(
                f"select id, data from task where queue in ({marks}) "
                "order by priority desc, id limit 1",
                self._keys,
            )
            row = curs.fetchone()
            if row is None:
                return None
            curs.execute("delete from task where id = ?", (row[0],))
            return bytes(row[1]) if curs.rowcount == 1 else None

    def size_of(self, queue: str) -> int:
        rows = self.sql(
            "select count(*) from task where queue = ?", (self.key_for(queue),), results=True
        )
        return int(rows[0][0])

    def window(self, queue: str) -> list[bytes]:
        rows = self.sql(
            "select data from task where queue = ? order by priority desc, id",
            (self.key_for(queue),),
            results=True,
        )
        return [bytes(r[0]) for r in rows]

    def queue_size(self) -> int:
        return sum(self.size_of(q) for q in self.queues)


class LedgerHuey(Huey):
    """Huey whose tasks are ledger jobs: no Huey retries, revokes or results (the ledger
    owns those), JSON job-id messages, one storage key per queue."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False  # cancellation lives in the ledger; skips a Redis round trip per job

    def delete(self, key: str) -> bool:
        if isinstance(key, str) and key.startswith("r:"):
            return False  # Huey clears a revoke flag after every task: we never set one
        return bool(super().delete(key))


def make_huey(settings: Settings, queues: Iterable[str] = ()) -> LedgerHuey:
    """The Huey instance for these settings, listening on ``queues`` (producers pass none)."""
    common: dict[str, Any] = {
        "results": False,
        "utc": True,
        "serializer": JobMessageSerializer(),
        "queues": list(queues),
    }
    if settings.redis_url:
        return LedgerHuey(
            settings.queue_namespace,
            storage_class=LedgerRedisStorage,
            url=settings.redis_url,
            **common,
        )
    settings.huey_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return LedgerHuey(
        settings.queue_namespace,
        storage_class=LedgerSqliteStorage,
        filename=str(settings.huey_sqlite_path),
        **common,
    )


def storage_of(huey: Huey) -> QueueStorage:
    storage = huey.storage
    assert isinstance(storage, QueueStorage)
    return storage
