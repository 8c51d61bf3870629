"""Reads of fair share (``@job(partition_by=...)``): which partitions of a type have queued
jobs, how many jobs each has dispatched or running (concurrency) or started lately (rate
limit), and each partition's best queued jobs. The dispatcher ranks them round-robin and
dispatches the chosen ids with ``ledger.maintainer.dispatch_ids`` (the one state transition).

Every read goes through the partial indexes of migration 0014, which hold partitioned jobs
only: ``ix_queue_jobs_partition_order`` (queued, by queue, type, partition, dispatch order)
and ``ix_queue_jobs_active_partition`` (dispatched or running, by type and partition).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, Text, bindparam, func, literal, or_, select, text, true
from sqlalchemy.dialects import postgresql

from db.driver import driver_for
from db.models import Job
from db.states import LEASED, JobStatus, sorted_values, sql_list
from db.types import db_now

S = JobStatus
jobs = Job.__table__

#: the inline status literal of the constant statement below, rendered from the enum (a
#: partial index's predicate needs the literal for a generic plan to use it)
_QUEUED = sql_list([S.QUEUED])

#: Distinct partitions with queued jobs of one type in one queue, in key order after
#: ``:after``, by skip-scan over ``ix_queue_jobs_partition_order``: one index probe per
#: partition, at most ``:limit`` of them, however many jobs each holds. (A partition key is
#: never empty, so ``after = ''`` starts at the first.)
_QUEUED_PARTITIONS = text(
    f"""
    WITH RECURSIVE p(key, n) AS (
        SELECT (SELECT partition_key FROM queue_jobs
                WHERE status = {_QUEUED} AND partition_key IS NOT NULL
                  AND queue = :queue AND type = :type AND partition_key > :after
                ORDER BY partition_key LIMIT 1), 1
        UNION ALL
        SELECT (SELECT j.partition_key FROM queue_jobs j
                WHERE j.status = {_QUEUED} AND j.partition_key IS NOT NULL
                  AND j.queue = :queue AND j.type = :type AND j.partition_key > p.key
                ORDER BY j.partition_key LIMIT 1), p.n + 1
        FROM p WHERE p.key IS NOT NULL AND p.n < :limit
    )
    SELECT key FROM p WHERE key IS NOT NULL
    """
)


def queued_partitions(
    conn: Connection, queue: str, job_type: str, *, after: str, limit: int
) -> list[str]:
    """Up to ``limit`` partitions of ``job_type`` with queued jobs in ``queue``, in rotation
    order: the keys after ``after``, then from the first key on (wrapping around once)."""
    params = {"queue": queue, "type": job_type, "limit": limit}
    keys = list(conn.execute(_QUEUED_PARTITIONS, {**params, "after": after}).scalars())
    if len(keys) < limit and after:
        head = conn.execute(_QUEUED_PARTITIONS, {**params, "after": "", "limit": limit - len(keys)})
        keys.extend(k for k in head.scalars() if k <= after)
    return keys


def _count_by_partition(
    conn: Connection, job_type: str, keys: Sequence[str], *where: Any
) -> dict[str, int]:
    """Jobs of ``job_type`` in the partitions ``keys`` that meet ``where``, per partition."""
    if not keys:
        return {}
    rows = conn.execute(
        select(jobs.c.partition_key, func.count())
        .where(jobs.c.type == job_type, jobs.c.partition_key.in_(list(keys)), *where)
        .group_by(jobs.c.partition_key)
    )
    return {key: int(n) for key, n in rows}


def active_by_partition(conn: Connection, job_type: str, keys: Sequence[str]) -> dict[str, int]:
    """Jobs of ``job_type`` dispatched or running, per partition (counted against a
    per-partition concurrency limit)."""
    return _count_by_partition(conn, job_type, keys, jobs.c.status.in_(sorted_values(LEASED)))


def starts_by_partition(
    conn: Connection, job_type: str, keys: Sequence[str], period_seconds: float
) -> dict[str, int]:
    """Attempts of ``job_type`` started in the last ``period_seconds`` or dispatched and
    about to start, per partition (counted against a per-partition rate limit)."""
    recent = or_(jobs.c.status == S.DISPATCHED.value, jobs.c.started_at >= db_now(-period_seconds))
    return _count_by_partition(conn, job_type, keys, recent)


@dataclass(frozen=True)
class Candidate:
    """A queued job a fair pass may dispatch."""

    partition_key: str
    id: uuid.UUID
    priority: int
    scheduled_at: datetime


def _queued_of(queue: str, job_type: str) -> list[Any]:
    return [
        # inline, not a parameter: a generic plan can then use the partial index
        jobs.c.status == literal(S.QUEUED.value, literal_execute=True),
        jobs.c.partition_key.is_not(None),
        jobs.c.queue == queue,
        jobs.c.type == job_type,
    ]


_COLUMNS = (jobs.c.partition_key, jobs.c.id, jobs.c.priority, jobs.c.scheduled_at)


def best_queued(
    conn: Connection, queue: str, job_type: str, caps: dict[str, int]
) -> list[Candidate]:
    """The best ``caps[key]`` queued jobs (priority, then age) of each partition ``key``.
    PostgreSQL reads each partition's jobs by index (a LATERAL subquery per partition, LIMIT
    its cap); SQLite, the embedded default, numbers the partitions' queued jobs with a
    window function."""
    caps = {key: cap for key, cap in caps.items() if cap > 0}
    if not caps:
        return []
    order = (jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
    if driver_for(conn).array_sql:
        wanted = (
            func.unnest(
                bindparam("keys", list(caps), type_=postgresql.ARRAY(Text())),
                bindparam("caps", list(caps.values()), type_=postgresql.ARRAY(Integer())),
            )
            .table_valued("key", "cap")
            .render_derived(name="wanted")
        )
        best = (
            select(*_COLUMNS)
            .where(*_queued_of(queue, job_type), jobs.c.partition_key == wanted.c.key)
            .order_by(*order)
            .limit(wanted.c.cap)
            .lateral("best")
        )
        rows = conn.execute(select(best).select_from(wanted.join(best, true())))
        return [Candidate(*row) for row in rows]
    rank = func.row_number().over(partition_by=jobs.c.partition_key, order_by=order)
    numbered = (
        select(*_COLUMNS, rank.label("rank"))
        .where(*_queued_of(queue, job_type), jobs.c.partition_key.in_(list(caps)))
        .subquery("numbered")
    )
    rows = conn.execute(
        select(*(numbered.c[c.name] for c in _COLUMNS), numbered.c.rank).where(
            numbered.c.rank <= max(caps.values())
        )
    )
    return [Candidate(*row[:4]) for row in rows if row.rank <= caps[row.partition_key]]


def round_robin(
    candidates: Sequence[Candidate], rotation: Sequence[str], limit: int
) -> list[Candidate]:
    """Up to ``limit`` candidates, best priority first; within a priority one job per
    partition per round, the partitions of a round in ``rotation`` order (the fair pass's
    cursor goes round the keys), each partition's jobs oldest first."""
    place = {key: i for i, key in enumerate(rotation)}
    ordered = sorted(candidates, key=lambda c: (c.partition_key, -c.priority, c.scheduled_at, c.id))
    rounds: dict[tuple[str, int], int] = {}
    ranked = []
    for c in ordered:
        n = rounds.get((c.partition_key, c.priority), 0)
        rounds[(c.partition_key, c.priority)] = n + 1
        ranked.append((-c.priority, n, place.get(c.partition_key, len(place)), c))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked[:limit]]
