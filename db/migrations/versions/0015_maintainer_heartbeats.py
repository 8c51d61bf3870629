"""maintainer heartbeats: ``queue_maintainers``, one row per maintainer process

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "queue_maintainers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_maintainers")),
    )
    op.create_index("ix_queue_maintainers_last_heartbeat", "queue_maintainers", ["last_heartbeat"])


def downgrade() -> None:
    op.drop_index("ix_queue_maintainers_last_heartbeat", table_name="queue_maintainers")
    op.drop_table("queue_maintainers")
