"""per-job logs: the lines a handler logs, per attempt

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """``queue_job_logs``: one row per logged line, read by job in insertion order."""
    op.create_table(
        "queue_job_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_job_logs")),
    )
    op.create_index("ix_queue_job_logs_job_id_id", "queue_job_logs", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_queue_job_logs_job_id_id", table_name="queue_job_logs")
    op.drop_table("queue_job_logs")
