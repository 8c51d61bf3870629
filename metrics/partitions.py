"""Per-partition reads for the console (fair share, ``@job(partition_by=...)``): how one
queue's partitioned jobs are spread over their partitions.

A row is one partition of one job type (``type``, ``partition``):

* ``waiting``: its jobs ``queued``, i.e. due and waiting for the dispatcher's fair pass;
* ``running``: its jobs ``dispatched`` or ``running`` (what its concurrency limit counts);
* ``completed_1h`` / ``failed_1h``: its jobs that completed / failed in the last hour;
* ``oldest_wait_seconds``: the age of its oldest queued job, by ``scheduled_at``, on the
  database clock (None when nothing is queued).

Jobs ``scheduled`` or ``retrying`` (not due yet) are not counted as waiting: they do not
compete for a share of the queue until they are due, and no partition index holds them, so
counting them would read every delayed job of the ledger.

Only partitioned jobs (``partition_key IS NOT NULL``) are read, each read through an index
that holds just what it counts, never the whole table:

* waiting: ``ix_queue_jobs_partition_order`` (queued partitioned jobs, queue first), one
  range of the queue, grouped in index order (it holds ``scheduled_at`` too);
* running: ``ix_queue_jobs_active_partition`` (dispatched or running partitioned jobs; the
  planner may take ``ix_queue_jobs_active_type``, or on SQLite the range of those two statuses
  of ``ix_queue_jobs_status_created``: each holds the dispatched and running jobs only);
* the last hour: ``ix_queue_jobs_finished``, the range of the last hour's finishes.

The cost grows with the queue's queued partitioned jobs, the running jobs and the last hour's
finishes, not with the size of the ledger: 0.4 s on PostgreSQL for a queue with 1,000,000
partitioned jobs queued in 1,000 partitions, in a ledger of 5,160,200 jobs (an index-only scan
of the queue's range, about 0.4 µs an entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, bindparam, func, literal, select

from db.clock import db_clock
from db.driver import driver_for
from db.engine import read
from db.models import Job
from db.states import LEASED, JobStatus, sorted_values
from db.types import db_now

S = JobStatus
jobs = Job.__table__

#: the window of ``completed_1h`` and ``failed_1h``
RECENT_SECONDS = 3600
#: rows of a breakdown unless told otherwise (the console shows the top 20)
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class PartitionBreakdown:
    """The top partitions of a queue (``rows``, most waiting first) and how many partitions
    it has in all (``total_partitions``: (type, partition) pairs with jobs waiting, running
    or finished in the last hour)."""

    queue: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    total_partitions: int = 0


def _status_is(*statuses: JobStatus) -> ColumnElement[bool]:
    """``status = 'a'`` or ``status IN ('a', 'b')`` (sorted, as the partial indexes' predicates
    list them), the values inline, not parameters: a prepared, generic plan (PostgreSQL) and
    SQLite's planner, which matches a partial index's predicate term by term, can then use
    the partial index."""
    values = sorted_values(statuses)
    if len(values) == 1:
        return jobs.c.status == literal(values[0], literal_execute=True)
    name = "statuses_" + "_".join(values)
    return jobs.c.status.in_(bindparam(name, list(values), expanding=True, literal_execute=True))


def _waiting(conn: Connection, queue: str) -> list[Row[Any]]:
    stmt = (
        select(
            jobs.c.type,
            jobs.c.partition_key,
            func.count().label("n"),
            func.min(jobs.c.scheduled_at).label("oldest"),
        )
        .where(_status_is(S.QUEUED), jobs.c.partition_key.is_not(None), jobs.c.queue == queue)
        .group_by(jobs.c.type, jobs.c.partition_key)
        .order_by(jobs.c.type, jobs.c.partition_key)  # the index's order: no sort, no hash
    )
    return list(conn.execute(stmt))


def _running(conn: Connection, queue: str) -> list[Row[Any]]:
    # ``unindexed``: on SQLite ``+queue``, so that its planner goes by the partial index meant
    # for this read, not by ``ix_queue_jobs_queue_created``, which would visit every job of the
    # queue (SQLite keeps no statistics unless ANALYZE ran; PostgreSQL's planner is left alone)
    unindexed = driver_for(conn).unindexed
    stmt = (
        select(jobs.c.type, jobs.c.partition_key, func.count().label("n"))
        .where(
            _status_is(*LEASED),
            jobs.c.partition_key.is_not(None),
            unindexed(jobs.c.queue) == queue,
        )
        .group_by(jobs.c.type, jobs.c.partition_key)
    )
    return list(conn.execute(stmt))


def _finished(conn: Connection, queue: str) -> list[Row[Any]]:
    # as in ``_running``, and ``+status``: not ``ix_queue_jobs_status_created`` either, which
    # would visit every finished job of the status
    unindexed = driver_for(conn).unindexed
    stmt = (
        select(jobs.c.type, jobs.c.partition_key, jobs.c.status, func.count().label("n"))
        .where(
            jobs.c.finished_at >= db_now(-RECENT_SECONDS),
            unindexed(jobs.c.status).in_(sorted_values((S.COMPLETED, S.FAILED))),
            jobs.c.partition_key.is_not(None),
            unindexed(jobs.c.queue) == queue,
        )
        .group_by(jobs.c.type, jobs.c.partition_key, jobs.c.status)
    )
    return list(conn.execute(stmt))


def _blank(job_type: str, partition: str) -> dict[str, Any]:
    return {
        "type": job_type,
        "partition": partition,
        "waiting": 0,
        "running": 0,
        "completed_1h": 0,
        "failed_1h": 0,
        "oldest_wait_seconds": None,
    }


def _order(row: dict[str, Any]) -> tuple[int, int, str, str]:
    return (-row["waiting"], -row["running"], row["partition"], row["type"])


def partition_breakdown(
    engine: Engine, *, queue: str, limit: int = DEFAULT_LIMIT
) -> PartitionBreakdown:
    """The partitions of ``queue``'s partitioned jobs, most waiting first, then most
    running, then by partition key (and type): the top ``limit`` rows (see the module's
    docstring for what each number counts) and the number of partitions in all."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    with read(engine) as conn:
        now = db_clock(conn)
        waiting = _waiting(conn, queue)
        running = _running(conn, queue)
        finished = _finished(conn, queue)
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def row(job_type: str, partition: str) -> dict[str, Any]:
        return out.setdefault((job_type, partition), _blank(job_type, partition))

    for waiting_row in waiting:
        r = row(waiting_row.type, waiting_row.partition_key)
        r["waiting"] = int(waiting_row.n)
        r["oldest_wait_seconds"] = _age(now, waiting_row.oldest)
    for running_row in running:
        row(running_row.type, running_row.partition_key)["running"] = int(running_row.n)
    for finished_row in finished:
        kind = "completed_1h" if finished_row.status == S.COMPLETED.value else "failed_1h"
        row(finished_row.type, finished_row.partition_key)[kind] = int(finished_row.n)
    ranked = sorted(out.values(), key=_order)
    return PartitionBreakdown(queue=queue, rows=ranked[:limit], total_partitions=len(ranked))


def _age(now: datetime, oldest: datetime | None) -> float | None:
    """Seconds since ``oldest`` on the database clock (0 for a job due in the future)."""
    return None if oldest is None else max(0.0, (now - oldest).total_seconds())


def partitioned_queues(engine: Engine, queues: Iterable[str]) -> list[str]:
    """Those of ``queues`` that have partitioned jobs queued, dispatched or running, sorted:
    one probe of ``ix_queue_jobs_partition_order`` per queue and one read of the (few)
    active partitioned jobs."""
    names: Sequence[str] = sorted(set(queues))
    found: set[str] = set()
    with read(engine) as conn:
        for name in names:
            probe = (
                select(jobs.c.queue)
                .where(
                    _status_is(S.QUEUED),
                    jobs.c.partition_key.is_not(None),
                    jobs.c.queue == name,
                )
                .limit(1)
            )
            if conn.execute(probe).first() is not None:
                found.add(name)
        active = (
            select(jobs.c.queue)
            .where(_status_is(*LEASED), jobs.c.partition_key.is_not(None))
            .group_by(jobs.c.queue)
        )
        found.update(conn.execute(active).scalars())
    return sorted(found & set(names))
