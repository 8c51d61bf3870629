"""alerts: alert state, rule silences, the notification outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

PENDING = "delivery = 'pending'"


def _id() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def upgrade() -> None:
    """The alert state per rule and subject, rule silences and the notification outbox."""
    op.create_table(
        "queue_alerts",
        _id(),
        sa.Column("alert_key", sa.String(length=400), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("queue_name", sa.String(length=100), nullable=True),
        sa.Column("job_type", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("last_notified_at", UTCDateTime(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("state IN ('firing', 'resolved')", name=op.f("ck_queue_alerts_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_alerts")),
        sa.UniqueConstraint("alert_key", name=op.f("uq_queue_alerts_alert_key")),
    )
    op.create_index("ix_queue_alerts_state", "queue_alerts", ["state"], unique=False)
    op.create_table(
        "queue_alert_silences",
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("silenced_until", UTCDateTime(), nullable=False),
        sa.Column("silenced_by", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_queue_alert_silences")),
    )
    op.create_table(
        "alert_notifications",
        _id(),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("alert_key", sa.String(length=400), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("outbox", sa.Boolean(), nullable=False),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.String(length=1000), nullable=True),
        sa.Column("delivery", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('firing', 'repeat', 'resolved')", name=op.f("ck_alert_notifications_state")
        ),
        sa.CheckConstraint(
            "delivery IN ('pending', 'delivered', 'given_up', 'none')",
            name=op.f("ck_alert_notifications_delivery"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notifications")),
    )
    op.create_index(
        "ix_alert_notifications_created_at", "alert_notifications", ["created_at"], unique=False
    )
    op.create_index(
        "ix_alert_notifications_alert_id", "alert_notifications", ["alert_id"], unique=False
    )
    op.create_index(
        "ix_alert_notifications_pending",
        "alert_notifications",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    """Drop the alert tables."""
    op.drop_index(
        "ix_alert_notifications_pending",
        table_name="alert_notifications",
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.drop_index("ix_alert_notifications_alert_id", table_name="alert_notifications")
    op.drop_index("ix_alert_notifications_created_at", table_name="alert_notifications")
    op.drop_table("alert_notifications")
    op.drop_table("queue_alert_silences")
    op.drop_index("ix_queue_alerts_state", table_name="queue_alerts")
    op.drop_table("queue_alerts")
