"""The job API: the only way jobs are written (the CLI and the console call these).

Every function validates first and writes after, so a call that raises wrote nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db import controls, queries
from db import job_logs as job_log_sql
from db.driver import driver_for
from db.engine import (
    driver_write,
    engine_for,
    hot_path_engine_for,
    read,
    transaction,
    write,
)
from db.ledger import admin, core, dependencies, maintainer, producer
from db.locks import xact_lock
from db.models import PRIORITY_MAX, PRIORITY_MIN
from db.settings import get_settings
from db.states import ALL_STATUSES, JobStatus, Transition, can
from tasks import registry
from tasks.errors import (
    IdempotencyConflict,
    InvalidArgument,
    InvalidDependency,
    InvalidPriority,
    InvalidSchedule,
    InvalidTransition,
    JobNotFound,
    QueueError,
    UnknownDependency,
    UnknownQueue,
)
from tasks.payload import check_payload_text
from tasks.transport import direct_dispatch
from tasks.transport.group_commit import GroupCommit

MAX_ATTEMPTS_LIMIT = 100
MAX_BULK = 10_000
#: at most this many dependencies per job (a fan-in of 10,000 parents is one callback)
MAX_DEPENDENCIES = 10_000
ON_DEPENDENCY_FAILURE = dependencies.ON_DEPENDENCY_FAILURE  # "cancel" (the default) or "run"
#: every schedule time lies within [now - SCHEDULE_MAX_PAST, now + SCHEDULE_MAX_AHEAD]
SCHEDULE_MAX_PAST = timedelta(days=1)
SCHEDULE_MAX_AHEAD = timedelta(days=3660)  # ten years (of 366 days)
#: at most this many queue names are listed in an ``UnknownQueue`` message
_LISTED_QUEUES = 50
Schedule = datetime | timedelta | int | float

__all__ = [
    "cancel_job",
    "dependents_cancelled",
    "get_job",
    "get_jobs",
    "get_queue_controls",
    "get_queue_stats",
    "pause_queue",
    "resume_queue",
    "retry_job",
    "schedule_job",
    "submit_job",
    "submit_jobs",
]


def _load_registry() -> None:
    registry.load_job_modules(get_settings().job_modules)  # cheap once imported


def engine() -> Engine:
    """The ledger engine of this process (from DATABASE_URL or the embedded default)."""
    return engine_for(get_settings().ledger_url)


def _check_priority(priority: Any, default: int) -> int:
    if priority is None:
        return default
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidPriority(f"priority must be an integer, got {type(priority).__name__}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidPriority(
            f"priority {priority} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}"
            " (higher runs first)"
        )
    return priority


def _check_max_attempts(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"max_attempts must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise InvalidArgument(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    return value


def declared_queues() -> list[str]:
    """The queues jobs may go to, sorted: ``default``, the queue of every registered job
    type, and the ``QUEUE_QUEUES`` setting."""
    _load_registry()
    return registry.declared_queues(get_settings().queues)


def _unknown_queue(queue: str, known: list[str]) -> UnknownQueue:
    listed = ", ".join(known[:_LISTED_QUEUES])
    if len(known) > _LISTED_QUEUES:
        listed += f", ... ({len(known) - _LISTED_QUEUES} more)"
    return UnknownQueue(
        f"queue {queue!r} is not declared (declared: {listed}); a queue is declared by a job"
        " type (@job(queue=...)) or by the QUEUE_QUEUES setting"
    )


def _valid_queue_name(queue: Any) -> str:
    if not isinstance(queue, str) or not registry.QUEUE_NAME.match(queue):
        raise InvalidArgument(
            f"queue name {queue!r} is invalid: 1-64 letters, digits or underscores"
        )
    return queue


def check_declared_queue(queue: Any) -> str:
    """``queue`` if it is a valid, declared queue name; else ``InvalidArgument`` or
    ``UnknownQueue``."""
    name = _valid_queue_name(queue)
    _load_registry()
    if not registry.is_declared(name, get_settings().queues):
        raise _unknown_queue(name, declared_queues())
    return name


def _check_queue(queue: Any, default: str) -> str:
    if queue is None or queue == default:  # a type's own queue is declared by the type
        return default
    return check_declared_queue(queue)


def _require_queue(queue: Any) -> str:
    if queue is None:
        raise InvalidArgument("a queue name is required")
    return _valid_queue_name(queue)


def _check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or "\x00" in key:
        raise InvalidArgument("idempotency_key must be a string of 1-255 characters")
    return key


def _check_text(name: str, value: Any, max_length: int = 500) -> str | None:
    """A filter string the database can take: no NUL, valid Unicode, bounded length."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    if "\x00" in value or len(value) > max_length:
        raise InvalidArgument(f"{name} must be at most {max_length} characters without NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} is not valid Unicode text") from None
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _days(delta: timedelta) -> str:
    return f"{delta.days} day" if delta.days == 1 else f"{delta.days} days"


