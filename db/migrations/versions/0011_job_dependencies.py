"""workflows: jobs that wait for other jobs (status waiting, queue_job_deps, release trigger)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

STATUSES = (
    "'waiting', 'scheduled', 'queued', 'dispatched', 'running', 'retrying', "
    "'completed', 'failed', 'cancelled'"
)
PREVIOUS_STATUSES = (
    "'scheduled', 'queued', 'dispatched', 'running', 'retrying', 'completed', 'failed', 'cancelled'"
)
DEPENDENCY_FAILURE = "on_dependency_failure IS NULL OR on_dependency_failure IN ('cancel', 'run')"

#: PostgreSQL: what ending a job that others depend on does, in the statement that ends it
#: (docs/architecture.md, "Dependencies"). SQLite does the same in ``db.ledger.
#: release_dependents``, inside the transaction of every finishing write.
#:
#: 1. A dependency that did not complete cancels, in one UPDATE, every ``waiting`` job
#:    downstream of it reachable through ``cancel`` edges, each with an error entry of kind
#:    ``dependency`` naming the dependency it waited for. Those rows fire this trigger in turn
#:    (one level deeper, never more): their own edges get counted, their ``run`` dependents
#:    released, and the recursive search finds nothing left to cancel.
#: 2. Every open edge of the ended job is counted (``resolved`` = its status) and each of its
#:    still-``waiting`` dependents loses one pending dependency; the one whose count reaches
#:    0 is due: ``queued`` (its wait starts now) or ``scheduled`` at its own time. The row
#:    lock of the dependent serializes parents that end at the same moment, and
#:    ``resolved IS NULL`` counts each edge once.
#: 3. Released ``queued`` jobs wake the dispatcher as an insert does.
#:
#: Every job row is reached by its primary key from an edge: the status tests are written so
#: that the planner cannot use the status index instead (a scalar subquery, ``IS TRUE``).
#: Before statistics know of many ``waiting`` rows (a fresh burst of workflows) it otherwise
#: scanned every waiting job per edge: cancelling a 400-step chain took 11 s instead of ms.
RELEASE_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_jobs_release_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    IF NEW.status <> 'completed' THEN
        WITH RECURSIVE doomed(id, cause) AS (
            SELECT e.job_id, e.depends_on
            FROM queue_job_deps e
            WHERE e.depends_on = NEW.id AND e.resolved IS NULL
              AND (SELECT d.status = 'waiting' AND d.on_dependency_failure = 'cancel'
                   FROM queue_jobs d WHERE d.id = e.job_id)
          UNION
            SELECT e.job_id, e.depends_on
            FROM doomed x
            JOIN queue_job_deps e ON e.depends_on = x.id
            WHERE e.resolved IS NULL
              AND (SELECT d.status = 'waiting' AND d.on_dependency_failure = 'cancel'
                   FROM queue_jobs d WHERE d.id = e.job_id)
        ), first_cause AS (
            SELECT DISTINCT ON (id) id, cause FROM doomed ORDER BY id, cause
        )
        UPDATE queue_jobs d
        SET status = 'cancelled', finished_at = now(), updated_at = now(),
            last_error = 'dependency ' || c.cause || ' ended '
                || CASE WHEN c.cause = NEW.id THEN NEW.status ELSE 'cancelled' END,
            errors = d.errors || jsonb_build_array(jsonb_build_object(
                'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                'attempt', d.attempt,
                'error', 'dependency ' || c.cause || ' ended '
                    || CASE WHEN c.cause = NEW.id THEN NEW.status ELSE 'cancelled' END,
                'traceback', NULL, 'worker', NULL, 'kind', 'dependency',
                'dependency', c.cause::text))
        FROM first_cause c
        WHERE d.id = c.id AND (d.status = 'waiting') IS TRUE;
    END IF;
    WITH counted AS (
        UPDATE queue_job_deps SET resolved = NEW.status
        WHERE depends_on = NEW.id AND resolved IS NULL
        RETURNING job_id
    ), released AS (
        UPDATE queue_jobs d
        SET deps_pending = d.deps_pending - 1,
            status = CASE
                WHEN d.deps_pending > 1 THEN 'waiting'
                WHEN d.scheduled_at > now() THEN 'scheduled'
                ELSE 'queued' END,
            scheduled_at = CASE
                WHEN d.deps_pending > 1 OR d.scheduled_at > now() THEN d.scheduled_at
                ELSE now() END,
            updated_at = now()
        FROM counted c
        WHERE d.id = c.job_id AND (d.status = 'waiting') IS TRUE
        RETURNING d.queue, d.status
    )
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM released WHERE status = 'queued';
    IF queues IS NOT NULL THEN
        IF length(queues) > 4000 THEN
            queues := '';
        END IF;
        PERFORM pg_notify('queue_jobs_inserted', queues);
    END IF;
    RETURN NULL;
END;
$$
"""

