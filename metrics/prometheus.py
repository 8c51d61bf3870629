"""Prometheus export: ``/metrics`` read from the ledger on every scrape.

Series (label ``queue`` everywhere):

- ``edurise_jobs{queue,status}`` gauge: jobs in each live status (scheduled, queued,
  dispatched, running, retrying), counted now. Terminal statuses are not counted (their
  number only reflects retention); finishes are ``edurise_jobs_finished``.
- ``edurise_jobs_finished{queue,status}`` gauge: jobs completed / failed in the last
  ``window`` rolled-up minutes (default 5).
- ``edurise_queue_depth{queue}`` gauge: waiting jobs (queued, dispatched, due scheduled or
  retrying), now.
- ``edurise_job_duration_seconds`` and ``edurise_job_wait_seconds`` gauge histograms
  (``_bucket{le}``, ``_gcount``, ``_gsum``) of the last ``window`` rolled-up minutes, built from
  the rollups' log histograms. They describe a sliding window, so use
  ``histogram_quantile(0.95, edurise_job_wait_seconds_bucket)`` directly, without ``rate()``.
- ``edurise_live_workers{queue}`` / ``edurise_worker_slots{queue}``: workers with a fresh
  heartbeat and their slots; ``edurise_live_workers_total``: distinct live workers.
- ``edurise_throughput_jobs_per_second{queue}``, ``edurise_utilization_ratio{queue}``: over the
  window; ``edurise_metrics_rollup_timestamp_seconds``: start of the newest rolled-up minute
  (alert when it lags); ``edurise_ledger_up``: 0 when the ledger could not be read.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select

from db.clock import db_clock
from db.engine import engine_for, read
from db.models import Job, Worker
from db.models import Metric as QueueMetric
from db.queries import current_depth, live_workers
from db.settings import get_settings
from db.states import LIVE, JobStatus, in_order
from metrics import hist
from metrics.rollup import MINUTE, floor_minute

log = logging.getLogger(__name__)

jobs = Job.__table__
workers = Worker.__table__
queue_metrics = QueueMetric.__table__

#: the ``status`` labels of ``edurise_jobs``, in the order of ``JobStatus``
LIVE_STATUSES = in_order(LIVE)
#: the ``status`` labels of ``edurise_jobs_finished``
COMPLETED, FAILED = JobStatus.COMPLETED.value, JobStatus.FAILED.value
#: histogram bucket bounds (seconds)
BOUNDS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


def _buckets(counts: dict[int, int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets and the sum (seconds) from log-bucket counts; each log
    bucket is placed by its representative value."""
    per_bound = [0] * (len(BOUNDS) + 1)
    total = 0.0
    for index, n in counts.items():
        seconds = hist.bucket_value(index) / 1000.0
        total += seconds * n
        slot = next((i for i, b in enumerate(BOUNDS) if seconds <= b), len(BOUNDS))
        per_bound[slot] += n
    out = []
    running = 0
    for i, bound in enumerate((*BOUNDS, float("inf"))):
        running += per_bound[i]
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return out, total


