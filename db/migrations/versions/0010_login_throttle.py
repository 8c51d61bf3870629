"""login throttle per client, user and pair; forced password change

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.types import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """``login_throttle`` (attempts reserved before a password is verified) and
    ``users.must_change_password`` (false for every existing user)."""
    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("trusted_until", UTCDateTime(), nullable=True),
        sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "scope IN ('client', 'user', 'pair')", name=op.f("ck_login_throttle_scope")
        ),
        sa.PrimaryKeyConstraint("scope", "username", "client", name=op.f("pk_login_throttle")),
    )
    op.create_index(
        "ix_login_throttle_last_attempt_at", "login_throttle", ["last_attempt_at"], unique=False
    )
    op.add_column(
        "users",
        sa.Column(
            "must_change_password", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("must_change_password")
    op.drop_index("ix_login_throttle_last_attempt_at", table_name="login_throttle")
    op.drop_table("login_throttle")