#: fires only for a job that others depend on, once, when it ends: every other finish pays
#: one test of a boolean column of the updated row
RELEASE_TRIGGER = """
CREATE TRIGGER queue_jobs_release_dependents
AFTER UPDATE OF status ON queue_jobs
FOR EACH ROW
WHEN (NEW.has_dependents
      AND NEW.status IN ('completed', 'failed', 'cancelled')
      AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION queue_jobs_release_dependents()
"""


def _dispatch_order_index_with_desc() -> None:
    """SQLite: a table copy reflects the dispatch-order index without its DESC; create it
    again as migration 0001 did."""
    op.drop_index("ix_queue_jobs_dispatch_order", table_name="queue_jobs")
    op.create_index(
        "ix_queue_jobs_dispatch_order",
        "queue_jobs",
        ["queue", sa.text("priority DESC"), "scheduled_at", "id"],
        sqlite_where=sa.text("status = 'queued'"),
    )


def upgrade() -> None:
    """Status ``waiting``, three columns on ``queue_jobs``, the edge table and (PostgreSQL)
    the release trigger."""
    columns: tuple[sa.Column[Any], ...] = (
        sa.Column("deps_pending", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("on_dependency_failure", sa.String(length=10), nullable=True),
        sa.Column("has_dependents", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for column in columns:
            op.add_column("queue_jobs", column)
        op.drop_constraint(op.f("ck_queue_jobs_status"), "queue_jobs", type_="check")
        op.create_check_constraint(
            op.f("ck_queue_jobs_status"), "queue_jobs", sa.text(f"status IN ({STATUSES})")
        )
        op.create_check_constraint(
            op.f("ck_queue_jobs_dependency_failure"), "queue_jobs", sa.text(DEPENDENCY_FAILURE)
        )
    else:  # SQLite changes a CHECK by copying the table (reflection keeps the other checks)
        with op.batch_alter_table("queue_jobs", recreate="always") as batch:
            for column in columns:
                batch.add_column(column)
            batch.drop_constraint(op.f("ck_queue_jobs_status"), type_="check")
            batch.create_check_constraint(
                op.f("ck_queue_jobs_status"), sa.text(f"status IN ({STATUSES})")
            )
            batch.create_check_constraint(
                op.f("ck_queue_jobs_dependency_failure"), sa.text(DEPENDENCY_FAILURE)
            )
        _dispatch_order_index_with_desc()
    op.create_table(
        "queue_job_deps",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("depends_on", sa.Uuid(), nullable=False),
        sa.Column("resolved", sa.String(length=20), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name=op.f("pk_queue_job_deps")),
    )
    op.create_index("ix_queue_job_deps_depends_on", "queue_job_deps", ["depends_on"])
    op.create_index(
        "ix_queue_job_deps_open",
        "queue_job_deps",
        ["depends_on"],
        postgresql_where=sa.text("resolved IS NULL"),
        sqlite_where=sa.text("resolved IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RELEASE_FUNCTION)
        op.execute(RELEASE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS queue_jobs_release_dependents ON queue_jobs")
        op.execute("DROP FUNCTION IF EXISTS queue_jobs_release_dependents()")
    op.drop_index("ix_queue_job_deps_open", table_name="queue_job_deps")
    op.drop_index("ix_queue_job_deps_depends_on", table_name="queue_job_deps")
    op.drop_table("queue_job_deps")
    with op.batch_alter_table("queue_jobs") as batch:
        batch.drop_constraint(op.f("ck_queue_jobs_dependency_failure"), type_="check")
        batch.drop_constraint(op.f("ck_queue_jobs_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_queue_jobs_status"), sa.text(f"status IN ({PREVIOUS_STATUSES})")
        )
        for name in ("has_dependents", "on_dependency_failure", "deps_pending"):
            batch.drop_column(name)
    if op.get_bind().dialect.name == "sqlite":
        _dispatch_order_index_with_desc()
