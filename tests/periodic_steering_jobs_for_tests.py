"""A periodic job slower than its interval, for the overlap / pause end-to-end test (loaded
through QUEUE_JOB_MODULES)."""

from __future__ import annotations

import time
from datetime import timedelta

from tasks.registry import JobContext, periodic_job


@periodic_job("test.slow_tick", every=timedelta(seconds=1), data={"seconds": 2.5})
def slow_tick(data: dict[str, float], ctx: JobContext) -> dict[str, float]:
    """Ticks every second, runs for 2.5 s: with overlap="skip" (the default) ticks are
    skipped while it runs, and two runs never overlap."""
    time.sleep(data["seconds"])
    return data
