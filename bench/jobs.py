"""Job types for the benchmarks (loaded with QUEUE_JOB_MODULES=bench.jobs)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from tasks.registry import JobContext, job


class SleepMs(BaseModel):
    ms: float = Field(default=10, ge=0, le=10_000)


@job("bench.noop", max_attempts=1)
def noop(data: dict, ctx: JobContext) -> None:
    """Does nothing: measures the queue's own cost."""


@job("bench.sleep", max_attempts=1, schema=SleepMs)
def sleep_ms(data: SleepMs, ctx: JobContext) -> dict[str, float]:
    """Sleeps `ms` milliseconds (a job that waits on I/O). Returns its own start and finish
    (wall clock), as the plain Huey task of the benchmarks records them."""
    started = time.time()
    time.sleep(data.ms / 1000)
    return {"started": started, "finished": time.time()}


class ChattyData(BaseModel):
    lines: int = Field(default=10_000, ge=0, le=1_000_000)


@job("bench.chatty", max_attempts=1, schema=ChattyData)
def chatty(data: ChattyData, ctx: JobContext) -> None:
    """Logs ``lines`` lines through ``ctx.log`` (a job that logs in a tight loop)."""
    for i in range(data.lines):
        ctx.log.info("step %d of %d", i, data.lines)
