"""periodic jobs you can steer: pause switch, tick cursor, skip and catch-up counters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """``queue_periodic``: one row per periodic job type (created by the maintainer on its
    first tick, or by a pause). No row means: not paused, no tick dealt with yet."""
    op.create_table(
        "queue_periodic",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("paused_by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("last_tick", UTCDateTime(), nullable=True),
        sa.Column("last_enqueued_tick", UTCDateTime(), nullable=True),
        sa.Column("skipped_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_skipped_tick", UTCDateTime(), nullable=True),
        sa.Column("last_skipped_for", sa.Uuid(), nullable=True),
        sa.Column("missed_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_missed_tick", UTCDateTime(), nullable=True),
        sa.Column("caught_up_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queue_periodic")),
    )


def downgrade() -> None:
    op.drop_table("queue_periodic")