class LedgerCollector:
    """A prometheus-client collector that reads the ledger at scrape time."""

    def __init__(
        self, engine: Engine, *, window_minutes: int = 5, stale_seconds: float | None = None
    ) -> None:
        self.engine = engine
        self.window_minutes = window_minutes
        self.stale_seconds = stale_seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("edurise_ledger_up", "1 if the ledger could be read")
        try:
            families = list(self._collect())
        except Exception:
            log.exception("metrics scrape could not read the ledger")
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _collect(self) -> Iterable[Metric]:
        stale = self.stale_seconds
        if stale is None:
            stale = get_settings().queue_stale_seconds
        with read(self.engine) as conn:
            now = db_clock(conn)
            until = floor_minute(now)
            since = until - self.window_minutes * MINUTE
            status_counts = list(
                conn.execute(
                    select(jobs.c.queue, jobs.c.status, func.count().label("n"))
                    .where(jobs.c.status.in_(LIVE_STATUSES))
                    .group_by(jobs.c.queue, jobs.c.status)
                )
            )
            depth = current_depth(conn, now)
            live = live_workers(conn, now, stale)
            live_total = conn.execute(
                select(func.count())
                .select_from(workers)
                .where(
                    workers.c.status == "running",
                    workers.c.last_heartbeat >= now - timedelta(seconds=stale),
                )
            ).scalar_one()
            rows = list(
                conn.execute(
                    select(
                        queue_metrics.c.queue_name,
                        queue_metrics.c.completed_count,
                        queue_metrics.c.failed_count,
                        queue_metrics.c.job_count,
                        queue_metrics.c.processing_time,
                        queue_metrics.c.busy_seconds,
                        queue_metrics.c.worker_slots,
                        queue_metrics.c.processing_hist,
                        queue_metrics.c.wait_hist,
                    ).where(queue_metrics.c.timestamp >= since, queue_metrics.c.timestamp < until)
                )
            )
            newest = conn.execute(select(func.max(queue_metrics.c.timestamp))).scalar_one()

        window: dict[str, dict[str, Any]] = {}
        for r in rows:
            w = window.setdefault(
                r.queue_name,
                {
                    COMPLETED: 0,
                    FAILED: 0,
                    "jobs": 0,
                    "busy": 0.0,
                    "slot_s": 0.0,
                    "p": {},
                    "w": {},
                },
            )
            w[COMPLETED] += r.completed_count
            w[FAILED] += r.failed_count
            w["jobs"] += r.job_count
            if r.worker_slots:
                w["busy"] += r.busy_seconds
                w["slot_s"] += r.worker_slots * 60.0
            hist.merge_into(w["p"], r.processing_hist)
            hist.merge_into(w["w"], r.wait_hist)
        counts: dict[tuple[str, str], int] = {(r.queue, r.status): int(r.n) for r in status_counts}
        queues = sorted({q for q, _ in counts} | set(depth) | set(live) | set(window))

        g_jobs = GaugeMetricFamily(
            "edurise_jobs", "Jobs in each live status, now", labels=["queue", "status"]
        )
        for q in queues:
            for s in LIVE_STATUSES:
                g_jobs.add_metric([q, s], float(counts.get((q, s), 0)))
        yield g_jobs

        finished = GaugeMetricFamily(
            "edurise_jobs_finished",
            f"Jobs finished in the last {self.window_minutes} rolled-up minutes",
            labels=["queue", "status"],
        )
        g_depth = GaugeMetricFamily(
            "edurise_queue_depth", "Waiting jobs (queued, dispatched, due)", labels=["queue"]
        )
        g_workers = GaugeMetricFamily(
            "edurise_live_workers", "Workers with a fresh heartbeat", labels=["queue"]
        )
        g_slots = GaugeMetricFamily(
            "edurise_worker_slots", "Slots of the live workers", labels=["queue"]
        )
        g_tput = GaugeMetricFamily(
            "edurise_throughput_jobs_per_second",
            f"Finished jobs per second over the last {self.window_minutes} rolled-up minutes",
            labels=["queue"],
        )
        g_util = GaugeMetricFamily(
            "edurise_utilization_ratio",
            "Busy seconds / (live slots x 60) over the window",
            labels=["queue"],
        )
        duration = GaugeHistogramMetricFamily(
            "edurise_job_duration_seconds",
            f"Processing time of jobs finished in the last {self.window_minutes} rolled-up minutes",
            labels=["queue"],
        )
        wait = GaugeHistogramMetricFamily(
            "edurise_job_wait_seconds",
            f"Start minus due time of jobs started in the last {self.window_minutes} minutes",
            labels=["queue"],
        )
        seconds = self.window_minutes * 60.0
        for q in queues:
            totals = window.get(q)
            g_depth.add_metric([q], float(depth.get(q, 0)))
            n_workers, n_slots = live.get(q, (0, 0))
            g_workers.add_metric([q], float(n_workers))
            g_slots.add_metric([q], float(n_slots))
            if totals is None:
                continue
            finished.add_metric([q, COMPLETED], float(totals[COMPLETED]))
            finished.add_metric([q, FAILED], float(totals[FAILED]))
            g_tput.add_metric([q], totals["jobs"] / seconds)
            if totals["slot_s"]:
                g_util.add_metric([q], min(1.0, totals["busy"] / totals["slot_s"]))
            buckets, total = _buckets(totals["p"])
            duration.add_metric([q], buckets, total)
            buckets, total = _buckets(totals["w"])
            wait.add_metric([q], buckets, total)
        yield from (finished, g_depth, g_workers, g_slots, g_tput, g_util, duration, wait)

        total_workers = GaugeMetricFamily(
            "edurise_live_workers_total", "Distinct workers with a fresh heartbeat"
        )
        total_workers.add_metric([], float(live_total))
        yield total_workers
        if newest is not None:
            last = GaugeMetricFamily(
                "edurise_metrics_rollup_timestamp_seconds",
                "Start of the newest rolled-up minute (unix seconds)",
            )
            last.add_metric([], newest.timestamp())
            yield last


@dataclass
class MetricsServer:
    """A running /metrics endpoint (``port`` is the bound port, useful with port 0)."""

    httpd: Any
    thread: threading.Thread
    host: str
    port: int

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_server(
    port: int,
    *,
    engine_url: str | None = None,
    host: str = "127.0.0.1",
    window_minutes: int = 5,
) -> MetricsServer:
    """Serve /metrics on ``host:port`` in a background thread and return at once."""
    engine = engine_for(engine_url or get_settings().ledger_url)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(engine, window_minutes=window_minutes))
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd, thread, host, int(httpd.server_port))


def serve(
    port: int,
    *,
    engine_url: str | None = None,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    """Serve /metrics until ``stop`` is set, or SIGTERM / Ctrl-C (main thread only)."""
    server = start_server(port, engine_url=engine_url, host=host)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", host, server.port)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
