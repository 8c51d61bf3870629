"""indexes for per-type concurrency and rate limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ACTIVE = "status IN ('dispatched', 'running')"


def upgrade() -> None:
    """Index the counts the dispatcher makes for limited job types."""
    op.create_index("ix_queue_jobs_type_started", "queue_jobs", ["type", "started_at"])
    op.create_index(
        "ix_queue_jobs_active_type",
        "queue_jobs",
        ["type"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    """Drop the indexes."""
    op.drop_index("ix_queue_jobs_active_type", table_name="queue_jobs")
    op.drop_index("ix_queue_jobs_type_started", table_name="queue_jobs")
