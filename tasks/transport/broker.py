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
from redis.exceptions import NoScriptError

from db.settings import Settings

log = logging.getLogger(__name__)

#: Huey's registry name of the one task every message runs (``tasks.worker.runtime.run_job``).
RUN_JOB_TASK = "tasks.worker.runtime.run_job"
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
    text = obj["id"]
    try:
        job_id = uuid.UUID(text) if isinstance(text, str) else None
    except ValueError:
        job_id = None
    # only the canonical spelling: the delivery gate marks the id exactly as written
    if job_id is None or str(job_id) != text:
        raise ForgedMessage("message id is not a UUID in canonical form")
    return job_id, lease, timeout


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
        """From what Redis replies (``ZPOPMIN`` inside the pop script)."""
        return cls(key.decode() if isinstance(key, bytes) else key, member, float(score))


class QueueStorage:
    """What the ledger needs from a Huey storage beyond Huey's own contract."""

    queues: list[str]
    #: True when a pop marks its delivery taken atomically (Redis): a copy of a message
    #: never reaches a handler. False: workers claim each attempt in the ledger instead.
    marks_deliveries: bool = False

    def release(self, deliveries: Sequence[tuple[uuid.UUID, int]]) -> None:
        """Forget the marks of deliveries whose start or outcome the ledger has recorded."""

    def block_delivery(self, job_id: uuid.UUID, lease: int) -> bool:
        """Mark ``(job_id, lease)`` taken unless a worker took it first (cancel). True: no
        worker will ever start it."""
        raise NotImplementedError

    def delivered(self, deliveries: Sequence[tuple[uuid.UUID, int]]) -> set[tuple[uuid.UUID, int]]:
        """The deliveries a worker popped (their mark still holds that lease)."""
        return set()

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


#: The delivery gate, shared by the scripts below. A message's ``(job id, lease)`` is marked
#: taken in Redis in the same script that pops it: the key ``<mark prefix><job id>`` holds the
#: highest lease popped for the job. A copy of a message already taken (same id, same or an
#: older lease) is dropped inside the script, so it never reaches a handler: one start per
#: delivery, whatever Redis holds (docs/architecture.md, "One start per delivery").
#: A member this system did not write is returned unmarked: the worker's decoder refuses it.
_TAKE_LUA = """
local function take(member, prefix, ttl)
  local ok, msg = pcall(cjson.decode, string.sub(member, 9))
  if not ok or type(msg) ~= 'table' or type(msg.id) ~= 'string'
     or type(msg.lease) ~= 'number' then
    return true
  end
  local mark = prefix .. msg.id
  local held = tonumber(redis.call('GET', mark) or '0') or 0
  if held >= msg.lease then return false end
  redis.call('SET', mark, string.format('%d', msg.lease), 'EX', ttl)
  return true
end
"""

#: ZPOPMIN with a count on the first non-empty queue (``KEYS[1..ARGV[4]]``, in the worker's
#: order), each message marked taken; copies of taken messages are dropped. Replies ``{key,
#: {member, score, ...}, dropped}``, or false when every queue is empty: then it also clears
#: the queues' doorbells (the other KEYS), so a waiting worker is woken only for new messages.
_POP_MANY_LUA = (
    _TAKE_LUA
    + """
for q = 1, tonumber(ARGV[4]) do
  local key = KEYS[q]
  local popped = redis.call('ZPOPMIN', key, ARGV[1])
  if #popped > 0 then
    local out, dropped = {}, 0
    for i = 1, #popped, 2 do
      if take(popped[i], ARGV[2], ARGV[3]) then
        table.insert(out, popped[i])
        table.insert(out, popped[i + 1])
      else
        dropped = dropped + 1
      end
    end
    return {key, out, dropped}
  end
end
for b = tonumber(ARGV[4]) + 1, #KEYS do redis.call('DEL', KEYS[b]) end
return false
"""
)


#: put popped, never-started messages back in place (``key, score, member`` triples in
#: ARGV from 4 on) and unmark them, so whoever pops them next may start them
_GIVE_BACK_LUA = """
for i = 4, #ARGV, 3 do
  local member = ARGV[i + 2]
  redis.call('ZADD', ARGV[i], ARGV[i + 1], member)
  local ok, msg = pcall(cjson.decode, string.sub(member, 9))
  if ok and type(msg) == 'table' and type(msg.id) == 'string'
     and type(msg.lease) == 'number' then
    local mark = ARGV[2] .. msg.id
    if tonumber(redis.call('GET', mark)) == msg.lease then redis.call('DEL', mark) end
  end
end
return 1
"""

