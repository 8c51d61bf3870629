"""A fast periodic job for the periodic-tick test (loaded through QUEUE_JOB_MODULES)."""

from __future__ import annotations

from datetime import timedelta

from tasks.registry import JobContext, periodic_job


@periodic_job("test.tick", every=timedelta(seconds=2), data={"hello": "tick"}, overlap="allow")
def tick(data: dict[str, str], ctx: JobContext) -> dict[str, str]:
    """Runs every two seconds (every tick is enqueued, even under load: the test counts them)."""
    return data
