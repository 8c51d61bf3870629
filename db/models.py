"""SQLAlchemy models of the ledger. Seed columns keep their names and meaning (see docs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.states import ALL_STATUSES
from db.types import JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}

PRIORITY_MIN = 0
PRIORITY_MAX = 9

_status_list = ", ".join(f"'{s}'" for s in ALL_STATUSES)
_terminal = "status IN ('completed', 'failed', 'cancelled')"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    """One row per job: the queue of record. Redis only ever carries this row's id."""

    __tablename__ = "queue_jobs"

    # seed columns
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the job is due
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # start of latest attempt
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set when completed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # ledger columns (DESIGN.md)
    queue: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    result: Mapped[Any | None] = mapped_column(JSONType)
    worker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # any terminal state
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    tick_key: Mapped[str | None] = mapped_column(String(300))  # periodic tick, unique forever
    timeout_seconds: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_list})", name="status"),
        CheckConstraint(f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority"),
        CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempts"),
        CheckConstraint(f"finished_at IS NOT NULL OR NOT ({_terminal})", name="finished"),
        UniqueConstraint("tick_key"),
        Index(
            "ix_queue_jobs_dispatch_order",
            "queue",
            text("priority DESC"),
            "scheduled_at",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(
            "ix_queue_jobs_due",
            "scheduled_at",
            postgresql_where=text("status IN ('scheduled', 'retrying')"),
            sqlite_where=text("status IN ('scheduled', 'retrying')"),
        ),
        Index(
            "ix_queue_jobs_dispatched",
            "queue",
            "dispatched_at",
            postgresql_where=text("status = 'dispatched'"),
            sqlite_where=text("status = 'dispatched'"),
        ),
        Index(
            "ix_queue_jobs_running",
            "worker_id",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index(
            "ix_queue_jobs_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
        Index("ix_queue_jobs_type_created", "type", "created_at"),
        Index("ix_queue_jobs_status_created", "status", "created_at"),
        Index("ix_queue_jobs_queue_created", "queue", "created_at"),
        Index(
            "uq_queue_jobs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text(f"idempotency_key IS NOT NULL AND NOT ({_terminal})"),
            sqlite_where=text(f"idempotency_key IS NOT NULL AND NOT ({_terminal})"),
        ),
        Index("ix_queue_jobs_data_gin", "data", postgresql_using="gin").ddl_if(
            dialect="postgresql"
        ),
    )


class Worker(Base):
    """One row per worker process; a stale heartbeat marks it dead and its jobs get rescued."""

    __tablename__ = "queue_workers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSONType)
    concurrency: Mapped[int] = mapped_column(Integer)
    worker_kind: Mapped[str] = mapped_column(String(20))
    jobs_processed: Mapped[int] = mapped_column(Integer)
    jobs_failed: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'stopping', 'stopped')", name="status"),
        Index("ix_queue_workers_last_heartbeat", "last_heartbeat"),
    )


class Metric(Base):
    """One row per queue per minute, recomputed idempotently by the metrics rollup."""

    __tablename__ = "queue_metrics"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # seed columns
    queue_name: Mapped[str] = mapped_column(String(100))
    job_count: Mapped[int] = mapped_column(Integer)  # jobs that finished in the minute
    worker_count: Mapped[int] = mapped_column(Integer)
    processing_time: Mapped[float | None] = mapped_column(Float)  # mean ms
    error_count: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)  # minute start
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # rollup columns
    throughput: Mapped[float] = mapped_column(Float)  # jobs/s
    processing_p50: Mapped[float | None] = mapped_column(Float)
    processing_p95: Mapped[float | None] = mapped_column(Float)
    processing_p99: Mapped[float | None] = mapped_column(Float)
    wait_p50: Mapped[float | None] = mapped_column(Float)
    wait_p95: Mapped[float | None] = mapped_column(Float)
    wait_p99: Mapped[float | None] = mapped_column(Float)
    depth: Mapped[int] = mapped_column(Integer)
    utilization: Mapped[float | None] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("queue_name", "timestamp"),
        Index("ix_queue_metrics_timestamp", "timestamp"),
    )
