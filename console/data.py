"""Reads for the console, cached briefly and keyed by the ledger URL.

Jobs are read through ``tasks.api``; charts come only from the metrics read models
(``metrics.read_models``), never from scanning ``queue_jobs``. Writes clear the job caches
(``clear_job_caches``) so users see their own changes at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from console.errors import ConsoleError
from db import audit, queries
from db.engine import engine_for, read
from db.settings import get_settings
from db.states import JobStatus
from tasks import api, registry

JOBS_TTL = 3
METRICS_TTL = 5
SLOW_TTL = 10
BULK_CAP = 10_000
BULK_PAGE = 1_000


class MetricsUnavailable(ConsoleError):
    """The metrics read models are not installed (metrics/read_models.py missing)."""


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


def read_models() -> ModuleType:
    try:
        from metrics import read_models as models
    except ImportError as exc:
        raise MetricsUnavailable(
            f"the metrics read models are not available ({exc}); charts need metrics/read_models.py"
        ) from None
    return models


def floor_time(now: datetime, seconds: int) -> datetime:
    """``now`` rounded down, so a time window is a stable cache key for a few seconds."""
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


# --- jobs (through the job API) -----------------------------------------------------------


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
    return api.get_jobs(
        status=list(status) or None,
        type=type,
        queue=queue,
        since=since,
        until=until,
        search=search,
        limit=limit,
        offset=offset,
    )


@st.cache_data(ttl=2, show_spinner=False, max_entries=200)
def job(url: str, job_id: str) -> dict[str, Any]:
    return api.get_job(job_id)


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
    """Ids of every job matching the filters (not cached), paging through ``get_jobs``.

    ``until`` is pinned to now, so jobs created meanwhile do not shift the pages. Returns the
    ids (at most ``cap``) and whether the cap cut the list short.
    """
    now = datetime.now(UTC) + timedelta(microseconds=1)
    until = now if until is None else min(until, now)
    ids: list[str] = []
    seen: set[str] = set()
    offset = 0
    while len(ids) < cap:
        page = api.get_jobs(
            status=statuses or None,
            type=type,
            queue=queue,
            since=since,
            until=until,
            search=search,
            limit=BULK_PAGE,
            offset=offset,
        )
        for row in page:
            jid = str(row["id"])
            if jid not in seen:
                seen.add(jid)
                ids.append(jid)
        if len(page) < BULK_PAGE:
            return ids[:cap], False
        offset += BULK_PAGE
    more = bool(
        api.get_jobs(
            status=statuses or None,
            type=type,
            queue=queue,
            since=since,
            until=until,
            search=search,
            limit=1,
            offset=offset,
        )
    )
    return ids[:cap], more or len(ids) > cap


# --- workers ------------------------------------------------------------------------------


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def workers(url: str) -> list[dict[str, Any]]:
    with read(get_engine(url)) as conn:
        return queries.list_workers(conn)


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def running_jobs(url: str) -> list[dict[str, Any]]:
    return api.get_jobs(status=JobStatus.RUNNING.value, limit=5_000)


@st.cache_data(ttl=JOBS_TTL, show_spinner=False, max_entries=20)
def queue_controls(url: str) -> list[dict[str, Any]]:
    """Paused queues (empty when the job API has no queue controls)."""
    get = getattr(api, "get_queue_controls", None)
    return list(get()) if get is not None else []


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
    return dict(read_models().overview_kpis(get_engine(url)))


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
        read_models().time_series(
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
    return list(read_models().success_criteria(get_engine(url), window_minutes=window_minutes))


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
        read_models().error_groups(
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
        read_models().capacity(
            get_engine(url),
            queue=queue,
            window_minutes=window_minutes,
            target_p95_wait_seconds=target_p95_wait_seconds,
            load_factor=load_factor,
        )
    )


def periodic_schedules() -> list[tuple[str, registry.Schedule, str]]:
    load_registry()
    return [
        (t.name, t.schedule, t.queue) for t in registry.periodic_types() if t.schedule is not None
    ]


@st.cache_data(ttl=METRICS_TTL, show_spinner=False, max_entries=20)
def periodic_health(url: str) -> list[dict[str, Any]]:
    return list(read_models().periodic_health(get_engine(url), schedules=periodic_schedules()))


def clear_job_caches() -> None:
    """After a write: the acting user sees the change on the next run."""
    for fn in (jobs_page, job, running_jobs, workers, queue_controls, audit_entries, audit_choices):
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
    from tasks.alert_rules import DEFAULT_RULES, RuleConfigError, load_rules

    try:
        rules = load_rules(get_settings().queue_alert_rules_file)
    except (OSError, RuleConfigError):
        rules = list(DEFAULT_RULES)
    return [r.name for r in rules]


def clear_alert_caches() -> None:
    active_alerts.clear()
    alert_history.clear()
    alert_silences.clear()