#: forget the marks of deliveries the ledger now refuses anyway (``id, lease`` pairs in
#: ARGV from 2 on): only a mark still holding that lease is removed
_RELEASE_LUA = """
for i = 2, #ARGV, 2 do
  local mark = ARGV[1] .. ARGV[i]
  if redis.call('GET', mark) == ARGV[i + 1] then redis.call('DEL', mark) end
end
return 1
"""

#: a producer cancelling a dispatched job: mark ``(id, lease)`` taken unless a worker took it
#: first. 1: blocked (no worker has it, none ever will start it); 0: a worker has it
_BLOCK_LUA = """
local mark = ARGV[1] .. ARGV[2]
local held = tonumber(redis.call('GET', mark) or '0') or 0
if held >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', mark, ARGV[3], 'EX', ARGV[4])
return 1
"""

#: how long a delivery mark outlives its pop when nothing releases it (a worker died holding
#: it): the reconciler reads it to tell a worker's death from a message Redis lost
MARK_TTL_SECONDS = 3600
#: a queue's doorbell (a Redis list beside its sorted set) holds at most this many tokens
BELL_TOKENS = 1000


class LedgerRedisStorage(QueueStorage, PriorityRedisStorage):
    """Priority sorted set per queue, with a doorbell list beside it.

    A worker takes messages only with the pop-and-mark script (the delivery gate above). An
    idle worker waits on its queues' doorbells: every push adds a token per message to the
    queue's doorbell, and the worker sends ``BLPOP`` on the doorbells pipelined with the
    script, so when a token arrives the script pops and marks in the same round trip (a
    blocking pop followed by a separate mark took one more round trip on the way to every
    job's start). The script clears the doorbells whenever it finds every queue empty, so a
    token always means a message may be waiting; a token without a message (another worker
    popped it) costs one empty script call. A message pushed without a token (by hand) is
    still found within the blocking timeout, when the pipelined script runs anyway.
    """

    def __init__(self, name: str, queues: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.queues = list(queues)
        self._keys = [self.key_for(q) for q in self.queues]
        self._bells = [self.bell_for(q) for q in self.queues]
        #: KEYS of :data:`_POP_MANY_LUA`: the queues in order, then their doorbells
        self._pop_keys = [*self._keys, *self._bells]
        # no I/O until first use
        self._pop_many = self.conn.register_script(_POP_MANY_LUA)
        self._give_back = self.conn.register_script(_GIVE_BACK_LUA)
        self._release = self.conn.register_script(_RELEASE_LUA)
        self._block = self.conn.register_script(_BLOCK_LUA)
        self.mark_prefix = f"huey.taken.{self.name}:"

    marks_deliveries = True

    def key_for(self, queue: str) -> str:
        return f"huey.redis.{self.name}.{queue}"

    def bell_for(self, queue: str) -> str:
        """The queue's doorbell: a list of tokens, one per message pushed since it was last
        found empty (at most :data:`BELL_TOKENS`)."""
        return self._bell_of(self.key_for(queue))

    @staticmethod
    def _bell_of(key: str) -> str:
        """The doorbell of the queue whose sorted set is ``key``."""
        return "huey.bell." + key.removeprefix("huey.redis.")

    def push(self, queue: str, items: Sequence[tuple[bytes, int]]) -> None:
        self.push_many({queue: items})

    def push_many(self, by_queue: Mapping[str, Sequence[tuple[bytes, int]]]) -> None:
        """One round trip: per queue a ZADD and its doorbell's tokens, pipelined."""
        pipe = self.conn.pipeline(transaction=False)
        for queue, items in by_queue.items():
            if items:
                pipe.zadd(self.key_for(queue), self._members(items))
                self._ring(pipe, self.key_for(queue), len(items))
        pipe.execute()

    def _ring(self, pipe: Any, key: str, count: int) -> None:
        """Add ``count`` tokens to the doorbell of the queue whose sorted set is ``key``."""
        bell = self._bell_of(key)
        pipe.rpush(bell, *([1] * min(count, BELL_TOKENS)))
        pipe.ltrim(bell, -BELL_TOKENS, -1)

    @staticmethod
    def _members(items: Sequence[tuple[bytes, int]]) -> dict[bytes, int]:
        # score orders by priority (higher first); the prefix keeps FIFO within a priority.
        # One ZADD with every member: one command, whatever the batch.
        base = int(time.time() * 1e6)
        return {struct.pack(">Q", base + i) + data: -p for i, (data, p) in enumerate(items)}

    #: set by a thread worker that prefetches (``tasks.worker.prefetch``): handler threads take
    #: their messages from it instead of popping Redis themselves
    take: Callable[[float], bytes | None] | None = None

    def dequeue(self) -> bytes | None:
        if self.take is not None:
            return self.take(self.read_timeout)
        entry = self.pop(self.read_timeout)
        return None if entry is None else entry.data

    def pop(self, timeout: float, ready_first: bool = True) -> PoppedEntry | None:
        """The next message of this worker's queues (highest priority first), marked taken,
        waiting up to ``timeout`` seconds for one. Copies of taken messages are dropped.
        ``ready_first=False``: the caller just found the queues empty, so wait at once."""
        if not self._keys:
            return None
        if ready_first and (ready := self.pop_ready(1)):  # one round trip while there is work
            return ready[0]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            pipe = self.conn.pipeline(transaction=False)
            pipe.blpop(self._bells, timeout=max(left, 0.01))  # wait for a doorbell token
            keys, argv = self._pop_keys, self._pop_argv(1)
            pipe.evalsha(self._pop_many.sha, len(keys), *keys, *argv)  # then pop and mark
            try:
                _, found = pipe.execute()
            except NoScriptError:  # Redis lost its scripts (a restart): the token is spent,
                ready = self.pop_ready(1)  # so look without waiting (this loads the script)
                if ready:
                    return ready[0]
                continue
            except (TimeoutError, TypeError, IndexError):
                return None
            entries = self._entries(found)
            if entries:
                return entries[0]
        return None

    def _pop_argv(self, count: int) -> list[Any]:
        """ARGV of :data:`_POP_MANY_LUA`."""
        return [count, self.mark_prefix, MARK_TTL_SECONDS, len(self._keys)]

    @staticmethod
    def _entries(found: Any) -> list[PoppedEntry]:
        """The messages of a reply of :data:`_POP_MANY_LUA` (none when every queue was
        empty, or when it dropped only copies)."""
        if not found:
            return []
        key, flat, dropped = found
        if dropped:
            log.info("dropped %d copy(ies) of messages already taken", dropped)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [PoppedEntry.of(key, member, score) for member, score in pairs]

    def pop_ready(self, count: int) -> list[PoppedEntry]:
        """Up to ``count`` messages of the first of this worker's queues that has any
        (highest priority first), marked taken, without waiting: one call, whatever the
        count. Copies of taken messages are dropped on the way."""
        if not self._keys:
            return []
        while True:
            found = self._pop_many(keys=self._pop_keys, args=self._pop_argv(count))
            entries = self._entries(found)
            if entries or not found:  # a message, or every queue empty
                return entries

    def give_back(self, entries: Sequence[PoppedEntry]) -> None:
        """Put popped messages that no handler started back where they were (same score,
        same FIFO prefix), unmarked: one script, whatever the count."""
        if not entries:
            return
        args: list[Any] = [0, self.mark_prefix, MARK_TTL_SECONDS]
        for e in entries:
            args += [e.key, e.score, e.member]
        self._give_back(args=args)
        pipe = self.conn.pipeline(transaction=False)
        for key in {e.key for e in entries}:  # wake a waiting worker for them
            self._ring(pipe, key, sum(1 for e in entries if e.key == key))
        pipe.execute()

    def release(self, deliveries: Sequence[tuple[uuid.UUID, int]]) -> None:
        if not deliveries:
            return
        args: list[Any] = [self.mark_prefix]
        for job_id, lease in deliveries:
            args += [str(job_id), str(lease)]
        self._release(args=args)

    def block_delivery(self, job_id: uuid.UUID, lease: int) -> bool:
        args = [self.mark_prefix, str(job_id), str(lease), MARK_TTL_SECONDS]
        return bool(self._block(args=args))

    def delivered(self, deliveries: Sequence[tuple[uuid.UUID, int]]) -> set[tuple[uuid.UUID, int]]:
        pairs = list(deliveries)
        if not pairs:
            return set()
        marks = self.conn.mget([f"{self.mark_prefix}{job_id}" for job_id, _ in pairs])
        return {
            (job_id, lease)
            for (job_id, lease), mark in zip(pairs, marks, strict=True)
            if mark is not None and int(mark) == lease
        }

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
