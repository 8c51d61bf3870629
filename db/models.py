"""SQLAlchemy models of the ledger. Seed columns keep their names and meaning (see docs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.states import ALL_STATUSES, JobStatus
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


def _status_in(*statuses: JobStatus) -> str:
    """``status = 'a'`` / ``status IN ('a', 'b')``, in the order given: the index predicates
    and checks as the migrations wrote them, rendered from the enum."""
    values = ", ".join(f"'{s.value}'" for s in statuses)
    return f"status = {values}" if len(statuses) == 1 else f"status IN ({values})"


S = JobStatus
_terminal = _status_in(S.COMPLETED, S.FAILED, S.CANCELLED)
_QUEUED = _status_in(S.QUEUED)
_DUE = _status_in(S.SCHEDULED, S.RETRYING)
_DISPATCHED = _status_in(S.DISPATCHED)
_RUNNING = _status_in(S.RUNNING)
_ACTIVE = _status_in(S.DISPATCHED, S.RUNNING)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # Every model here is declared with ``__tablename__``, so its ``__table__`` is a
        # ``Table`` (SQLAlchemy types it as the wider ``FromClause``, which ``insert()``,
        # ``update()`` and ``delete()`` do not accept). Typing only: nothing at run time.
        __table__: ClassVar[Table]


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
    # fence token: +1 at every dispatch, never reused; a message and every write of the
    # attempt it starts carry it (docs/architecture.md, "Leases")
    lease: Mapped[int] = mapped_column(Integer, server_default=text("0"))
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
    # progress reported by the handler (ctx.progress), throttled by the worker
    progress: Mapped[float | None] = mapped_column(Float)
    progress_message: Mapped[str | None] = mapped_column(String(500))
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # hash of (type, data) for @job(unique_for=...): one live job per key within the window
    unique_key: Mapped[str | None] = mapped_column(String(64))
    # workflows (docs/architecture.md, "Dependencies"): dependencies not ended yet, what an
    # ended-but-not-completed dependency does ('cancel' | 'run'; NULL: no dependencies), and
    # whether other jobs depend on this one (the release trigger's only test on a finish)
    deps_pending: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    on_dependency_failure: Mapped[str | None] = mapped_column(String(10))
    has_dependents: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # fair share (docs/architecture.md, "Partitions"): the partition of a job of a type
    # declared ``@job(partition_by=...)`` (e.g. the school id); NULL for every other job
    partition_key: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_list})", name="status"),
        CheckConstraint(f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority"),
        CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempts"),
        CheckConstraint(f"finished_at IS NOT NULL OR NOT ({_terminal})", name="finished"),
        CheckConstraint(
            "on_dependency_failure IS NULL OR on_dependency_failure IN ('cancel', 'run')",
            name="dependency_failure",
        ),
        UniqueConstraint("tick_key"),
        Index(
            "ix_queue_jobs_dispatch_order",
            "queue",
            text("priority DESC"),
            "scheduled_at",
            "id",
            postgresql_where=text(_QUEUED),
            sqlite_where=text(_QUEUED),
        ),
        Index(  # fair share: each partition's queued jobs, best first (partitioned types only)
            "ix_queue_jobs_partition_order",
            "queue",
            "type",
            "partition_key",
            text("priority DESC"),
            "scheduled_at",
            "id",
            postgresql_where=text(f"{_QUEUED} AND partition_key IS NOT NULL"),
            sqlite_where=text(f"{_QUEUED} AND partition_key IS NOT NULL"),
        ),
        Index(
            "ix_queue_jobs_due",
            "scheduled_at",
            postgresql_where=text(_DUE),
            sqlite_where=text(_DUE),
        ),
        Index(
            "ix_queue_jobs_dispatched",
            "queue",
            "dispatched_at",
            postgresql_where=text(_DISPATCHED),
            sqlite_where=text(_DISPATCHED),
        ),
        Index(
            "ix_queue_jobs_running",
            "worker_id",
            postgresql_where=text(_RUNNING),
            sqlite_where=text(_RUNNING),
        ),
        Index(
            "ix_queue_jobs_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
        Index("ix_queue_jobs_type_created", "type", "created_at"),
        Index(  # rate limits; a job has a start time only from its outcome or start record on
            "ix_queue_jobs_type_started",
            "type",
            "started_at",
            postgresql_where=text("started_at IS NOT NULL"),
            sqlite_where=text("started_at IS NOT NULL"),
        ),
        Index(
            "ix_queue_jobs_active_type",  # per-type concurrency limits
            "type",
            postgresql_where=text(_ACTIVE),
            sqlite_where=text(_ACTIVE),
        ),
        Index(
            "ix_queue_jobs_active_partition",  # per-partition concurrency limits
            "type",
            "partition_key",
            postgresql_where=text(f"{_ACTIVE} AND partition_key IS NOT NULL"),
            sqlite_where=text(f"{_ACTIVE} AND partition_key IS NOT NULL"),
        ),
        Index("ix_queue_jobs_status_created", "status", "created_at"),
        Index("ix_queue_jobs_queue_created", "queue", "created_at"),
        Index(
            "uq_queue_jobs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text(f"idempotency_key IS NOT NULL AND NOT ({_terminal})"),
            sqlite_where=text(f"idempotency_key IS NOT NULL AND NOT ({_terminal})"),
        ),
        Index(
            "ix_queue_jobs_unique_key",
            "unique_key",
            "created_at",
            postgresql_where=text("unique_key IS NOT NULL"),
            sqlite_where=text("unique_key IS NOT NULL"),
        ),
    )


class JobDependency(Base):
    """An edge of a workflow: ``job_id`` waits for ``depends_on``. ``resolved`` is the status
    ``depends_on`` ended in when the edge was counted (NULL: not yet). No foreign keys: a
    finish or a delete of a job without edges must not pay for a referential check; the
    pruner deletes a job's edges with it (``db.retention``)."""

    __tablename__ = "queue_job_deps"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    depends_on: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resolved: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        Index("ix_queue_job_deps_depends_on", "depends_on"),
        Index(  # the edges still to count (the SQLite release pass scans these only)
            "ix_queue_job_deps_open",
            "depends_on",
            postgresql_where=text("resolved IS NULL"),
            sqlite_where=text("resolved IS NULL"),
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


class MaintainerProcess(Base):
    """One row per ``queuectl maintainer`` process: its heartbeat says the loops run (the
    console warns when no maintainer's heartbeat is fresh). Written by the maintainer's
    heartbeat loop (``tasks.maintenance.heartbeat``, ``db/maintainers.py``); a stopped
    maintainer sets ``stopped_at``; rows silent for a day are deleted."""

    __tablename__ = "queue_maintainers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_queue_maintainers_last_heartbeat", "last_heartbeat"),)


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
    completed_count: Mapped[int] = mapped_column(Integer)
    failed_count: Mapped[int] = mapped_column(Integer)
    busy_seconds: Mapped[float] = mapped_column(Float)  # handler time inside the minute
    worker_slots: Mapped[int] = mapped_column(Integer)  # live worker slots (concurrency sum)
    # mergeable histograms (log buckets) so hours and days get percentiles from rollups only
    processing_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    wait_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        UniqueConstraint("queue_name", "timestamp"),
        Index("ix_queue_metrics_timestamp", "timestamp"),
    )


