"""Built-in job types for demos and tests, on queue ``default``."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.registry import JobContext, job


class SleepData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=3600, description="how long the job sleeps")


class FailData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail_times: int = Field(ge=0, le=1000, description="attempts that raise before one succeeds")


class DemoFailure(RuntimeError):
    """Raised by demo.fail on purpose."""


@job("demo.echo", max_attempts=3)
def echo(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Return the data it was given."""
    return data


@job("demo.sleep", schema=SleepData, max_attempts=3)
def sleep(data: SleepData, ctx: JobContext) -> dict[str, float]:
    """Sleep for `seconds`, then return how long it slept."""
    start = time.monotonic()
    time.sleep(data.seconds)
    return {"slept": round(time.monotonic() - start, 3)}


@job("demo.fail", schema=FailData, max_attempts=3, backoff=0.2, max_backoff=2.0)
def fail(data: FailData, ctx: JobContext) -> dict[str, int]:
    """Raise on the first `fail_times` attempts, then succeed."""
    if ctx.attempt <= data.fail_times:
        raise DemoFailure(f"demo failure on attempt {ctx.attempt} of {data.fail_times}")
    return {"succeeded_on_attempt": ctx.attempt}
