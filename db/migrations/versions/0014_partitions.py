"""fair share: ``queue_jobs.partition_key`` and the indexes that dispatch by partition

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None

QUEUED = "status = 'queued' AND partition_key IS NOT NULL"
ACTIVE = "status IN ('dispatched', 'running') AND partition_key IS NOT NULL"


def upgrade() -> None:
    """A nullable column (no rewrite of the table) and two partial indexes that hold
    partitioned jobs only, so a job of a type without ``partition_by`` writes no entry."""
    op.add_column("queue_jobs", sa.Column("partition_key", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_queue_jobs_partition_order",
        "queue_jobs",
        ["queue", "type", "partition_key", sa.text("priority DESC"), "scheduled_at", "id"],
        postgresql_where=sa.text(QUEUED),
        sqlite_where=sa.text(QUEUED),
    )
    op.create_index(
        "ix_queue_jobs_active_partition",
        "queue_jobs",
        ["type", "partition_key"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_queue_jobs_active_partition", table_name="queue_jobs")
    op.drop_index("ix_queue_jobs_partition_order", table_name="queue_jobs")
    op.drop_column("queue_jobs", "partition_key")