def _outside_window(what: str, now: datetime) -> InvalidSchedule:
    earliest, latest = now - SCHEDULE_MAX_PAST, now + SCHEDULE_MAX_AHEAD
    return InvalidSchedule(
        f"{what} is outside the allowed window {_iso(earliest)} .. {_iso(latest)}"
        f" (now - {_days(SCHEDULE_MAX_PAST)} .. now + {_days(SCHEDULE_MAX_AHEAD)})"
    )


def _at(schedule: datetime, now: datetime) -> datetime:
    """An aware datetime as UTC, within the window."""
    if schedule.tzinfo is None or schedule.tzinfo.utcoffset(schedule) is None:
        raise InvalidSchedule(
            "schedule is a naive datetime; give a timezone (e.g. datetime.now(UTC))"
        )
    try:
        due = schedule.astimezone(UTC)
    except OverflowError:  # year 1 at +14:00 or year 9999 at -14:00: not a UTC datetime
        raise _outside_window(f"schedule {schedule.isoformat()}", now) from None
    if not now - SCHEDULE_MAX_PAST <= due <= now + SCHEDULE_MAX_AHEAD:
        raise _outside_window(f"schedule {_iso(due)}", now)
    return due


def _delay_seconds(schedule: Any) -> float:
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    if isinstance(schedule, int | float) and not isinstance(schedule, bool):
        try:
            return float(schedule)
        except OverflowError:  # an int beyond any float
            return float("inf") if schedule > 0 else float("-inf")
    raise InvalidSchedule(
        f"schedule must be an aware datetime, a timedelta or seconds, got {type(schedule).__name__}"
    )


def resolve_schedule(schedule: Any, now: datetime | None = None) -> datetime:
    """An aware datetime, a timedelta or a number of seconds from now -> aware UTC datetime
    within [now - SCHEDULE_MAX_PAST, now + SCHEDULE_MAX_AHEAD]; else ``InvalidSchedule``."""
    now = now or datetime.now(UTC)
    if isinstance(schedule, datetime):
        return _at(schedule, now)
    seconds = _delay_seconds(schedule)
    if seconds != seconds or seconds < 0:
        raise InvalidSchedule("a schedule delay must be zero or more seconds")
    if seconds > SCHEDULE_MAX_AHEAD.total_seconds():
        raise _outside_window(f"a delay of {seconds:g} seconds", now)
    return now + timedelta(seconds=seconds)


def build_job(
    type: str,
    data: Any,
    priority: Any = None,
    *,
    queue: Any = None,
    idempotency_key: Any = None,
    max_attempts: Any = None,
    schedule: Any = None,
    tick_key: str | None = None,
    load_registry: bool = True,
    depends_on: tuple[uuid.UUID, ...] = (),
    on_dependency_failure: Any = "cancel",
    partition: Any = None,
) -> producer.NewJob:
    """Validate one job's arguments into a row to insert (raises a ``QueueError``).
    ``depends_on`` is already resolved to job ids (:func:`_dependency_ids`)."""
    if load_registry:
        _load_registry()
    if not isinstance(type, str):
        raise InvalidArgument("type must be a string")
    job_type = registry.get(type)
    stored, stored_json = check_payload_text(data, job_type.schema)
    if on_dependency_failure not in ON_DEPENDENCY_FAILURE:
        raise InvalidArgument(
            f"on_dependency_failure must be 'cancel' or 'run', got {on_dependency_failure!r}"
        )
    if depends_on and (idempotency_key is not None or job_type.unique_for is not None):
        raise InvalidArgument(
            "a job with dependencies cannot have an idempotency key or a unique_for type"
        )
    return producer.NewJob(
        type=job_type.name,
        queue=_check_queue(queue, job_type.queue),
        priority=_check_priority(priority, job_type.priority),
        data=stored,
        max_attempts=_check_max_attempts(max_attempts, job_type.max_attempts),
        timeout_seconds=job_type.timeout,
        idempotency_key=_check_key(idempotency_key),
        scheduled_at=None if schedule is None else resolve_schedule(schedule),
        tick_key=tick_key,
        unique_key=None if job_type.unique_for is None else unique_key(job_type.name, stored),
        data_json=stored_json,
        depends_on=depends_on,
        on_dependency_failure=on_dependency_failure if depends_on else None,
        partition_key=job_type.partition_of(stored, partition),
    )


