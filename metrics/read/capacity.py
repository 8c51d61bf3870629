"""Read models of the Capacity page: an Erlang C (M/M/c) model of a queue next to what the
rollups measured, and the live worker slots credited to each queue."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from db.clock import db_clock
from db.engine import read
from db.models import Metric, Worker
from metrics import hist
from metrics.queueing import servers_needed, wait_percentile
from metrics.read.common import stale_seconds, window_totals
from metrics.rollup import MINUTE, floor_minute

workers = Worker.__table__
queue_metrics = Metric.__table__


def capacity(
    engine: Engine,
    *,
    queue: str,
    window_minutes: int = 60,
    target_p95_wait_seconds: float = 5.0,
    load_factor: float = 1.0,
) -> dict[str, Any]:
    """Erlang C (M/M/c) view of one queue over the last ``window_minutes`` rolled-up minutes.

    ``arrival_rate`` = (finished jobs + retried attempts + growth of the depth) / seconds since
    the window's first row; ``mean_service_seconds`` = mean processing time; ``live_slots`` =
    the slots of the live workers serving the queue credited to it (:func:`credited_slots`:
    a worker serving several queues shares its slots between them), rounded for the model
    (at least 1 when any). ``utilization`` = arrival * service * load_factor / credited slots;
    ``p95_wait_seconds`` = the M/M/c 95th percentile wait with the live slots at the scaled
    load (None when unstable or unknown); ``workers_needed`` = the fewest slots meeting
    ``target_p95_wait_seconds`` at the scaled load (in slots, i.e. worker concurrency).
    """
    if window_minutes < 1:
        raise ValueError("window_minutes must be at least 1")
    if load_factor < 0:
        raise ValueError("load_factor must be >= 0")
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        t = window_totals(conn, until - window_minutes * MINUTE, until, queue, hists=False)
        credited = credited_slots(conn, now, until - window_minutes * MINUTE, until).get(queue)
    credited_n = credited.credited if credited is not None else 0.0
    slots = 0 if credited_n <= 0 else max(1, round(credited_n))
    seconds = (until - t.first).total_seconds() if t.first is not None else 0.0
    growth = max(0, (t.depth_last or 0) - (t.depth_first or 0))
    arrival = (t.job_count + t.retries + growth) / seconds if seconds > 0 else 0.0
    mean_ms = t.processing_mean_ms
    service = mean_ms / 1000.0 if mean_ms is not None else None
    scaled = arrival * load_factor
    offered = scaled * service if service is not None else None
    p95 = None
    needed: int | None = None
    if service is not None and service > 0:
        rate = 1.0 / service
        if slots > 0:
            w = wait_percentile(slots, scaled, rate, 0.95)
            p95 = None if math.isinf(w) else w
        needed = servers_needed(scaled, rate, 0.95, target_p95_wait_seconds)
    elif scaled == 0:
        needed = 0
    return {
        "queue": queue,
        "arrival_rate": arrival,
        "mean_service_seconds": service,
        "live_slots": slots,
        "utilization": (offered / credited_n) if (offered is not None and credited_n) else None,
        "p95_wait_seconds": p95,
        "workers_needed": needed,
        "load_factor": load_factor,
    }


@dataclass
class QueueSlots:
    """The live worker slots of one queue: ``serving`` (every slot of every live worker that
    serves it, shared ones included) and ``credited`` (its share of them)."""

    workers: int = 0
    serving: int = 0
    credited: float = 0.0


def credited_slots(
    conn: Connection, now: datetime, since: datetime, until: datetime
) -> dict[str, QueueSlots]:
    """Per queue, the slots of the live workers that serve it, and the share credited to it.

    A worker serving one queue gives it all its slots. A worker serving several shares its
    slots between them in proportion to the handler time each used in [since, until) (the
    rollups' ``busy_seconds``), equally when none was used; so the credited slots of all
    queues add up to the live slots, never more."""
    rows = conn.execute(
        select(workers.c.queues, workers.c.concurrency).where(
            workers.c.status == "running",
            workers.c.last_heartbeat >= now - timedelta(seconds=stale_seconds()),
        )
    ).all()
    busy: dict[str, float] = {}
    if any(len(r.queues or []) > 1 for r in rows):
        busy_seconds = func.sum(queue_metrics.c.busy_seconds).label("busy_seconds")
        busy = {
            r.queue_name: float(r.busy_seconds or 0.0)
            for r in conn.execute(
                select(queue_metrics.c.queue_name, busy_seconds)
                .where(queue_metrics.c.timestamp >= since, queue_metrics.c.timestamp < until)
                .group_by(queue_metrics.c.queue_name)
            )
        }
    out: dict[str, QueueSlots] = {}
    for r in rows:
        served = list(dict.fromkeys(r.queues or []))
        if not served:
            continue
        concurrency = int(r.concurrency)
        weights = [max(0.0, busy.get(q, 0.0)) for q in served]
        total = sum(weights)
        for q, weight in zip(served, weights, strict=True):
            share = weight / total if total > 0 else 1.0 / len(served)
            entry = out.setdefault(q, QueueSlots())
            entry.workers += 1
            entry.serving += concurrency
            entry.credited += concurrency * share
    return out


#: fewer finished jobs than this in the window: the page says "not enough data"
MIN_JOBS_FOR_CAPACITY = 20


def capacity_measured(engine: Engine, *, queue: str, window_minutes: int = 60) -> dict[str, Any]:
    """What the rollups measured for one queue over the window, next to :func:`capacity`'s
    model: ``finished_jobs``, ``measured_p95_wait_seconds`` (from the wait histograms; None
    without data), the live slots ``serving`` it and ``credited`` to it, and ``enough_data``
    (at least ``MIN_JOBS_FOR_CAPACITY`` jobs finished with a measured processing time)."""
    if window_minutes < 1:
        raise ValueError("window_minutes must be at least 1")
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        since = until - window_minutes * MINUTE
        t = window_totals(conn, since, until, queue)
        slots = credited_slots(conn, now, since, until).get(queue, QueueSlots())
    p95_ms = hist.quantile(t.wait_counts, 0.95)
    return {
        "queue": queue,
        "finished_jobs": t.job_count,
        "measured_p95_wait_seconds": None if p95_ms is None else p95_ms / 1000.0,
        "serving_workers": slots.workers,
        "serving_slots": slots.serving,
        "credited_slots": slots.credited,
        "enough_data": t.job_count >= MIN_JOBS_FOR_CAPACITY and t.processing_weight > 0,
    }
