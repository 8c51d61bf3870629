"""initial ledger: queue_jobs, queue_workers, queue_metrics

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

#: channel the maintainer LISTENs on (db.notify.CHANNEL)
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('queue_jobs_inserted', '');
    RETURN NULL;
END;
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER queue_jobs_notify_insert
AFTER INSERT ON queue_jobs
FOR EACH STATEMENT EXECUTE FUNCTION queue_jobs_notify_insert()
"""


def upgrade() -> None:
    """Create the ledger tables, their indexes and (PostgreSQL) the insert NOTIFY trigger."""
    op.create_table(
        "queue_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("scheduled_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("errors", JSONType, nullable=False),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("worker_id", sa.Uuid(), nullable=True),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("tick_key", sa.String(length=300), nullable=True),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "finished_at IS NOT NULL OR NOT (status IN ('completed', 'failed', 'cancelled'))",
            name=op.f("ck_queue_jobs_finished"),
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'queued', 'dispatched', 'running', 'retrying', "
            "'completed', 'failed', 'cancelled')",
            name=op.f("ck_queue_jobs_status"),
        ),
        sa.CheckConstraint(
            "attempt >= 0 AND max_attempts >= 1", name=op.f("ck_queue_jobs_attempts")
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 9", name=op.f("ck_queue_jobs_priority")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_jobs")),
        sa.UniqueConstraint("tick_key", name=op.f("uq_queue_jobs_tick_key")),
    )
    op.create_index(
        "ix_queue_jobs_dispatch_order",
        "queue_jobs",
        ["queue", sa.literal_column("priority DESC"), "scheduled_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_queue_jobs_dispatched",
        "queue_jobs",
        ["queue", "dispatched_at"],
        unique=False,
        postgresql_where=sa.text("status = 'dispatched'"),
        sqlite_where=sa.text("status = 'dispatched'"),
    )
    op.create_index(
        "ix_queue_jobs_due",
        "queue_jobs",
        ["scheduled_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('scheduled', 'retrying')"),
        sqlite_where=sa.text("status IN ('scheduled', 'retrying')"),
    )
    op.create_index(
        "ix_queue_jobs_finished",
        "queue_jobs",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
        sqlite_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_queue_jobs_queue_created", "queue_jobs", ["queue", "created_at"], unique=False
    )
    op.create_index(
        "ix_queue_jobs_running",
        "queue_jobs",
        ["worker_id"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_queue_jobs_status_created", "queue_jobs", ["status", "created_at"], unique=False
    )
    op.create_index(
        "ix_queue_jobs_type_created", "queue_jobs", ["type", "created_at"], unique=False
    )
    op.create_index(
        "uq_queue_jobs_idempotency_key",
        "queue_jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text(
            "idempotency_key IS NOT NULL AND NOT (status IN ('completed', 'failed', 'cancelled'))"
        ),
        sqlite_where=sa.text(
            "idempotency_key IS NOT NULL AND NOT (status IN ('completed', 'failed', 'cancelled'))"
        ),
    )
    op.create_table(
        "queue_metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.Column("worker_count", sa.Integer(), nullable=False),
        sa.Column("processing_time", sa.Float(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("throughput", sa.Float(), nullable=False),
        sa.Column("processing_p50", sa.Float(), nullable=True),
        sa.Column("processing_p95", sa.Float(), nullable=True),
        sa.Column("processing_p99", sa.Float(), nullable=True),
        sa.Column("wait_p50", sa.Float(), nullable=True),
        sa.Column("wait_p95", sa.Float(), nullable=True),
        sa.Column("wait_p99", sa.Float(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("utilization", sa.Float(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_metrics")),
        sa.UniqueConstraint(
            "queue_name", "timestamp", name=op.f("uq_queue_metrics_queue_name_timestamp")
        ),
    )
    op.create_index("ix_queue_metrics_timestamp", "queue_metrics", ["timestamp"], unique=False)
    op.create_table(
        "queue_workers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", JSONType, nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("worker_kind", sa.String(length=20), nullable=False),
        sa.Column("jobs_processed", sa.Integer(), nullable=False),
        sa.Column("jobs_failed", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'stopping', 'stopped')", name=op.f("ck_queue_workers_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_workers")),
    )
    op.create_index(
        "ix_queue_workers_last_heartbeat", "queue_workers", ["last_heartbeat"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_queue_jobs_data_gin", "queue_jobs", ["data"], unique=False, postgresql_using="gin"
        )
        # Wake the dispatcher on every insert, whoever inserts (API, SQL console, restore).
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    """Drop everything upgrade created."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS queue_jobs_notify_insert ON queue_jobs")
        op.execute("DROP FUNCTION IF EXISTS queue_jobs_notify_insert()")
    op.drop_table("queue_workers")
    op.drop_table("queue_metrics")
    op.drop_table("queue_jobs")