def unique_key(type_name: str, data: dict[str, Any]) -> str:
    """The identity of a job for ``@job(unique_for=...)``: its type and canonical data."""
    canonical = json.dumps([type_name, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key_conflict(
    exc: producer.KeyConflict, new_jobs: list[producer.NewJob], bulk: bool
) -> Exception:
    if not bulk:
        return IdempotencyConflict(str(exc))
    index = next(i for i, new in enumerate(new_jobs) if new.id == exc.job_id)
    return IdempotencyConflict(f"item {index}: {exc}")


def _insert(
    conn: Connection, new_jobs: list[producer.NewJob], *, bulk: bool = False
) -> list[uuid.UUID]:
    """Insert, answering a unique job (``unique_for``) with the job already in its window,
    and a live idempotency key of another type or data with ``IdempotencyConflict``."""
    out: list[uuid.UUID | None] = [None] * len(new_jobs)
    fresh: list[tuple[int, producer.NewJob]] = []
    first_with_key: dict[str, int] = {}
    same_as: dict[int, int] = {}
    for i, new in enumerate(new_jobs):
        window = registry.get(new.type).unique_for
        if new.unique_key is not None and window is not None:
            if new.unique_key in first_with_key:  # repeated inside this batch
                same_as[i] = first_with_key[new.unique_key]
                continue
            xact_lock(conn, f"unique:{new.unique_key}")
            existing = maintainer.find_unique(conn, new.unique_key, window.total_seconds())
            if existing is not None:
                out[i] = existing
                continue
            first_with_key[new.unique_key] = i
        fresh.append((i, new))
    try:
        ids = producer.insert_jobs(conn, [n for _, n in fresh])
    except producer.KeyConflict as exc:  # raised inside the caller's transaction: rolled back
        raise _key_conflict(exc, new_jobs, bulk) from None
    for (i, _), job_id in zip(fresh, ids, strict=True):
        out[i] = job_id
    for i, first in same_as.items():
        out[i] = out[first]
    return [job_id for job_id in out if job_id is not None]


def submit_job(
    type: str,
    data: Any,
    priority: int | None = None,
    *,
    queue: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    depends_on: Iterable[uuid.UUID | str] | None = None,
    on_dependency_failure: str = "cancel",
    partition: str | int | None = None,
) -> uuid.UUID:
    """Submit a job to run as soon as a worker is free. Returns its id.

    With an ``idempotency_key`` that a live (not finished) job already has, nothing is
    written and that job's id is returned.

    With ``depends_on`` (job ids), the job is ``waiting`` until every one of them has ended:
    it becomes due once all completed, and is cancelled as soon as one fails or is
    cancelled (``on_dependency_failure="cancel"``, the default) or becomes due whatever they
    ended in (``"run"``). See docs/api.md, "Workflows".

    ``partition`` names the job's partition for a type declared ``@job(partition_by=...)``
    (default: that field of ``data``). See docs/api.md, "Fair share".
    """
    new = build_job(
        type,
        data,
        priority,
        queue=queue,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        depends_on=_dependency_ids(depends_on),
        on_dependency_failure=on_dependency_failure,
        partition=partition,
    )
    if new.depends_on:
        return _insert_graph([new])[0]
    settings = get_settings()
    if direct_dispatch.eligible(settings, engine(), new):
        direct_inserts().run(new)
        return new.id
    return _insert_one(new)


def _insert_one(new: producer.NewJob) -> uuid.UUID:
    """A job without dependencies: group-committed when nothing but its id is to be
    answered (the common case), else in a transaction of its own (keys to resolve)."""
    if new.keyless and driver_for(engine()).prepared_hot_path:
        plain_inserts().run(new)
        return new.id
    with _writer(new) as conn:
        return _insert(conn, [new])[0]


def plain_inserts() -> GroupCommit[producer.NewJob]:
    """PostgreSQL: the group commit of ``submit_job`` and ``schedule_job`` for jobs without
    keys (``tasks.transport.group_commit``): one prepared INSERT for the batch."""
    return _plain_inserts(hot_path_engine_for(get_settings().ledger_url))


def direct_inserts() -> GroupCommit[producer.NewJob]:
    """PostgreSQL with Redis: the group commit of ``submit_job`` under direct dispatch."""
    settings = get_settings()
    sender = direct_dispatch.for_redis(str(settings.redis_url), settings.queue_namespace)
    eng = hot_path_engine_for(settings.ledger_url)
    return sender.group(eng, settings.queue_dispatch_window)


@lru_cache(maxsize=8)
def _plain_inserts(eng: Engine) -> GroupCommit[producer.NewJob]:

    def write(batch: list[producer.NewJob]) -> None:
        with driver_write(eng) as conn:
            producer.insert_batch_dbapi(conn, eng.dialect, batch)

    return GroupCommit(write)


def _writer(new: producer.NewJob) -> Any:
    """One autocommit statement for a plain job; a transaction when a unique check comes first."""
    return transaction(engine()) if new.unique_key is not None else write(engine())


_BULK_KEYS = {
    "type",
    "data",
    "priority",
    "queue",
    "idempotency_key",
    "max_attempts",
    "schedule",
    "depends_on",
    "on_dependency_failure",
    "partition",
}


def submit_jobs(items: Iterable[Mapping[str, Any]]) -> list[uuid.UUID]:
    """Submit many jobs in one statement, all or nothing. Each item has ``type`` and ``data``
    and optionally ``priority``, ``queue``, ``idempotency_key``, ``max_attempts``, ``schedule``,
    ``depends_on``, ``on_dependency_failure`` and ``partition``.

    ``depends_on`` lists job ids (existing jobs) and indexes of *earlier* items of the same
    call (``0`` is the first item), so a whole workflow is written in one transaction, all of
    it or none; an index that is not earlier (itself, a later item, out of range) is
    ``InvalidDependency``, an id that is not in the ledger ``UnknownDependency``.
    """
    new_jobs: list[producer.NewJob] = []
    _load_registry()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"item {i} must be a mapping with 'type' and 'data'")
        unknown = set(item) - _BULK_KEYS
        if unknown or "type" not in item or "data" not in item:
            raise InvalidArgument(
                f"item {i}: needs 'type' and 'data'; unknown keys: {sorted(unknown) or 'none'}"
            )
        try:
            fields = dict(item)
            fields["depends_on"] = _dependency_ids(fields.get("depends_on"), i, new_jobs)
            new_jobs.append(build_job(**fields, load_registry=False))
        except QueueError as exc:
            raise type(exc)(f"item {i}: {exc}") from None
        if len(new_jobs) > MAX_BULK:
            raise InvalidArgument(f"at most {MAX_BULK} jobs per bulk submit")
    if not new_jobs:
        return []
    if any(new.depends_on for new in new_jobs):
        parents = {d for new in new_jobs for d in new.depends_on}
        for i, new in enumerate(new_jobs):
            if new.id in parents and (new.idempotency_key or new.unique_key):
                raise InvalidArgument(
                    f"item {i}: a job other items depend on cannot have an idempotency key"
                    " or a unique_for type"
                )
        return _insert_graph(new_jobs)
    with transaction(engine()) as conn:
        return _insert(conn, new_jobs, bulk=True)


def _dependency_ids(
    given: Any, item: int | None = None, earlier: list[producer.NewJob] | None = None
) -> tuple[uuid.UUID, ...]:
    """``depends_on`` as job ids, in order, without repeats: UUIDs (or their text) of
    existing jobs, and in :func:`submit_jobs` (``item`` is the index of the item it belongs
    to) indexes of earlier items."""
    if given is None:
        return ()
    if isinstance(given, str | bytes | Mapping) or not isinstance(given, Iterable):
        raise InvalidDependency("depends_on must be a list of job ids")
    out: dict[uuid.UUID, None] = {}
    for ref in given:
        if isinstance(ref, bool):
            raise InvalidDependency(f"depends_on entry {ref!r} is not a job id")
        if isinstance(ref, int):
            if item is None or earlier is None:
                raise InvalidDependency(
                    f"depends_on entry {ref} is an index: indexes name earlier items of one"
                    " submit_jobs call; give a job id here"
                )
            if not 0 <= ref < item:
                what = "itself" if ref == item else "a later item" if ref > item else "no item"
                earlier_items = f"0 .. {item - 1}" if item else "none: it is the first"
                raise InvalidDependency(
                    f"depends_on index {ref} names {what}: an item may depend only on earlier"
                    f" items ({earlier_items}), so a workflow cannot contain a cycle"
                )
            out[earlier[ref].id] = None
            continue
        try:
            out[ref if isinstance(ref, uuid.UUID) else uuid.UUID(str(ref))] = None
        except ValueError:
            raise InvalidDependency(f"depends_on entry {str(ref)[:80]!r} is not a job id") from None
        if len(out) > MAX_DEPENDENCIES:
            raise InvalidDependency(f"at most {MAX_DEPENDENCIES} dependencies per job")
    return tuple(out)


def _insert_graph(new_jobs: list[producer.NewJob]) -> list[uuid.UUID]:
    """Jobs with dependencies, in one transaction (``producer.insert_graph``)."""
    try:
        with transaction(engine()) as conn:
            return producer.insert_graph(conn, new_jobs)
    except dependencies.UnknownDependencies as exc:
        raise UnknownDependency(f"{exc}; nothing was written") from None


def schedule_job(
    type: str,
    data: Any,
    schedule: Schedule,
    priority: int | None = None,
    *,
    queue: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    depends_on: Iterable[uuid.UUID | str] | None = None,
    on_dependency_failure: str = "cancel",
    partition: str | int | None = None,
) -> uuid.UUID:
    """Submit a job that becomes due at ``schedule``: an aware datetime, a timedelta or a
    number of seconds from now. Until then it is ``scheduled`` and can be cancelled. With
    ``depends_on`` it waits for its dependencies first, then for its time (whichever is
    later), as in :func:`submit_job`."""
    if schedule is None:
        raise InvalidSchedule("schedule is required; use submit_job to run now")
    new = build_job(
        type,
        data,
        priority,
        queue=queue,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        schedule=schedule,
        depends_on=_dependency_ids(depends_on),
        on_dependency_failure=on_dependency_failure,
        partition=partition,
    )
    if new.depends_on:
        return _insert_graph([new])[0]
    return _insert_one(new)


def _job_id(job_id: Any) -> uuid.UUID:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(f"{job_id!r} is not a job id (expected a UUID)") from None


def _transition_error(exc: core.TransitionError) -> Exception:
    if exc.status is None:
        return JobNotFound(str(exc))
    return InvalidTransition(str(exc))


#: what :func:`cancel_job` returns
CANCELLED = "cancelled"  # it never started and never will
CANCEL_REQUESTED = "cancel_requested"  # a worker holds it: asked to stop
#: what the CLI and the console say for each answer
CANCEL_MESSAGES = {
    CANCELLED: "cancelled before it started: it will never run",
    CANCEL_REQUESTED: (
        "cancel requested while running: a worker holds it; it ends cancelled if its handler "
        "stops (ctx.cancel_requested) or had not started yet, else it runs to its end"
    ),
}


def cancel_job(job_id: uuid.UUID | str) -> str:
    """Cancel a job that has not finished, and say truthfully which of two things happened.

    - ``"cancelled"``: no worker had started it, and none ever will; the job is ``cancelled``.
    - ``"cancel_requested"``: a worker holds it (it is running, or a worker took its message
      and is about to start it). A worker that has not started it yet ends it ``cancelled``
      without running it; a running handler sees ``ctx.cancel_requested`` and may stop
      (``JobCancelled``: ``cancelled``); a failing attempt ends ``cancelled`` instead of
      retrying; a handler that finishes anyway ends ``completed``.

    On Redis the delivery gate decides it: a dispatched job whose message no worker has taken
    is blocked in Redis in one script (``QueueStorage.block_delivery``), then cancelled in the
    ledger only if it is still under that delivery. Raises ``JobNotFound`` or
    ``InvalidTransition`` (a finished job).
    """
    jid = _job_id(job_id)
    settings = get_settings()
    try:
        if not settings.redis_url:  # workers claim each attempt in the ledger
            with write(engine()) as conn:
                return admin.cancel(conn, jid)
        storage = direct_dispatch.for_redis(settings.redis_url, settings.queue_namespace).storage
        return _cancel_with_delivery_gate(jid, storage)
    except core.TransitionError as exc:
        raise _transition_error(exc) from None


def _cancel_with_delivery_gate(jid: uuid.UUID, storage: Any) -> str:
    for _ in range(5):  # each round sees the job move on; five is plenty
        with read(engine()) as conn:
            status, lease = admin.cancel_target(conn, jid)
        if status == JobStatus.RUNNING:
            with write(engine()) as conn:
                if admin.request_cancel(conn, jid):
                    return CANCEL_REQUESTED
            continue
        if not can(Transition.CANCEL, status):
            raise core.TransitionError(jid, Transition.CANCEL, status)
        # dispatched: a worker may have taken it, or Redis cannot tell: ask it to stop
        if status == JobStatus.DISPATCHED and not _blocked(storage, jid, lease):
            with write(engine()) as conn:
                if admin.request_cancel(conn, jid):
                    return CANCEL_REQUESTED
            continue
        with write(engine()) as conn:
            if admin.cancel_unstarted(conn, jid, lease):
                return CANCELLED
    with read(engine()) as conn:
        status, _ = admin.cancel_target(conn, jid)
    raise core.TransitionError(jid, Transition.CANCEL, status)


def retry_job(job_id: uuid.UUID | str) -> int:
    """Run a ``failed`` or ``cancelled`` job again: it becomes ``queued``, due now. Attempts
    keep counting (the next one is ``attempt + 1``; a job with none left gets exactly one more)
    and ``errors`` are kept. The jobs it cancelled as a dependency (and theirs, downstream) wait
    for it again; returns how many."""
    jid = _job_id(job_id)
    try:
        with transaction(engine()) as conn:
            return admin.retry(conn, jid)
    except core.TransitionError as exc:
        raise _transition_error(exc) from None
    except IntegrityError:
        raise InvalidTransition(
            f"cannot retry job {jid}: another live job has the same idempotency key"
        ) from None


def get_job(job_id: uuid.UUID | str) -> dict[str, Any]:
    """Every column of the job as a dict; raises ``JobNotFound``."""
    jid = _job_id(job_id)
    with read(engine()) as conn:
        found = queries.get_job(conn, jid)
        if found is not None:
            # two more reads only for a job in a workflow
            has_deps = found.get("on_dependency_failure") is not None
            found["depends_on"] = dependencies.dependencies_of(conn, jid) if has_deps else []
            found["dependents"] = (
                dependencies.dependents_of(conn, jid) if found.get("has_dependents") else []
            )
    if found is None:
        raise JobNotFound(f"job {jid} does not exist")
    return found


def dependents_cancelled(job_id: uuid.UUID | str) -> int:
    """How many jobs downstream of ``job_id`` are cancelled because it (or, in turn, one of
    them) failed or was cancelled: what a cancel of a job with dependents reports."""
    jid = _job_id(job_id)
    with read(engine()) as conn:
        return dependencies.dependency_cancelled(conn, jid)


def get_jobs(
    status: str | list[str] | None = None,
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Jobs matching every given filter, newest first."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    type, queue, search = (
        _check_text("type", type),
        _check_text("queue", queue),
        _check_text("search", search),
    )
    bad = [s for s in statuses if s not in ALL_STATUSES]
    if bad:
        raise InvalidArgument(f"unknown status {bad[0]!r} (one of: {', '.join(ALL_STATUSES)})")
    since, until = _filter_time("since", since), _filter_time("until", until)
    if not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidArgument("limit must be between 1 and 10000")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidArgument("offset must be zero or more")
    with read(engine()) as conn:
        return queries.get_jobs(
            conn,
            status=statuses or None,
            type=type,
            queue=queue,
            since=since,
            until=until,
            search=search,
            limit=limit,
            offset=offset,
        )


def _filter_time(name: str, value: Any) -> datetime | None:
    """A ``get_jobs`` time bound as aware UTC (any instant a UTC datetime can hold)."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidSchedule(f"{name} must be an aware datetime")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidSchedule(f"{name} is out of range: {value.isoformat()}") from None


def get_queue_stats() -> dict[str, dict[str, Any]]:
    """Per queue: ``counts`` by status, ``oldest_waiting_seconds``, ``live_workers``."""
    with read(engine()) as conn:
        return queries.queue_stats(conn, get_settings().queue_stale_seconds)


def pause_queue(queue: str, *, by: str | None = None, reason: str | None = None) -> int:
    """Stop dispatching ``queue``: its jobs stay ``queued`` (running jobs finish). Jobs
    already handed to Redis are taken back. Survives restarts. Returns how many were taken
    back."""
    name = check_declared_queue(_require_queue(queue))
    _check_text("by", by, 200)
    _check_text("reason", reason, 500)
    settings = get_settings()
    with transaction(engine()) as conn:
        controls.set_paused(conn, name, True, by, reason)
        if not settings.redis_url:  # workers claim in the ledger: dispatched = not started
            return maintainer.requeue_dispatched(conn, name)
        sent = maintainer.dispatched_of_queue(conn, name)
    # take back only the deliveries no worker has taken (blocked in Redis first, as a
    # cancel does): a job a worker has just begun runs to its end instead of being fenced
    storage = direct_dispatch.for_redis(settings.redis_url, settings.queue_namespace).storage
    blocked = [(job_id, lease) for job_id, lease in sent if _blocked(storage, job_id, lease)]
    with transaction(engine()) as conn:
        return maintainer.requeue_dispatched(conn, name, only=blocked)


def _blocked(storage: Any, job_id: uuid.UUID, lease: int) -> bool:
    """Block a delivery unless a worker took it; False when Redis cannot be asked (the
    reconciler then deals with the job once its message is found missing)."""
    try:
        return bool(storage.block_delivery(job_id, lease))
    except (redis.RedisError, OSError):
        return False


def resume_queue(queue: str) -> None:
    """Dispatch ``queue`` again (who resumed it is recorded by the console's audit log).
    The queue must be declared, or paused (a pause outlives the queue's declaration)."""
    name = _require_queue(queue)
    known = declared_queues()
    with transaction(engine()) as conn:
        if name not in known and name not in controls.paused_queues(conn):
            raise _unknown_queue(name, known)
        controls.set_paused(conn, name, False, None, None)


def get_queue_controls() -> list[dict[str, Any]]:
    """Every queue that was ever paused, with ``paused``, ``paused_at``, ``paused_by``,
    ``reason``."""
    with read(engine()) as conn:
        return controls.list_controls(conn)


#: most lines one :func:`job_logs` call returns
MAX_LOG_LINES = 10_000


def job_logs(
    job_id: uuid.UUID | str,
    *,
    attempt: int | None = None,
    after: int = 0,
    contains: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The lines the job's handler logged (``ctx.log`` or a logger under it), oldest first,
    each with ``id``, ``attempt``, ``at``, ``level`` and ``message``. ``after``: only lines
    after that line id (to follow a running job); ``attempt``: one attempt's lines;
    ``contains``: lines containing this text (case-insensitive). Raises ``JobNotFound``."""
    jid = _job_id(job_id)
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
        raise InvalidArgument("attempt must be a positive integer")
    if attempt is not None and attempt < 1:
        raise InvalidArgument("attempt must be a positive integer")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidArgument("after must be a line id (an integer >= 0)")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LOG_LINES:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LOG_LINES}")
    text = _check_text("contains", contains, max_length=200)
    with read(engine()) as conn:
        if jid not in queries.job_statuses(conn, [jid]):
            raise JobNotFound(f"job {jid} does not exist")
        return job_log_sql.lines_of(
            conn, jid, attempt=attempt, after=after, contains=text, limit=limit
        )
