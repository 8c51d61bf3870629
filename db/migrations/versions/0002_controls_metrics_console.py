"""metrics breakdown, queue controls, progress, users, audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Per-type metrics, queue pause switches, job progress and unique keys, console users and
    the audit log."""
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("job_ids", JSONType, nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('ok', 'error', 'denied')", name=op.f("ck_audit_log_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"], unique=False)
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_username_at", "audit_log", ["username", "at"], unique=False)
    op.create_table(
        "queue_controls",
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("paused_by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("queue_name", name=op.f("pk_queue_controls")),
    )
    op.create_table(
        "queue_type_metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("job_type", sa.String(length=200), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.Column("completed_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("processing_time", sa.Float(), nullable=True),
        sa.Column("processing_p50", sa.Float(), nullable=True),
        sa.Column("processing_p95", sa.Float(), nullable=True),
        sa.Column("processing_p99", sa.Float(), nullable=True),
        sa.Column("wait_p50", sa.Float(), nullable=True),
        sa.Column("wait_p95", sa.Float(), nullable=True),
        sa.Column("wait_p99", sa.Float(), nullable=True),
        sa.Column("busy_seconds", sa.Float(), nullable=False),
        sa.Column("processing_hist", JSONType, nullable=True),
        sa.Column("wait_hist", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_type_metrics")),
        sa.UniqueConstraint(
            "queue_name",
            "job_type",
            "timestamp",
            name=op.f("uq_queue_type_metrics_queue_name_job_type_timestamp"),
        ),
    )
    op.create_index(
        "ix_queue_type_metrics_timestamp", "queue_type_metrics", ["timestamp"], unique=False
    )
    op.create_index(
        "ix_queue_type_metrics_type_timestamp",
        "queue_type_metrics",
        ["job_type", "timestamp"],
        unique=False,
    )
    op.create_table(
        "users",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'analyst')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.add_column("queue_jobs", sa.Column("progress", sa.Float(), nullable=True))
    op.add_column("queue_jobs", sa.Column("progress_message", sa.String(length=500), nullable=True))
    op.add_column("queue_jobs", sa.Column("progress_at", UTCDateTime(), nullable=True))
    op.add_column("queue_jobs", sa.Column("unique_key", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_queue_jobs_unique_key",
        "queue_jobs",
        ["unique_key", "created_at"],
        unique=False,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
        sqlite_where=sa.text("unique_key IS NOT NULL"),
    )
    op.add_column(
        "queue_metrics",
        sa.Column("completed_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "queue_metrics", sa.Column("failed_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "queue_metrics", sa.Column("busy_seconds", sa.Float(), nullable=False, server_default="0")
    )
    op.add_column(
        "queue_metrics", sa.Column("worker_slots", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("queue_metrics", sa.Column("processing_hist", JSONType, nullable=True))
    op.add_column("queue_metrics", sa.Column("wait_hist", JSONType, nullable=True))


def downgrade() -> None:
    """Drop everything upgrade created."""
    op.drop_column("queue_metrics", "wait_hist")
    op.drop_column("queue_metrics", "processing_hist")
    op.drop_column("queue_metrics", "worker_slots")
    op.drop_column("queue_metrics", "busy_seconds")
    op.drop_column("queue_metrics", "failed_count")
    op.drop_column("queue_metrics", "completed_count")
    op.drop_index(
        "ix_queue_jobs_unique_key",
        table_name="queue_jobs",
        postgresql_where=sa.text("unique_key IS NOT NULL"),
        sqlite_where=sa.text("unique_key IS NOT NULL"),
    )
    op.drop_column("queue_jobs", "unique_key")
    op.drop_column("queue_jobs", "progress_at")
    op.drop_column("queue_jobs", "progress_message")
    op.drop_column("queue_jobs", "progress")
    op.drop_table("users")
    op.drop_index("ix_queue_type_metrics_type_timestamp", table_name="queue_type_metrics")
    op.drop_index("ix_queue_type_metrics_timestamp", table_name="queue_type_metrics")
    op.drop_table("queue_type_metrics")
    op.drop_table("queue_controls")
    op.drop_index("ix_audit_log_username_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_action_at", table_name="audit_log")
    op.drop_table("audit_log")