class TypeMetric(Base):
    """One row per queue, job type and minute: the per-type breakdown of ``queue_metrics``."""

    __tablename__ = "queue_type_metrics"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    queue_name: Mapped[str] = mapped_column(String(100))
    job_type: Mapped[str] = mapped_column(String(200))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)  # minute start
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    job_count: Mapped[int] = mapped_column(Integer)
    completed_count: Mapped[int] = mapped_column(Integer)
    failed_count: Mapped[int] = mapped_column(Integer)
    error_count: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer)
    processing_time: Mapped[float | None] = mapped_column(Float)  # mean ms
    processing_p50: Mapped[float | None] = mapped_column(Float)
    processing_p95: Mapped[float | None] = mapped_column(Float)
    processing_p99: Mapped[float | None] = mapped_column(Float)
    wait_p50: Mapped[float | None] = mapped_column(Float)
    wait_p95: Mapped[float | None] = mapped_column(Float)
    wait_p99: Mapped[float | None] = mapped_column(Float)
    busy_seconds: Mapped[float] = mapped_column(Float)
    processing_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    wait_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        UniqueConstraint("queue_name", "job_type", "timestamp"),
        Index("ix_queue_type_metrics_type_timestamp", "job_type", "timestamp"),
        Index("ix_queue_type_metrics_timestamp", "timestamp"),
    )


class HourlyMetric(Base):
    """One row per queue and hour: the merged histograms of the hour's ``queue_metrics`` rows
    (migration 0016), so hour and day charts read one histogram per hour instead of 60.
    Written by the rollup with the minute rows, in the same transaction."""

    __tablename__ = "queue_metrics_hourly"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    queue_name: Mapped[str] = mapped_column(String(100))
    hour: Mapped[datetime] = mapped_column(UTCDateTime)  # hour start (UTC)
    processing_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    wait_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        UniqueConstraint("queue_name", "hour"),
        Index("ix_queue_metrics_hourly_hour", "hour"),
    )


class HourlyTypeMetric(Base):
    """One row per queue, job type and hour: the merged histograms of the hour's
    ``queue_type_metrics`` rows (migration 0016)."""

    __tablename__ = "queue_type_metrics_hourly"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    queue_name: Mapped[str] = mapped_column(String(100))
    job_type: Mapped[str] = mapped_column(String(200))
    hour: Mapped[datetime] = mapped_column(UTCDateTime)  # hour start (UTC)
    processing_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    wait_hist: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        UniqueConstraint("queue_name", "job_type", "hour"),
        Index("ix_queue_type_metrics_hourly_hour", "hour"),
    )


