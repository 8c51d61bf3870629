"""The partitioned job type of ``bench fair_share`` (loaded with
QUEUE_JOB_MODULES=bench.jobs,bench.fair_share_jobs). Its unpartitioned counterpart is
``bench.noop`` of ``bench.jobs``: the same no-op handler, queue, priority and attempts."""

from __future__ import annotations

from tasks.registry import JobContext, job

#: the data field that names a job's partition
FIELD = "school_id"


@job("bench.fair_noop", max_attempts=1, partition_by=FIELD)
def fair_noop(data: dict, ctx: JobContext) -> None:
    """Does nothing, dispatched by partition (fair share): the dispatcher's own cost."""
