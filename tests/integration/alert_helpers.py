"""Helpers of the alert tests: crafted rollup rows, a loopback webhook receiver, polling."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, insert

from db.alerts import ALERT_TABLES, notifications_of
from db.engine import engine_for, read, transaction, write
from db.models import Job, Metric, TypeMetric, Worker

T = TypeVar("T")


def now_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def clear_alerts(url: str) -> Engine:
    engine = engine_for(url)
    with transaction(engine) as conn:
        for table in (*ALERT_TABLES, "queue_metrics", "queue_type_metrics"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    return engine


def add_minutes(url: str, queue: str, end: datetime, n: int, **values: Any) -> None:
    """``n`` queue_metrics rows ending at the minute before ``end``."""
    rows = []
    for i in range(1, n + 1):
        minute = end - timedelta(minutes=i)
        row = {
            "queue_name": queue,
            "timestamp": minute,
            "created_at": minute,
            "job_count": 20,
            "worker_count": 1,
            "processing_time": 50.0,
            "error_count": 0,
            "throughput": 20 / 60,
            "depth": 0,
            "retries": 0,
            "completed_count": 20,
            "failed_count": 0,
            "busy_seconds": 1.0,
            "worker_slots": 2,
            "wait_p95": 10.0,
        }
        row.update(values)
        rows.append(row)
    with write(engine_for(url)) as conn:
        conn.execute(insert(Metric), rows)


def add_type_minutes(url: str, queue: str, job_type: str, end: datetime, n: int, **v: Any) -> None:
    rows = []
    for i in range(1, n + 1):
        minute = end - timedelta(minutes=i)
        row = {
            "queue_name": queue,
            "job_type": job_type,
            "timestamp": minute,
            "created_at": minute,
            "job_count": 2,
            "completed_count": 2,
            "failed_count": 0,
            "error_count": 0,
            "retries": 0,
            "busy_seconds": 0.1,
        }
        row.update(v)
        rows.append(row)
    with write(engine_for(url)) as conn:
        conn.execute(insert(TypeMetric), rows)


def clear_rollups(url: str) -> None:
    with write(engine_for(url)) as conn:
        conn.execute(delete(Metric))
        conn.execute(delete(TypeMetric))


def add_worker(url: str, queues: list[str], heartbeat: datetime) -> None:
    with write(engine_for(url)) as conn:
        conn.execute(
            insert(Worker).values(
                id=uuid.uuid4(),
                name="w",
                status="running",
                started_at=heartbeat,
                last_heartbeat=heartbeat,
                hostname="h",
                pid=1,
                queues=queues,
                concurrency=2,
                worker_kind="thread",
                jobs_processed=0,
                jobs_failed=0,
            )
        )


def add_tick_job(url: str, name: str, tick: datetime, status: str = "completed") -> None:
    finished = tick + timedelta(seconds=1) if status == "completed" else None
    with write(engine_for(url)) as conn:
        conn.execute(
            insert(Job).values(
                id=uuid.uuid4(),
                type=name,
                priority=5,
                status=status,
                data={},
                scheduled_at=tick,
                created_at=tick,
                queue="default",
                attempt=1 if finished else 0,
                max_attempts=1,
                errors=[],
                updated_at=tick,
                finished_at=finished,
                completed_at=finished,
                tick_key=f"{name}@{tick.astimezone(UTC).isoformat()}",
            )
        )


def outbox(url: str) -> list[dict[str, Any]]:
    with read(engine_for(url)) as conn:
        return notifications_of(conn)


def events(url: str) -> list[tuple[str, str]]:
    return [(r["alert_key"], r["state"]) for r in outbox(url)]


def poll(fn: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05) -> T:
    """``fn()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


class Receiver:
    """A webhook receiver on 127.0.0.1 (free port) answering ``status``; records every POST."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})  # sent with every answer (e.g. a Location)
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append((body, headers))
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(b) for b, _ in self.requests]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)


@contextmanager
def receiver(status: int = 200, headers: dict[str, str] | None = None) -> Iterator[Receiver]:
    r = Receiver(status, headers)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
