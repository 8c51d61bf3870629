"""Job types used by the acceptance tests (loaded through QUEUE_JOB_MODULES)."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

from pydantic import BaseModel, Field

from db.settings import get_settings
from tasks.registry import JobContext, job


class RecordData(BaseModel):
    seconds: float = Field(default=0, ge=0, le=60)
    tag: str = ""


@job("test.record", queue="default", max_attempts=3, backoff=0.2, schema=RecordData)
def record(data: RecordData, ctx: JobContext) -> dict[str, str]:
    """Append "<job id> <attempt> <tag>" to executions.log, then sleep."""
    path = get_settings().queue_data_dir / "executions.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{ctx.job_id} {ctx.attempt} {data.tag} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(data.seconds)
    return {"tag": data.tag}


class SchoolData(BaseModel):
    school: str | int
    seconds: float = Field(default=0, ge=0, le=60)
    tag: str = ""


def _append(name: str, line: str) -> None:
    path = get_settings().queue_data_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@job("test.school", partition_by="school", schema=SchoolData)
def school(data: SchoolData, ctx: JobContext) -> None:
    """Fair share: append "<school> <tag>" to schools.log (the start order), then sleep."""
    _append("schools.log", f"{data.school} {data.tag}\n")
    time.sleep(data.seconds)


@job("test.school_one", partition_by="school", concurrency=1, schema=SchoolData)
def school_one(data: SchoolData, ctx: JobContext) -> None:
    """At most one per school at a time: appends "<school> <start> <end>" to intervals.log."""
    started = time.time()
    time.sleep(data.seconds)
    _append("intervals.log", f"{data.school} {started} {time.time()}\n")


@job("test.school_rated", partition_by="school", rate_limit="2/m", schema=SchoolData)
def school_rated(data: SchoolData, ctx: JobContext) -> None:
    """At most two starts per school per minute."""


@job("test.limited", concurrency=2, schema=RecordData)
def limited(data: RecordData, ctx: JobContext) -> None:
    """At most two run at once."""
    time.sleep(data.seconds)


@job("test.rated", rate_limit="60/m", schema=RecordData)
def rated(data: RecordData, ctx: JobContext) -> None:
    """At most 60 start per minute."""


@job("test.cooperative", max_attempts=1)
def cooperative(data: dict, ctx: JobContext) -> str:
    """Works in small steps, reporting progress and honouring cancel requests."""
    for step in range(600):
        ctx.check_cancelled()
        ctx.progress(step / 600, f"step {step}")
        time.sleep(0.05)
    return "finished"


@job("test.stubborn", max_attempts=1)
def stubborn(data: dict, ctx: JobContext) -> str:
    """Ignores cancel requests."""
    time.sleep(1.0)
    return "finished anyway"


@job("test.progress", max_attempts=1)
def progress(data: dict, ctx: JobContext) -> None:
    """Reports progress in ten steps."""
    for step in range(1, 11):
        ctx.progress(step / 10, f"step {step}")
        time.sleep(0.3)


@job("test.unique", unique_for=timedelta(seconds=30))
def unique(data: dict, ctx: JobContext) -> None:
    """One per distinct payload every 30 s."""


class WorkData(BaseModel):
    ms: int = Field(ge=0, le=60_000)
    fail_times: int = Field(default=0, ge=0)


@job("test.work", max_attempts=3, backoff=0.1, max_backoff=0.5, schema=WorkData)
def work(data: WorkData, ctx: JobContext) -> dict[str, int]:
    """Sleeps `ms`, fails on its first `fail_times` attempts; logs every execution."""
    path = get_settings().queue_data_dir / "work.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{ctx.job_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    time.sleep(data.ms / 1000)
    if ctx.attempt <= data.fail_times:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@job("test.hang", max_attempts=2, backoff=0.1, timeout=1.0)
def hang(data: dict, ctx: JobContext) -> None:
    """Never returns on its own (a stuck handler)."""
    time.sleep(3600)


@job("test.raises_cancelled", max_attempts=1)
def raises_cancelled(data: dict, ctx: JobContext) -> None:
    """Raises JobCancelled although nobody cancelled it: that is a plain failure."""
    from tasks.registry import JobCancelled

    raise JobCancelled("not really")


@job("test.crash", max_attempts=2, backoff=0.1)
def crash(data: dict, ctx: JobContext) -> None:
    """Kills its worker process at once (a segfault or an OOM kill, as a job sees it)."""
    os._exit(1)


class StepData(BaseModel):
    tag: str = ""
    fail_attempts: int = Field(default=0, ge=0, le=10)  # attempts 1..n raise
    first_seconds: float = Field(default=0, ge=0, le=60)  # attempt 1 sleeps this long


@job("test.step", max_attempts=1, schema=StepData)
def workflow_step(data: StepData, ctx: JobContext) -> dict[str, object]:
    """A workflow step: appends "<tag> <job id> <attempt>" to workflow.log, fails its first
    ``fail_attempts`` attempts, returns its tag and the tags its dependencies returned."""
    path = get_settings().queue_data_dir / "workflow.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{data.tag} {ctx.job_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    if ctx.attempt == 1:
        time.sleep(data.first_seconds)
    if ctx.attempt <= data.fail_attempts:
        raise RuntimeError(f"step {data.tag} fails attempt {ctx.attempt}")
    results = ctx.dependency_results
    inputs = sorted(str(r["tag"]) if isinstance(r, dict) else "-" for r in results.values())
    return {"tag": data.tag, "inputs": inputs}


class LogsData(BaseModel):
    lines: int = Field(default=3, ge=0, le=100_000)
    hold: float = Field(default=0, ge=0, le=30)  # seconds to sleep after logging


@job("test.logs", max_attempts=1, schema=LogsData)
def logs(data: LogsData, ctx: JobContext) -> None:
    """Logs ``lines`` lines, alternately through ``ctx.log`` and a logger under it, then
    sleeps ``hold`` seconds (ended early by a cancel)."""
    detail = logging.getLogger(f"job.{ctx.type}.detail")
    for i in range(data.lines):
        (ctx.log if i % 2 == 0 else detail).info("line %d of attempt %d", i, ctx.attempt)
    deadline = time.monotonic() + data.hold
    while time.monotonic() < deadline:
        ctx.check_cancelled()  # a cancelled hold ends at once
        time.sleep(0.05)
