"""the insert NOTIFY fires only when the statement inserted queued jobs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

#: a statement that inserted no ``queued`` row (scheduled jobs, jobs a producer dispatched
#: itself) wakes nobody; otherwise the payload names the queues, or is empty when the list
#: would not fit a notification (then the dispatcher looks at every queue)
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE status = 'queued';
    IF queues IS NULL THEN
        RETURN NULL;
    END IF;
    IF length(queues) > 4000 THEN
        queues := '';
    END IF;
    PERFORM pg_notify('queue_jobs_inserted', queues);
    RETURN NULL;
END;
$$
"""

#: migration 0007's function (the trigger itself is unchanged)
PREVIOUS_FUNCTION = """
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


def upgrade() -> None:
    """PostgreSQL: no wake-up for inserts that leave the dispatcher nothing to do."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PREVIOUS_FUNCTION)
