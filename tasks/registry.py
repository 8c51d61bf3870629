"""Job types defined in code: ``@job`` and ``@periodic_job``, and the registry that holds them."""

from __future__ import annotations

import importlib
import logging
import math
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from huey import crontab as huey_crontab
from pydantic import BaseModel

from db.models import PRIORITY_MAX, PRIORITY_MIN
from db.settings import QUEUE_NAME
from tasks.errors import InvalidArgument, UnknownJobType

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"  # the queue of a type that names none; always declared
TYPE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
MAX_PARTITION_LENGTH = 200
#: a partition key: printable, no control characters, not blank
PARTITION_KEY = re.compile(rf"(?=.*\S)[^\x00-\x1f\x7f]{{1,{MAX_PARTITION_LENGTH}}}")
PARTITION_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
DEFAULT_PRIORITY = 5
BUILTIN_MODULES = ("tasks.jobs.builtin", "tasks.jobs.edurise", "tasks.jobs.system")
# periodic jobs (``@periodic_job``): overlap and catch-up policies
OVERLAP_POLICIES = ("skip", "allow")
CATCH_UP_POLICIES = ("none", "latest", "all")
DEFAULT_CATCH_UP_WINDOW = timedelta(hours=24)
MAX_CATCH_UP_WINDOW = timedelta(days=31)
MAX_CATCH_UP_TICKS = 100  # catch_up="all": at most this many missed ticks, the newest


class JobCancelled(Exception):
    """Raised by ``ctx.check_cancelled()`` when an admin cancelled the running job."""


