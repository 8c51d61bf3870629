"""the insert NOTIFY names the queues of the inserted queued jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

#: payload: the distinct queues of the inserted rows that are due now, comma-separated; empty
#: when none is, or when the list would not fit a notification (then the dispatcher looks)
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE status = 'queued';
    IF queues IS NULL OR length(queues) > 4000 THEN
        queues := '';
    END IF;
    PERFORM pg_notify('queue_jobs_inserted', queues);
    RETURN NULL;
END;
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER queue_jobs_notify_insert
AFTER INSERT ON queue_jobs
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION queue_jobs_notify_insert()
"""

OLD_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('queue_jobs_inserted', '');
    RETURN NULL;
END;
$$
"""
OLD_TRIGGER = """
CREATE TRIGGER queue_jobs_notify_insert
AFTER INSERT ON queue_jobs
FOR EACH STATEMENT EXECUTE FUNCTION queue_jobs_notify_insert()
"""


def upgrade() -> None:
    """PostgreSQL: a wake-up tells the dispatcher which queues got work."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS queue_jobs_notify_insert ON queue_jobs")
    op.execute(NOTIFY_FUNCTION)
    op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    """The notification without a payload."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS queue_jobs_notify_insert ON queue_jobs")
    op.execute(OLD_FUNCTION)
    op.execute(OLD_TRIGGER)
