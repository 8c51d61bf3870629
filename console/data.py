"""Reads for the console, cached briefly and keyed by the ledger URL.

Pages of jobs and single jobs are read through ``tasks.api``. What only needs ids or a few
columns (bulk actions, the running jobs of the Workers page, id prefixes, per-status counts)
is read by ``db.queries`` statements that select just those columns, never payloads. Charts
come only from the metrics read models (``metrics.read``, a module per page), never from scanning
``queue_jobs``. Writes clear the job caches (``clear_job_caches``) so users see their own
changes at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from console.errors import ConsoleError
from db import audit, queries
from db.engine import engine_for, read
from db.settings import get_settings
from db.states import ALL_STATUSES
from metrics import partitions
from metrics.read import capacity as read_capacity
from metrics.read import errors as read_errors
from metrics.read import overview as read_overview
from metrics.read import periodic as read_periodic
from metrics.read import queues as read_queues
from metrics.read import series as read_series
from tasks import api, registry

JOBS_TTL = 3
#: how long a payload search of the Jobs page reads before it answers (queries.search_jobs)
SEARCH_BUDGET_SECONDS = queries.SEARCH_BUDGET_SECONDS
METRICS_TTL = 5
SLOW_TTL = 10
BULK_CAP = 10_000
#: per-status counts are exact up to this many jobs, then estimated (``status_counts``)
COUNT_CAP = 10_000
RUNNING_CAP = 5_000
#: a job id prefix must have at least this many hex digits to open a job
MIN_ID_PREFIX = 8
PREFIX_CANDIDATES = 10
HEX_DIGITS = "0123456789abcdef"
MAX_FILTER_TEXT = 500


def ledger_url() -> str:
    """The ledger of this process: the same one the job API writes to."""
    return get_settings().ledger_url


@st.cache_resource(show_spinner=False)
def get_engine(url: str) -> Engine:
    return engine_for(url)


def engine() -> Engine:
    return get_engine(ledger_url())


def load_registry() -> None:
    registry.load_job_modules(get_settings().job_modules)


def job_types() -> list[registry.JobType]:
    load_registry()
    return registry.all_types()


def known_queues(url: str) -> list[str]:
    """The declared queues (job types' and QUEUE_QUEUES) and those of registered workers."""
    names = set(api.declared_queues())
    for w in workers(url):
        names.update(w.get("queues") or [])
    return sorted(names)


def floor_time(now: datetime, seconds: int) -> datetime:
    """``now`` rounded down, so a time window is a stable cache key for a few seconds."""
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


# --- jobs (through the job API) -----------------------------------------------------------


#: the columns of the Jobs table (no payload, result or error history)
LIST_COLUMNS = (
    "id",
    "status",
    "type",
    "queue",
    "priority",
    "attempt",
    "max_attempts",
    "created_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "worker_id",
    "last_error",
)


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=500)
def jobs_page(
    url: str,
    *,
    status: tuple[str, ...] = (),
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One page of the Jobs table, with the filters of ``api.get_jobs``: the ``LIST_COLUMNS``
    only, never payloads (the opened job is read whole by ``job``)."""
    bad = [s for s in status if s not in ALL_STATUSES]
    if bad:
        raise ConsoleError(f"unknown status {bad[0]!r}")
    with read(get_engine(url)) as conn:
        return queries.get_jobs(
            conn,
            status=list(status) or None,
            type=_filter_text("type", type),
            queue=_filter_text("queue", queue),
            since=since,
            until=until,
            search=_filter_text("search", search),
            limit=max(1, min(limit, 10_000)),
            offset=max(0, offset),
            columns=LIST_COLUMNS,
        )


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=200)
def jobs_search_page(
    url: str,
    *,
    search: str,
    status: tuple[str, ...] = (),
    type: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    everything: bool = False,
) -> tuple[list[dict[str, Any]], datetime | None]:
    """One page of a payload search (``queries.search_jobs``): the rows, and when the search
    budget ran out first, the creation time back to which jobs were searched (None: exact).
    ``everything``: no budget, every job is searched (the user asked for it)."""
    bad = [s for s in status if s not in ALL_STATUSES]
    if bad:
        raise ConsoleError(f"unknown status {bad[0]!r}")
    with read(get_engine(url)) as conn:
        found = queries.search_jobs(
            conn,
            search=_filter_text("search", search) or "",
            status=list(status) or None,
            type=_filter_text("type", type),
            queue=_filter_text("queue", queue),
            since=since,
            limit=max(1, min(limit, 10_000)),
            offset=max(0, offset),
            columns=LIST_COLUMNS,
            budget_seconds=None if everything else SEARCH_BUDGET_SECONDS,
        )
    return found.rows, found.searched_since


@st.cache_data(ttl=2, show_spinner=False, max_entries=200)
def job(url: str, job_id: str) -> dict[str, Any]:
    return api.get_job(job_id)


def job_log(
    url: str, job_id: str, *, attempt: int | None, contains: str | None
) -> list[dict[str, Any]]:
    """The newest ``LOG_LINES_SHOWN`` lines of a job's log (per-job logs), oldest first."""
    lines = api.job_logs(job_id, attempt=attempt, contains=contains or None, limit=10_000)
    return lines[-LOG_LINES_SHOWN:]


#: lines of a job's log the job detail shows (an attempt keeps at most 1,000)
LOG_LINES_SHOWN = 2000


def _filter_text(name: str, value: str | None) -> str | None:
    """A text filter the database can take (what the job API's ``get_jobs`` checks too)."""
    if value is not None and ("\x00" in value or len(value) > MAX_FILTER_TEXT):
        raise ConsoleError(f"{name} must be at most {MAX_FILTER_TEXT} characters without NUL")
    return value


def matching_job_ids(
    *,
    statuses: list[str],
    type: str | None,
    queue: str | None,
    since: datetime | None,
    until: datetime | None,
    search: str | None,
    cap: int = BULK_CAP,
) -> tuple[list[str], bool]:
    """Ids of every job matching the filters (not cached), newest first: one statement that
    reads ids only, never payloads.

    ``until`` is pinned to now, so jobs created meanwhile are not included. Returns the ids (at
    most ``cap``) and whether the cap cut the list short.
    """
    now = datetime.now(UTC) + timedelta(microseconds=1)
    until = now if until is None else min(until, now)
    with read(engine()) as conn:
        found = queries.job_ids(
            conn,
            status=statuses or None,
            type=_filter_text("type", type),
            queue=_filter_text("queue", queue),
            since=since,
            until=until,
            search=_filter_text("search", search),
            limit=cap + 1,
        )
    return [str(i) for i in found[:cap]], len(found) > cap


def job_statuses(ids: list[str]) -> dict[str, str]:
    """The status of each of ``ids`` now (not cached; ids and statuses only)."""
    with read(engine()) as conn:
        found = queries.job_statuses(conn, [uuid.UUID(i) for i in ids])
    return {str(k): v for k, v in found.items()}


@dataclass(frozen=True)
class JobRef:
    """What a job reference typed by a user (``?id=`` or the *Open a job by id* box) names."""

    text: str
    job_id: str | None = None  # the one job it names
    candidates: tuple[str, ...] = ()  # more than one job starts with it
    problem: str | None = None  # why it names no job


def resolve_job_ref(url: str, ref: str) -> JobRef:
    """A full job id, or a prefix of at least ``MIN_ID_PREFIX`` hex digits (dashes optional,
    any case) that starts exactly one job id: on PostgreSQL and SQLite alike, one range of the
    primary key."""
    text = ref.strip()
    digits = text.replace("-", "").lower()
    if not text or len(text) > 64:
        return JobRef(text, problem="not a job id")
    if len(digits) < MIN_ID_PREFIX or len(digits) > 32 or set(digits) - set(HEX_DIGITS):
        return JobRef(
            text,
            problem=f"not a job id: give the full id or its first {MIN_ID_PREFIX} or more "
            "hex digits",
        )
    if len(digits) == 32:
        job_id = str(uuid.UUID(digits))
        with read(get_engine(url)) as conn:
            found = queries.ids_in_range(conn, uuid.UUID(job_id), uuid.UUID(job_id), 1)
        return JobRef(text, job_id=job_id) if found else JobRef(text, problem="no such job")
    canonical = "-".join(
        part
        for part in (digits[0:8], digits[8:12], digits[12:16], digits[16:20], digits[20:])
        if part
    )
    bounds = queries.id_prefix_range(canonical)
    if bounds is None:  # unreachable for hex digits in the canonical groups
        return JobRef(text, problem="not a job id")
    with read(get_engine(url)) as conn:
        found = queries.ids_in_range(conn, *bounds, limit=PREFIX_CANDIDATES + 1)
    if not found:
        return JobRef(text, problem="no job id starts with it")
    if len(found) > 1:
        return JobRef(text, candidates=tuple(str(i) for i in found))
    return JobRef(text, job_id=str(found[0]))


@dataclass(frozen=True)
class StatusCount:
    n: int
    exact: bool = True
    estimated: bool = False  # not exact: ``n`` is the planner's estimate (else "more than")

    def label(self) -> str:
        if self.exact:
            return f"{self.n:,}"
        if not self.estimated:
            return f"{COUNT_CAP:,}+"
        for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
            if self.n >= size:
                return f"≈{self.n / size:.1f} {unit}"
        return f"≈{self.n:,}"


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def status_counts(url: str) -> dict[str, StatusCount]:
    """Jobs per status in the whole ledger, cheap at any size: each status counted exactly up
    to ``COUNT_CAP`` (bounded index ranges); above it, PostgreSQL's planner estimate."""
    with read(get_engine(url)) as conn:
        counts = queries.status_counts(conn, COUNT_CAP)
        big = [s for s, n in counts.items() if n > COUNT_CAP]
        estimates = queries.status_estimates(conn) if big else {}
    out: dict[str, StatusCount] = {}
    for status, n in counts.items():
        if n <= COUNT_CAP:
            out[status] = StatusCount(n, exact=True)
        else:
            estimate = estimates.get(status)
            out[status] = StatusCount(
                max(estimate, COUNT_CAP + 1) if estimate is not None else COUNT_CAP + 1,
                exact=False,
                estimated=estimate is not None,
            )
    return out


# --- workers ------------------------------------------------------------------------------


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def workers(url: str) -> list[dict[str, Any]]:
    with read(get_engine(url)) as conn:
        return queries.list_workers(conn)


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def running_jobs(url: str) -> list[dict[str, Any]]:
    """The running jobs: ``id``, ``type``, ``worker_id``, ``started_at`` only (no payloads)."""
    with read(get_engine(url)) as conn:
        return queries.running_job_refs(conn, RUNNING_CAP)


def worker_names(url: str) -> dict[str, str]:
    """Worker id -> name, for showing names instead of UUIDs."""
    return {str(w["id"]): str(w["name"]) for w in workers(url)}


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def queue_controls(url: str) -> list[dict[str, Any]]:
    """Paused queues (empty when the job API has no queue controls)."""
    get = getattr(api, "get_queue_controls", None)
    return list(get()) if get is not None else []


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def queue_summary(url: str) -> list[dict[str, Any]]:
    """One row per queue for the Queues page (``metrics.read.queues.queue_summary``): live
    counts exact up to ``COUNT_CAP``, rollup figures, live workers and slots."""
    queues = set(api.declared_queues())
    queues.update(c["queue_name"] for c in queue_controls(url))
    return list(read_queues.queue_summary(get_engine(url), queues=sorted(queues), cap=COUNT_CAP))


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def partitioned_queues(url: str, queues: tuple[str, ...]) -> list[str]:
    """Those of ``queues`` with partitioned jobs (``@job(partition_by=...)``): the queues of
    the partitioned job types this console knows, and the queues that have partitioned jobs
    queued, dispatched or running (``metrics.partitions.partitioned_queues``)."""
    load_registry()
    declared = {t.queue for t in registry.all_types() if t.partition_by is not None}
    found = set(partitions.partitioned_queues(get_engine(url), queues))
    return sorted((declared & set(queues)) | found)


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=50)
def partition_breakdown(url: str, queue: str, limit: int = 20) -> partitions.PartitionBreakdown:
    """The top ``limit`` partitions of ``queue`` and how many it has in all
    (``metrics.partitions.partition_breakdown``). Cached longer than the live counts: its
    read of the queued jobs grows with the queue's partitioned backlog."""
    return partitions.partition_breakdown(get_engine(url), queue=queue, limit=limit)