@dataclass
class JobContext:
    """What a handler knows about the attempt it runs (use id + attempt to make side effects
    idempotent: the same attempt may run twice if a worker dies)."""

    job_id: uuid.UUID
    attempt: int
    max_attempts: int
    type: str
    queue: str
    worker_id: uuid.UUID | None = None
    _cancel_probe: Callable[[], bool] | None = field(default=None, repr=False)
    _progress_sink: Callable[[float, str | None], None] | None = field(default=None, repr=False)
    _dependency_results: dict[uuid.UUID, Any] | None = field(default=None, repr=False)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"job.{self.type}")

    @property
    def cancel_requested(self) -> bool:
        """True once ``cancel_job`` was called on this running job (checked in the ledger at
        most a few times per second, so it is cheap to poll in a loop)."""
        return self._cancel_probe() if self._cancel_probe is not None else False

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` if a cancel was requested: the job then ends ``cancelled``."""
        if self.cancel_requested:
            raise JobCancelled(f"job {self.job_id} was cancelled while running")

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0.0-1.0) and an optional message; stored on the job, throttled
        (at most one write per second, the latest value always lands)."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise InvalidArgument("progress fraction must be a number between 0 and 1")
        if not 0.0 <= float(fraction) <= 1.0:
            raise InvalidArgument("progress fraction must be between 0 and 1")
        if message is not None and not isinstance(message, str):
            raise InvalidArgument("progress message must be a string")
        if self._progress_sink is not None:
            self._progress_sink(float(fraction), None if message is None else message[:500])

    @property
    def dependency_results(self) -> dict[uuid.UUID, Any]:
        """``{dependency id: result}`` of the jobs this one waited for (``depends_on``; None
        for one that did not complete), ``{}`` without dependencies. Read from the ledger on
        first use, so a handler that never asks costs nothing."""
        if self._dependency_results is None:
            from tasks import workflows  # imports the job API, which imports this module

            self._dependency_results = workflows.dependency_results(self.job_id)
        return self._dependency_results


Handler = Callable[[Any, JobContext], Any]


@dataclass(frozen=True)
class Schedule:
    """When a periodic job ticks: a 5-field crontab (in UTC, or in the time zone ``tz``) or a
    fixed interval.

    Daylight saving time (crontab with ``tz``): a wall time that the spring-forward change
    skips (02:30 in Europe/Berlin on the last Sunday of March) ticks once, at the instant it
    names with the offset in force before the change (01:30 UTC = 03:30 CEST); a wall time
    that the fall-back change repeats ticks once, at its first occurrence, unless the hour
    field is ``*`` (the job runs every hour anyway, so it runs in both hours)."""

    cron: str | None = None
    every: timedelta | None = None
    tz: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise InvalidArgument("give a periodic job exactly one of crontab= or every=")
        if self.every is not None and self.every.total_seconds() < 1:
            raise InvalidArgument("every= must be at least one second")
        if self.tz is not None:
            if self.every is not None:
                raise InvalidArgument("tz= applies to crontab= schedules, not every=")
            self._zone()  # validate now
        if self.cron is not None:
            self._matcher()  # validate now

    def _zone(self) -> ZoneInfo | None:
        if self.tz is None:
            return None
        return _zone(self.tz)

    def _matcher(self) -> Callable[[datetime], bool]:
        return _cron_matcher(self.cron or "")

    def _is_tick(self, minute: datetime) -> bool:
        """Whether the whole UTC minute ``minute`` (aware) is a crontab tick."""
        matcher = self._matcher()
        zone = self._zone()
        if zone is None:
            return matcher(minute.replace(tzinfo=None))
        local = minute.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if matcher(wall) and (local.fold == 0 or self._every_hour()):
            return True
        # a wall time skipped by a spring-forward change: ticks at the instant it names with
        # the offset in force before the change (Python's fold=0 reading of such a time)
        before = (minute - _GAP_LOOKBACK).astimezone(zone).utcoffset()
        if before is None or before == local.utcoffset():
            return False
        skipped = (minute + before).replace(tzinfo=None)
        return (
            matcher(skipped)
            and not _exists(skipped, zone)
            and skipped.replace(tzinfo=zone).astimezone(UTC) == minute
        )

    def _every_hour(self) -> bool:
        return (self.cron or "").split()[1] == "*"

    def latest_tick(self, now: datetime) -> datetime | None:
        """The most recent tick at or before ``now`` (crontab: only the current minute)."""
        if self.every is not None:
            step = self.every.total_seconds()
            epoch = now.timestamp()
            return datetime.fromtimestamp(epoch - (epoch % step), tz=UTC)
        minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        return minute if self._is_tick(minute) else None

    def next_tick(self, now: datetime) -> datetime:
        if self.every is not None:
            latest = self.latest_tick(now)
            assert latest is not None
            return latest + self.every
        minute = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60):
            if self._is_tick(minute):
                return minute
            minute += timedelta(minutes=1)
        raise InvalidArgument(f"crontab {self.cron!r} never fires")

    def ticks_in(self, after: datetime, until: datetime, newest: int) -> tuple[list[datetime], int]:
        """The ticks ``t`` with ``after < t <= until``: the newest ``newest`` of them, oldest
        first, and how many there are in all."""
        if until <= after:
            return [], 0
        if self.every is not None:
            step = self.every.total_seconds()
            first = math.floor(after.timestamp() / step) + 1  # tick numbers, epoch-aligned
            last = math.floor(until.timestamp() / step)
            total = max(0, last - first + 1)
            start = max(first, last - newest + 1)
            ticks = [datetime.fromtimestamp(n * step, tz=UTC) for n in range(start, last + 1)]
            return ticks, total
        kept: deque[datetime] = deque(maxlen=max(0, newest))
        total = 0
        minute = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = until.astimezone(UTC)
        while minute <= end:
            if self._is_tick(minute):
                kept.append(minute)
                total += 1
            minute += timedelta(minutes=1)
        return list(kept), total

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron} ({self.tz or 'UTC'})"
        assert self.every is not None
        return f"every {self.every.total_seconds():g} s"


#: far enough back to read the offset in force before a DST change (gaps are at most 2 h)
_GAP_LOOKBACK = timedelta(hours=6)


@lru_cache(maxsize=256)
def _cron_matcher(cron: str) -> Callable[[datetime], bool]:
    fields = cron.split()
    if len(fields) != 5:
        raise InvalidArgument(f"crontab must have 5 fields, got {cron!r}")
    minute, hour, day, month, dow = fields
    try:
        matches: Callable[[datetime], bool] = huey_crontab(
            minute=minute, hour=hour, day=day, month=month, day_of_week=dow
        )
        return matches
    except ValueError as exc:
        raise InvalidArgument(f"invalid crontab {cron!r}: {exc}") from None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"tz must be an IANA time zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin'): {exc}"
        ) from None


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether the naive wall time ``wall`` happens in ``zone`` (not skipped by a DST change)."""
    back = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == wall


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
}


@dataclass(frozen=True)
class RateLimit:
    """``"100/m"``: at most ``count`` starts in any ``period_seconds`` window."""

    count: int
    period_seconds: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text) if isinstance(text, str) else None
        if match is None or int(match.group(1)) < 1:
            raise InvalidArgument(
                f"rate_limit {text!r} must look like '100/s', '100/m' or '100/h' (count >= 1)"
            )
        return cls(int(match.group(1)), float(_PERIODS[match.group(2)]))

    def describe(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[self.period_seconds]
        return f"{self.count}/{unit}"


@dataclass(frozen=True)
class JobType:
    name: str
    func: Handler
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = 3
    backoff: float = 2.0  # seconds before the 2nd attempt; doubles each attempt
    max_backoff: float = 600.0
    timeout: float | None = None
    schema: type[BaseModel] | None = None
    description: str = ""
    schedule: Schedule | None = None
    periodic_data: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None  # at most N running at once, across all workers
    rate_limit: RateLimit | None = None  # at most N starts per period, across all workers
    unique_for: timedelta | None = None  # same type+data within this window -> same job
    #: fair share: the field of the job's data that names its partition (e.g. "school_id");
    #: ``concurrency`` and ``rate_limit`` then hold per partition, and jobs of equal priority
    #: are dispatched round-robin across partitions
    partition_by: str | None = None
    # periodic types only (``@periodic_job``): see ``periodic_job``
    overlap: str = "skip"
    catch_up: str = "latest"
    catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2**(attempt-1), capped, then 50-100 %."""
        delay: float = min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1)))
        return delay / 2 + random.uniform(0, delay / 2)

    @property
    def metered(self) -> bool:
        """Dispatched by the maintainer's metered pass only (never sent on insert)."""
        return (
            self.concurrency is not None
            or self.rate_limit is not None
            or self.partition_by is not None
        )

    def partition_of(self, data: Any, partition: Any = None) -> str | None:
        """The partition of a job of this type: ``partition`` when the submit names one,
        else the ``partition_by`` field of its (validated) data. None for a type without
        ``partition_by``. Raises ``InvalidArgument`` for a partition it cannot have."""
        if self.partition_by is None:
            if partition is not None:
                raise InvalidArgument(
                    f"job type {self.name!r} is not partitioned: declare"
                    " @job(partition_by=...) to give its jobs a partition"
                )
            return None
        if partition is None:
            fields = data.model_dump() if isinstance(data, BaseModel) else data
            if not isinstance(fields, dict) or self.partition_by not in fields:
                raise InvalidArgument(
                    f"job type {self.name!r} is partitioned by data field"
                    f" {self.partition_by!r}: give data[{self.partition_by!r}] or partition="
                )
            partition = fields[self.partition_by]
            what = f"data[{self.partition_by!r}]"
        else:
            what = "partition"
        if isinstance(partition, bool) or not isinstance(partition, str | int):
            raise InvalidArgument(f"{what} must be a string or an integer, got {partition!r}")
        text = str(partition)
        if not PARTITION_KEY.fullmatch(text):
            raise InvalidArgument(
                f"{what} must be 1-{MAX_PARTITION_LENGTH} printable characters, got {text!r:.80}"
            )
        return text

    def json_schema(self) -> dict[str, Any] | None:
        return None if self.schema is None else self.schema.model_json_schema()


_REGISTRY: dict[str, JobType] = {}


def _validate_numbers(job_type: JobType) -> None:
    if not 1 <= job_type.max_attempts <= 100:
        raise InvalidArgument(f"{job_type.name}: max_attempts must be 1..100")
    if job_type.timeout is not None and not job_type.timeout > 0:
        raise InvalidArgument(f"{job_type.name}: timeout must be a positive number of seconds")
    if not job_type.backoff >= 0 or not job_type.max_backoff >= 0:
        raise InvalidArgument(f"{job_type.name}: backoff and max_backoff must be >= 0")


def _validate_options(name: str, queue: str, priority: int, max_attempts: int) -> None:
    if not TYPE_NAME.match(name):
        raise InvalidArgument(f"job type name {name!r} must match {TYPE_NAME.pattern}")
    if not QUEUE_NAME.match(queue):
        raise InvalidArgument(f"queue name {queue!r} must match {QUEUE_NAME.pattern}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidArgument(f"priority must be {PRIORITY_MIN}..{PRIORITY_MAX}")
    if max_attempts < 1:
        raise InvalidArgument("max_attempts must be at least 1")


def register(job_type: JobType) -> JobType:
    _validate_options(job_type.name, job_type.queue, job_type.priority, job_type.max_attempts)
    _validate_numbers(job_type)
    existing = _REGISTRY.get(job_type.name)
    if existing is not None and existing.func is not job_type.func:
        same_place = (existing.func.__module__, existing.func.__qualname__) == (
            job_type.func.__module__,
            job_type.func.__qualname__,
        )
        if not same_place:  # re-import of the same module (e.g. Streamlit rerun) is fine
            raise InvalidArgument(f"job type {job_type.name!r} is already registered")
    _REGISTRY[job_type.name] = job_type
    return job_type


def job(
    name: str,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = 3,
    backoff: float = 2.0,
    max_backoff: float = 600.0,
    timeout: float | None = None,
    schema: type[BaseModel] | None = None,
    concurrency: int | None = None,
    rate_limit: str | None = None,
    unique_for: timedelta | None = None,
    partition_by: str | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``func(data, ctx)`` as the handler of job type ``name``.

    ``partition_by``: the data field that names a job's partition (a school, a course, a
    user); ``concurrency`` and ``rate_limit`` then apply per partition and the dispatcher
    takes jobs of equal priority round-robin across partitions (docs/api.md, "Fair share")."""
    if partition_by is not None and (
        not isinstance(partition_by, str) or not PARTITION_FIELD.fullmatch(partition_by)
    ):
        raise InvalidArgument(
            f"partition_by must name a data field ({PARTITION_FIELD.pattern}), got {partition_by!r}"
        )
    if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
        raise InvalidArgument("concurrency must be a positive integer")
    limit = None if rate_limit is None else RateLimit.parse(rate_limit)
    if unique_for is not None and unique_for.total_seconds() <= 0:
        raise InvalidArgument("unique_for must be a positive timedelta")

    def decorate(func: Handler) -> Handler:
        register(
            JobType(
                name=name,
                func=func,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                schema=schema,
                description=(func.__doc__ or "").strip().split("\n")[0],
                concurrency=concurrency,
                rate_limit=limit,
                unique_for=unique_for,
                partition_by=partition_by,
            )
        )
        return func

    return decorate


def periodic_job(
    name: str,
    *,
    crontab: str | None = None,
    every: timedelta | None = None,
    tz: str | None = None,
    data: dict[str, Any] | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = 1,
    backoff: float = 2.0,
    timeout: float | None = None,
    schema: type[BaseModel] | None = None,
    overlap: str = "skip",
    catch_up: str = "latest",
    catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW,
) -> Callable[[Handler], Handler]:
    """Register a job type that the maintainer submits on a schedule: one job per tick.

    ``tz``: the IANA time zone a crontab is read in (default UTC). ``overlap="skip"``: a tick
    is not enqueued while an earlier run of the type is unfinished (the skip is recorded);
    ``"allow"``: always enqueued. ``catch_up``: ticks missed while no maintainer ran, within
    ``catch_up_window`` of now: ``"none"`` drops them, ``"latest"`` enqueues the newest one,
    ``"all"`` every one (at most ``MAX_CATCH_UP_TICKS``)."""
    schedule = Schedule(cron=crontab, every=every, tz=tz)
    if overlap not in OVERLAP_POLICIES:
        raise InvalidArgument(
            f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {overlap!r}"
        )
    if catch_up not in CATCH_UP_POLICIES:
        raise InvalidArgument(
            f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}"
        )
    if not isinstance(catch_up_window, timedelta) or not (
        timedelta(0) < catch_up_window <= MAX_CATCH_UP_WINDOW
    ):
        raise InvalidArgument("catch_up_window must be a timedelta above 0 and at most 31 days")

    def decorate(func: Handler) -> Handler:
        register(
            JobType(
                name=name,
                func=func,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
                schema=schema,
                description=(func.__doc__ or "").strip().split("\n")[0],
                schedule=schedule,
                periodic_data=dict(data or {}),
                overlap=overlap,
                catch_up=catch_up,
                catch_up_window=catch_up_window,
            )
        )
        return func

    return decorate


def get(name: str) -> JobType:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownJobType(f"unknown job type {name!r} (known: {known})") from None


def run_handler(type_name: str, data: Any, ctx: JobContext) -> Any:
    """Run the handler of ``type_name`` on a job's stored data (validated into the type's
    schema model when it has one) and return what it returned; whatever it raises is raised."""
    job_type = get(type_name)
    if job_type.schema is not None:
        data = job_type.schema.model_validate(data)
    return job_type.func(data, ctx)


def retry_delay(name: str, attempt: int) -> float:
    """The backoff before the next attempt of a job of type ``name`` (5 s for a type this
    process does not know)."""
    job_type = _REGISTRY.get(name)
    return 5.0 if job_type is None else job_type.retry_delay(attempt)


def all_types() -> list[JobType]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def declared_queues(extra: Iterable[str] = ()) -> list[str]:
    """The queues jobs may go to, sorted: ``default``, the queue of every registered type,
    and ``extra`` (the ``QUEUE_QUEUES`` setting)."""
    return sorted({DEFAULT_QUEUE, *(t.queue for t in _REGISTRY.values()), *extra})


def is_declared(queue: str, extra: Collection[str] = ()) -> bool:
    """Whether ``queue`` is in :func:`declared_queues` (without building the list)."""
    return (
        queue == DEFAULT_QUEUE
        or queue in extra
        or any(t.queue == queue for t in _REGISTRY.values())
    )


def limited_types() -> list[JobType]:
    """Types with a concurrency or rate limit or a partition (the dispatcher meters them)."""
    return [t for t in all_types() if t.metered]


def periodic_types() -> list[JobType]:
    return [t for t in all_types() if t.schedule is not None]


_LOADED: set[tuple[str, ...]] = set()


def load_job_modules(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import the built-in job types and the user's modules (QUEUE_JOB_MODULES); once per
    list of modules (every submit asks)."""
    wanted = (*BUILTIN_MODULES, *extra)
    if wanted in _LOADED:
        return
    for module in wanted:
        importlib.import_module(module)
    _LOADED.add(wanted)