class QueueControl(Base):
    """Per-queue switches set by admins: a paused queue dispatches nothing."""

    __tablename__ = "queue_controls"

    queue_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class User(Base):
    """Console users; passwords as argon2id hashes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the password was set for the user (the generated first admin password): the console
    #: shows nothing but a change-password form until they choose their own
    must_change_password: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (CheckConstraint("role IN ('admin', 'analyst')", name="role"),)


class LoginThrottle(Base):
    """Login attempts counted per client address, per user and per (user, client) pair, each
    with the earliest time its next attempt is checked (``console.login_throttle``). An attempt
    is reserved here, under a row lock, before its password is verified."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(String(10), primary_key=True)  # client | user | pair
    username: Mapped[str] = mapped_column(String(100), primary_key=True)  # '' for client
    client: Mapped[str] = mapped_column(String(100), primary_key=True)  # '' for user
    failures: Mapped[int] = mapped_column(Integer)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: pair rows: the user logged in from this client lately, so the per-user delay (set by
    #: failures from other addresses) does not apply to it
    trusted_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: pair rows: the audit entry that counts this minute's refused logins
    audit_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))

    __table_args__ = (
        CheckConstraint("scope IN ('client', 'user', 'pair')", name="scope"),
        Index("ix_login_throttle_last_attempt_at", "last_attempt_at"),
    )


class ConsoleSession(Base):
    """A signed-in console browser: the SHA-256 of the random token in its cookie, so a reload
    or a new tab keeps the login until it expires or the user logs out (``db.console_sessions``).
    """

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_console_sessions_username", "username"),
        Index("ix_console_sessions_expires_at", "expires_at"),
    )


class AuditEntry(Base):
    """Every admin action: who, what, which jobs, when, outcome."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    username: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str | None] = mapped_column(String(300))
    job_ids: Mapped[list[str]] = mapped_column(JSONType)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'error', 'denied')", name="outcome"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_username_at", "username", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )


class Alert(Base):
    """One row per alert key (a rule and its subject, e.g. ``error_rate:default``): its current
    state, kept across restarts. State changes are guarded UPDATEs (docs/operations.md#alerts)."""

    __tablename__ = "queue_alerts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    alert_key: Mapped[str] = mapped_column(String(400), unique=True)
    rule: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    queue_name: Mapped[str | None] = mapped_column(String(100))
    job_type: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("state IN ('firing', 'resolved')", name="state"),
        Index("ix_queue_alerts_state", "state"),
    )


class AlertSilence(Base):
    """A rule silenced by an admin until a time: its alerts still change state, nobody is told."""

    __tablename__ = "queue_alert_silences"

    rule: Mapped[str] = mapped_column(String(100), primary_key=True)
    silenced_until: Mapped[datetime] = mapped_column(UTCDateTime)
    silenced_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertNotification(Base):
    """The notification outbox and the alert history: one row per firing, repeat or resolved
    event, written in the transaction that changed the alert. Other EduRise systems read the
    rows with ``outbox`` true; the webhook sender delivers the rows with ``delivery = 'pending'``.
    """

    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    alert_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    alert_key: Mapped[str] = mapped_column(String(400))
    rule: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20))  # firing | repeat | resolved
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the webhook body minus sent_at
    outbox: Mapped[bool] = mapped_column(Boolean)  # published to other systems
    silenced: Mapped[bool] = mapped_column(Boolean)
    webhook_url: Mapped[str | None] = mapped_column(String(1000))
    delivery: Mapped[str] = mapped_column(String(20))  # pending | delivered | given_up | none
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("state IN ('firing', 'repeat', 'resolved')", name="state"),
        CheckConstraint(
            "delivery IN ('pending', 'delivered', 'given_up', 'none')", name="delivery"
        ),
        Index("ix_alert_notifications_created_at", "created_at"),
        Index("ix_alert_notifications_alert_id", "alert_id"),
        Index(
            "ix_alert_notifications_pending",
            "next_attempt_at",
            postgresql_where=text("delivery = 'pending'"),
            sqlite_where=text("delivery = 'pending'"),
        ),
    )


class PeriodicState(Base):
    """One row per periodic job type (``@periodic_job``), written by the maintainer's periodic
    enqueuer and by admins: the pause switch (survives restarts), the newest tick the enqueuer
    has dealt with (so a restarted maintainer knows which ticks it missed), and counters of
    ticks skipped because the previous run was unfinished (``overlap="skip"``), ticks dropped
    by the catch-up policy and ticks caught up. See ``db/periodic.py``."""

    __tablename__ = "queue_periodic"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    #: the newest tick dealt with (enqueued, skipped or dropped); a tick is dealt with once,
    #: by whichever maintainer moves this forward first
    last_tick: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_enqueued_tick: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skipped_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_skipped_tick: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the unfinished run that made the newest skip
    last_skipped_for: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    missed_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_missed_tick: Mapped[datetime | None] = mapped_column(UTCDateTime)
    caught_up_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobLogLine(Base):
    """One line a handler logged through ``ctx.log`` (or a logger under ``job.<type>``),
    kept per attempt (bounded: ``tasks.worker.job_logs``). No foreign key, as for
    ``queue_job_deps``: the pruner deletes a job's lines with it (``db.retention``)."""

    __tablename__ = "queue_job_logs"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_queue_job_logs_job_id_id", "job_id", "id"),)