def queue_limits() -> dict[str, list[str]]:
    """Per queue: the concurrency and rate limits of its job types, in words."""
    load_registry()
    out: dict[str, list[str]] = {}
    for t in registry.limited_types():
        parts = []
        each = f" per {t.partition_by}" if t.partition_by is not None else ""
        if t.concurrency is not None:
            parts.append(f"{t.concurrency} at once{each}")
        if t.rate_limit is not None:
            parts.append(f"{t.rate_limit.describe()}{each}")
        if t.partition_by is not None:
            parts.append(f"fair share by {t.partition_by}")
        out.setdefault(t.queue, []).append(f"{t.name}: {', '.join(parts)}")
    return out


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def maintainer_signal(url: str) -> dict[str, Any]:
    return dict(read_overview.maintainer_signal(get_engine(url)))


# --- audit log ----------------------------------------------------------------------------


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=100)
def audit_entries(
    url: str,
    *,
    username: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    job_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[dict[str, Any]]:
    with read(get_engine(url)) as conn:
        return audit.entries(
            conn,
            username=username,
            action=action,
            outcome=outcome,
            since=since,
            job_id=job_id,
            limit=limit,
            offset=offset,
        )


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=20)
def audit_choices(url: str, column: str) -> list[str]:
    with read(get_engine(url)) as conn:
        return audit.distinct_values(conn, column)


