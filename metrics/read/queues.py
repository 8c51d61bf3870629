"""Read model of the Queues page: one row per queue with live counts (exact up to a cap),
the last hour's failures, recent p95 wait and throughput from the rollups, and the live
workers serving it. (Its partition breakdown is :mod:`metrics.partitions`.)"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from db import queries, states
from db.clock import db_clock
from db.engine import read
from db.models import Metric
from db.queries import live_workers
from db.states import JobStatus, sorted_values
from metrics import hist
from metrics.read.common import stale_seconds
from metrics.rollup import MINUTE, floor_minute

queue_metrics = Metric.__table__


@dataclass
class QueueCount:
    """Jobs of one queue in some statuses: ``n``, exact or (``exact`` False) a lower bound."""

    n: int = 0
    exact: bool = True

    def add(self, n: int, exact: bool) -> None:
        self.n += n
        self.exact = self.exact and exact


#: statuses held back by workflow dependencies, where the ledger has them (``states.BLOCKED``)
BLOCKED_STATUSES = sorted_values(getattr(states, "BLOCKED", frozenset()))
#: the live counts of a Queues row
QUEUE_COUNT_KINDS = ("waiting", "scheduled", "running", *(("blocked",) if BLOCKED_STATUSES else ()))


def _live_counts(
    conn: Connection, cap: int, queues: Iterable[str]
) -> dict[str, dict[str, QueueCount]]:
    """Per queue: ``waiting`` (queued or dispatched), ``scheduled`` (scheduled or retrying:
    waiting for their due time), ``running`` and, with workflows, ``blocked`` (held back by
    dependencies), each exact up to ``cap`` jobs of a status."""
    groups = {
        JobStatus.QUEUED.value: "waiting",
        JobStatus.DISPATCHED.value: "waiting",
        JobStatus.SCHEDULED.value: "scheduled",
        JobStatus.RETRYING.value: "scheduled",
        JobStatus.RUNNING.value: "running",
        **dict.fromkeys(BLOCKED_STATUSES, "blocked"),
    }
    counted = queries.queue_status_counts(conn, cap, tuple(groups))
    queued, queued_exact = counted[JobStatus.QUEUED.value]
    if not queued_exact:  # more than ``cap`` queued jobs: count each queue on its own
        exact = queries.queued_per_queue(conn, sorted(set(queued) | set(queues)), cap)
        counted[JobStatus.QUEUED.value] = (exact, True)
        capped = {q for q, n in exact.items() if n > cap}
    else:
        capped = set()
    out: dict[str, dict[str, QueueCount]] = {}
    for status, (by_queue, exact_counts) in counted.items():
        for queue, n in by_queue.items():
            if n == 0:
                continue
            row = out.setdefault(queue, {name: QueueCount() for name in QUEUE_COUNT_KINDS})
            over = status == JobStatus.QUEUED.value and queue in capped
            row[groups[status]].add(min(n, cap) if over else n, exact_counts and not over)
    return out


def queue_summary(
    engine: Engine, *, queues: Iterable[str] = (), cap: int = 10_000
) -> list[dict[str, Any]]:
    """One row per queue (``queues`` and every queue that has live jobs or live workers):
    live counts, the last hour's failures, p95 wait (last 15 minutes), throughput (last 5
    minutes) and the live workers serving it with their slots.

    The counts read at most ``cap + 1`` index entries per status (exact up to ``cap``, then a
    lower bound: ``*_exact`` False); the rest comes from the rollups and the workers table, so
    the cost does not grow with the number of jobs."""
    queues = list(queues)
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        serving = live_workers(conn, now, stale_seconds())
        counts = _live_counts(conn, cap, [*queues, *serving])
        rows = conn.execute(
            select(
                queue_metrics.c.queue_name,
                queue_metrics.c.timestamp,
                queue_metrics.c.job_count,
                queue_metrics.c.failed_count,
                queue_metrics.c.wait_hist,
            ).where(
                queue_metrics.c.timestamp >= until - 60 * MINUTE,
                queue_metrics.c.timestamp < until,
            )
        ).all()
    failed: dict[str, int] = {}
    recent: dict[str, int] = {}
    waits: dict[str, dict[str, int]] = {}
    any_recent = False
    for r in rows:
        name, ts = r.queue_name, r.timestamp
        failed[name] = failed.get(name, 0) + int(r.failed_count or 0)
        if ts >= until - 5 * MINUTE:
            any_recent = True
            recent[name] = recent.get(name, 0) + int(r.job_count or 0)
        if r.wait_hist is not None and ts >= until - 15 * MINUTE:
            hist.merge_raw(waits.setdefault(name, {}), r.wait_hist)
    names = sorted(set(queues) | set(counts) | set(serving))
    out = []
    for name in names:
        live = counts.get(name, {})
        workers_n, slots = serving.get(name, (0, 0))
        row: dict[str, Any] = {"queue": name}
        for kind in QUEUE_COUNT_KINDS:
            c = live.get(kind, QueueCount())
            row[kind], row[f"{kind}_exact"] = c.n, c.exact
        row.update(
            failed_last_hour=failed.get(name, 0) if rows else None,
            p95_wait_ms=hist.quantile(hist.int_keys(waits.get(name, {})), 0.95),
            throughput_per_s=recent.get(name, 0) / 300.0 if any_recent else None,
            workers=workers_n,
            slots=slots,
        )
        out.append(row)
    return out
