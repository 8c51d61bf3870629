"""The Prometheus endpoint, scraped over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from db.engine import engine_for, transaction
from db.models import Job, Metric, Worker
from metrics import hist
from metrics.prometheus import serve, start_server
from tests.integration.test_metrics_read_models import metric_row, minutes_around_now
from tests.integration.test_metrics_rollup import job_row, worker_row
from tests.processes import wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        body = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def load(url: str) -> None:
    engine = engine_for(url)
    now = datetime.now(UTC)
    processing = hist.from_values([20.0] * 8 + [400.0, 4000.0])  # ms
    wait = hist.from_values([3.0] * 10)
    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [
                job_row(status="queued", scheduled_at=now - timedelta(seconds=3)),
                job_row(status="queued", scheduled_at=now - timedelta(seconds=3)),
                job_row(status="running", started_at=now, queue="q2"),
                job_row(status="scheduled", scheduled_at=now + timedelta(hours=1)),
            ],
        )
        conn.execute(
            insert(Worker),
            [worker_row(queues=["q1", "q2"], concurrency=3, last_heartbeat=now, started_at=now)],
        )
        conn.execute(
            insert(Metric),
            [
                metric_row(
                    "q1",
                    m,
                    job_count=10,
                    completed_count=9,
                    failed_count=1,
                    processing_time=450.0,
                    processing_hist=processing,
                    wait_hist=wait,
                    worker_slots=3,
                    busy_seconds=90.0,
                )
                for m in minutes_around_now(engine, 30)
            ],
        )


def label(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_metrics_endpoint_over_http(ledger_url: str) -> None:
    load(ledger_url)
    server = start_server(0, engine_url=ledger_url)
    try:
        samples = scrape(server.port)
    finally:
        server.shutdown()
    assert samples[("edurise_ledger_up", ())] == 1.0
    assert samples[("edurise_jobs", label(queue="q1", status="queued"))] == 2
    assert samples[("edurise_jobs", label(queue="q1", status="scheduled"))] == 1
    assert samples[("edurise_jobs", label(queue="q2", status="running"))] == 1
    assert samples[("edurise_jobs", label(queue="q2", status="queued"))] == 0
    assert samples[("edurise_queue_depth", label(queue="q1"))] == 2
    assert samples[("edurise_live_workers", label(queue="q2"))] == 1
    assert samples[("edurise_worker_slots", label(queue="q1"))] == 3
    assert samples[("edurise_live_workers_total", ())] == 1
    # the last 5 rolled-up minutes: 5 x 10 jobs
    assert samples[("edurise_jobs_finished", label(queue="q1", status="completed"))] == 45
    assert samples[("edurise_throughput_jobs_per_second", label(queue="q1"))] == pytest.approx(
        50 / 300
    )
    assert samples[("edurise_utilization_ratio", label(queue="q1"))] == pytest.approx(0.5)
    bucket = "edurise_job_duration_seconds_bucket"
    assert samples[(bucket, label(queue="q1", le="+Inf"))] == 50
    assert samples[(bucket, label(queue="q1", le="0.025"))] == 40  # the 20 ms jobs
    assert samples[(bucket, label(queue="q1", le="0.5"))] == 45
    assert samples[(bucket, label(queue="q1", le="5.0"))] == 50
    assert samples[("edurise_job_duration_seconds_gcount", label(queue="q1"))] == 50
    assert samples[("edurise_job_wait_seconds_bucket", label(queue="q1", le="0.005"))] == 50
    assert samples[("edurise_metrics_rollup_timestamp_seconds", ())] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_until_stopped(ledger_url: str) -> None:
    stop = threading.Event()
    port = free_port()
    thread = threading.Thread(
        target=serve, args=(port,), kwargs={"engine_url": ledger_url, "stop": stop}, daemon=True
    )
    thread.start()

    def up() -> bool:
        try:
            return scrape(port)[("edurise_ledger_up", ())] == 1.0
        except OSError:
            return False

    try:
        wait_for(up, 10, "the metrics server to answer")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_ledger_that_cannot_be_read_reports_down(tmp_path: Path) -> None:
    server = start_server(0, engine_url=f"sqlite:///{tmp_path / 'not-migrated.db'}")
    try:
        samples = scrape(server.port)
    finally:
        server.shutdown()
    assert samples[("edurise_ledger_up", ())] == 0.0