# --- metrics read models --------------------------------------------------------------------


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def overview_kpis(url: str) -> dict[str, Any]:
    return dict(read_overview.overview_kpis(get_engine(url)))


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=200)
def time_series(
    url: str,
    *,
    start: datetime,
    end: datetime,
    resolution: str = "minute",
    by: str = "queue",
    queue: str | None = None,
    job_type: str | None = None,
) -> list[dict[str, Any]]:
    return list(
        read_series.time_series(
            get_engine(url),
            start=start,
            end=end,
            resolution=resolution,
            by=by,
            queue=queue,
            job_type=job_type,
        )
    )


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=20)
def success_criteria(url: str, window_minutes: int = 60) -> list[dict[str, Any]]:
    """The mission's targets (each set by a ``QUEUE_TARGET_*`` variable) against the rollups;
    a bad setting is one readable line."""
    try:
        return list(read_overview.success_criteria(get_engine(url), window_minutes=window_minutes))
    except ValueError as exc:
        raise ConsoleError(str(exc)) from None


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=100)
def error_groups(
    url: str,
    *,
    since: datetime,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    return list(
        read_errors.error_groups(
            get_engine(url), since=since, queue=queue, job_type=job_type, limit=limit
        )
    )


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=200)
def capacity(
    url: str,
    *,
    queue: str,
    window_minutes: int = 60,
    target_p95_wait_seconds: float = 5.0,
    load_factor: float = 1.0,
) -> dict[str, Any]:
    return dict(
        read_capacity.capacity(
            get_engine(url),
            queue=queue,
            window_minutes=window_minutes,
            target_p95_wait_seconds=target_p95_wait_seconds,
            load_factor=load_factor,
        )
    )


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=200)
def capacity_measured(url: str, *, queue: str, window_minutes: int = 60) -> dict[str, Any]:
    return dict(
        read_capacity.capacity_measured(get_engine(url), queue=queue, window_minutes=window_minutes)
    )


