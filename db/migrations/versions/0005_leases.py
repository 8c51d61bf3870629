"""leases: the dispatcher takes the attempt and hands out a fence token

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``queue_jobs.lease``. Jobs dispatched under the old scheme go back to ``queued``:
    their messages carry no lease, so workers refuse them, and the dispatcher sends them again
    (their attempt was not taken yet, so none is given back)."""
    op.add_column(
        "queue_jobs",
        sa.Column("lease", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        "UPDATE queue_jobs SET status = 'queued', dispatched_at = NULL WHERE status = 'dispatched'"
    )


def downgrade() -> None:
    """Drop the lease; dispatched jobs give their attempt back and wait to be sent again."""
    op.execute(
        "UPDATE queue_jobs SET status = 'queued', dispatched_at = NULL, attempt = attempt - 1 "
        "WHERE status = 'dispatched'"
    )
    op.drop_column("queue_jobs", "lease")
