"""Console-only changes to jobs that the state machine has no transition for: deleting a job no
worker holds, and making a waiting job due now. Both are single guarded statements (the status
is re-checked by the statement itself, so a job that moved on meanwhile is left alone), built
with SQLAlchemy Core from ``db.states``.

- **Delete** removes the row of a job that is finished (``completed``, ``failed``,
  ``cancelled``) or has not been handed to a worker (``scheduled``, ``queued``, ``retrying``).
  A ``dispatched`` or ``running`` job may be in a worker's hands: cancel it first. A deleted job
  no longer counts in the metric minutes recomputed after it (the rollup recomputes the last
  few minutes from the jobs table). As the retention pruner does: a job that a live job
  still depends on is not deleted (its dependent waits for it), and the workflow edges (both
  ways, ``queue_job_deps``) and log lines (``queue_job_logs``) of a deleted job go with it,
  in the same transaction (call it inside one).
- **Run now** sets ``scheduled_at`` of a ``scheduled`` or ``retrying`` job to the database's
  now; the status does not change here: the stager moves it to ``queued`` at its next pass, as
  for any job that became due (``Transition.STAGE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, exists, or_, select, update

from db import job_logs
from db.models import Job, JobDependency
from db.states import DELAYED, LIVE, TERMINAL, JobStatus, in_order, sorted_values
from db.types import db_now

jobs = Job.__table__

#: statuses a job may be deleted in: finished, or waiting without a worker holding it
DELETABLE: tuple[str, ...] = in_order(TERMINAL | DELAYED | {JobStatus.QUEUED})
#: statuses a job can be made due now in (it waits for its due time)
RUNNABLE_NOW: tuple[str, ...] = in_order(DELAYED)
#: ids per statement
CHUNK = 1_000


edges = JobDependency.__table__


def _no_live_dependent() -> Any:
    """The condition that no live job depends on the job."""
    dependent = jobs.alias("dependent")
    return ~exists(
        select(edges.c.job_id)
        .select_from(edges.join(dependent, dependent.c.id == edges.c.job_id))
        .where(
            edges.c.depends_on == jobs.c.id,
            dependent.c.status.in_(sorted_values(LIVE)),
        )
    )


def delete_jobs(conn: Connection, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Delete the jobs of ``ids`` whose status is in ``DELETABLE`` now (and that no live job
    depends on), with their workflow edges and log lines; returns the ids deleted (the others
    moved on, are needed, or never existed)."""
    done: list[uuid.UUID] = []
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        stmt = (
            delete(jobs)
            .where(
                jobs.c.id.in_(chunk),
                jobs.c.status.in_(sorted_values(DELETABLE)),
                _no_live_dependent(),
            )
            .returning(jobs.c.id)
        )
        deleted = list(conn.execute(stmt).scalars())
        if deleted:  # their workflow edges, both ways, and their log lines
            conn.execute(
                delete(edges).where(
                    or_(edges.c.job_id.in_(deleted), edges.c.depends_on.in_(deleted))
                )
            )
            job_logs.delete_of_jobs(conn, deleted)
        done.extend(deleted)
    return done


def run_now(conn: Connection, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Make the jobs of ``ids`` that wait for their due time (``RUNNABLE_NOW``) due now;
    returns the ids changed."""
    done: list[uuid.UUID] = []
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        stmt = (
            update(jobs)
            .where(jobs.c.id.in_(chunk), jobs.c.status.in_(sorted_values(RUNNABLE_NOW)))
            .values(scheduled_at=db_now(), updated_at=db_now())
            .returning(jobs.c.id)
        )
        done.extend(conn.execute(stmt).scalars())
    return done