def periodic_schedules() -> list[tuple[str, registry.Schedule, str]]:
    load_registry()
    return [
        (t.name, t.schedule, t.queue) for t in registry.periodic_types() if t.schedule is not None
    ]


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def periodic_health(url: str) -> list[dict[str, Any]]:
    return list(read_periodic.periodic_health(get_engine(url), schedules=periodic_schedules()))


def clear_job_caches() -> None:
    """After a write: the acting user sees the change on the next run."""
    for fn in (
        jobs_page,
        jobs_search_page,
        job,
        running_jobs,
        status_counts,
        workers,
        queue_controls,
        queue_summary,
        partitioned_queues,
        partition_breakdown,
        audit_entries,
        audit_choices,
    ):
        fn.clear()
    for fn in (overview_kpis, error_groups, periodic_health):
        fn.clear()


# --- alerts (db/alerts.py, docs/operations.md#alerts) --------------------------------------


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def active_alerts(url: str) -> list[dict[str, Any]]:
    from db import alerts

    with read(get_engine(url)) as conn:
        return alerts.active_alerts(conn)


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def alert_history(url: str, limit: int = 200) -> list[dict[str, Any]]:
    from db import alerts

    with read(get_engine(url)) as conn:
        return alerts.history(conn, limit)


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def alert_silences(url: str) -> list[dict[str, Any]]:
    from db import alerts

    with read(get_engine(url)) as conn:
        return alerts.all_silences(conn)


def alert_rule_names() -> list[str]:
    """The rules the maintainer evaluates (defaults + QUEUE_ALERT_RULES_FILE)."""
    from tasks.alerts.rules import DEFAULT_RULES, RuleConfigError, load_rules
    from tasks.alerts.settings import get_alert_settings

    try:
        rules = load_rules(get_alert_settings().queue_alert_rules_file)
    except (OSError, RuleConfigError):
        rules = list(DEFAULT_RULES)
    return [r.name for r in rules]


def clear_alert_caches() -> None:
    active_alerts.clear()
    alert_history.clear()
    alert_silences.clear()


def live_job_with_key(key: str) -> str | None:
    """The live job that holds this idempotency key now (not cached)."""
    with read(engine()) as conn:
        found = queries.live_job_with_key(conn, key)
    return None if found is None else str(found)
