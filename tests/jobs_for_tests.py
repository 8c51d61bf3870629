"""Job types used by the acceptance tests (loaded through QUEUE_JOB_MODULES)."""

from __future__ import annotations

import os
import time

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
