"""Read model of the Errors page: error entries grouped by fingerprint (exception type and
the handler's top frame), from the failed and in-flight jobs (bounded by indexes and a LIMIT)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from db import states
from db.engine import read
from db.models import Job
from db.states import JobStatus, sorted_values
from db.types import json_array_length
from metrics.read.common import aware_utc

jobs = Job.__table__
IN_FLIGHT = sorted_values(states.IN_FLIGHT)

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+?)\s*$')
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
#: frames that are not the handler's: libraries, Huey, the worker runtime (``tasks/worker.py``
#: before it moved to ``tasks/worker/runtime.py``: stored tracebacks keep their groups)
_FRAMEWORK = re.compile(
    r"(site-packages|dist-packages|/lib/python\d+(\.\d+)?/|<frozen |/huey/"
    r"|tasks/worker(/runtime)?\.py$)"
)
MAX_GROUP_JOB_IDS = 1000
MAX_CANDIDATE_JOBS = 20_000


@dataclass(frozen=True)
class Fingerprint:
    fingerprint: str
    exception_type: str
    location: str | None


@lru_cache(maxsize=4096)
def _top_frame(frames_text: str) -> tuple[str, str, str] | None:
    """The handler's frame in the frame lines of a traceback (cached: one code path fails
    the same way many times)."""
    frames = [m for m in map(_FRAME.match, frames_text.splitlines()) if m]
    own = [f for f in frames if not _FRAMEWORK.search(f["file"])]
    chosen = own[-1] if own else (frames[-1] if frames else None)
    return None if chosen is None else (chosen["file"], chosen["line"], chosen["func"])


def fingerprint(entry: dict[str, Any]) -> Fingerprint:
    """Exception type + the handler's top frame (the last frame outside the standard library,
    site-packages, Huey and the worker runtime); line numbers are not part of the hash, so a
    group survives edits above the failing line."""
    error = str(entry.get("error") or "")
    tb = entry.get("traceback")
    if entry.get("kind") == "rescued" or (not tb and error.startswith("Rescued:")):
        reason = error.removeprefix("Rescued:").strip() or "rescued"
        digest = hashlib.sha1(f"Rescued|{reason}".encode()).hexdigest()[:16]
        return Fingerprint(digest, "Rescued", f"rescuer: {reason}")
    exc_type = None
    frame = None
    if isinstance(tb, str) and tb:
        lines = tb.rstrip().splitlines()
        # the exception line(s) come after the last frame; they carry the varying message
        last_frame = max((i for i, line in enumerate(lines) if _FRAME.match(line)), default=-1)
        frame = _top_frame("\n".join(lines[: last_frame + 1]))
        for line in reversed(lines[last_frame + 1 :]):
            if line and not line[0].isspace():
                m = _EXC_LINE.match(line.strip())
                if m:
                    exc_type = m["type"]
                    break
    if exc_type is None:
        m = _EXC_LINE.match(error.split("\n", 1)[0])
        exc_type = m["type"] if m and m["msg"] is not None else "Error"
    location = f"{frame[0]}:{frame[1]} in {frame[2]}" if frame else None
    key = f"{exc_type}|{frame[0]}|{frame[2]}" if frame else f"{exc_type}|"
    return Fingerprint(hashlib.sha1(key.encode()).hexdigest()[:16], exc_type, location)


def _entry_at(entry: dict[str, Any]) -> datetime | None:
    at = entry.get("at")
    if not isinstance(at, str):
        return None
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def error_groups(
    engine: Engine,
    *,
    since: datetime,
    queue: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Error entries since ``since`` grouped by fingerprint, most frequent first.

    Reads the jobs that failed since ``since`` and the jobs in flight that carry errors (at
    most 20,000 jobs, newest first); entries of jobs that later completed are not included
    (they are counted in the rollups' ``error_count``). ``job_ids`` are the jobs currently
    ``failed`` whose last error is in the group (at most 1,000), for a bulk retry.
    """
    since = aware_utc(since)
    stmt = (
        select(jobs.c.id, jobs.c.status, jobs.c.errors)
        .where(
            or_(
                and_(jobs.c.status == JobStatus.FAILED.value, jobs.c.finished_at >= since),
                and_(jobs.c.status.in_(IN_FLIGHT), jobs.c.updated_at >= since),
            ),
            json_array_length(jobs.c.errors) > 0,
        )
        .order_by(jobs.c.updated_at.desc())
        .limit(MAX_CANDIDATE_JOBS)
    )
    if queue is not None:
        stmt = stmt.where(jobs.c.queue == queue)
    if job_type is not None:
        stmt = stmt.where(jobs.c.type == job_type)
    with read(engine) as conn:
        rows = conn.execute(stmt).all()
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        job_id = r.id
        last_group = None
        for entry in r.errors or []:
            if not isinstance(entry, dict) or entry.get("kind") not in (None, "error", "rescued"):
                continue
            fp = fingerprint(entry)
            last_group = fp.fingerprint
            at = _entry_at(entry)
            if at is None or at < since:
                continue
            g = groups.get(fp.fingerprint)
            if g is None:
                g = groups[fp.fingerprint] = {
                    "fingerprint": fp.fingerprint,
                    "exception_type": fp.exception_type,
                    "location": fp.location,
                    "message_sample": str(entry.get("error") or "")[:500],
                    "count": 0,
                    "first_seen": at,
                    "last_seen": at,
                    "example_job_id": job_id,
                    "job_ids": [],
                }
            g["count"] += 1
            g["first_seen"] = min(g["first_seen"], at)
            if at > g["last_seen"]:  # the newest occurrence is the sample
                g["last_seen"] = at
                g["message_sample"] = str(entry.get("error") or "")[:500]
                g["example_job_id"] = job_id
                g["location"] = fp.location
        if r.status == JobStatus.FAILED and last_group in groups:
            ids = groups[last_group]["job_ids"]
            if len(ids) < MAX_GROUP_JOB_IDS:
                ids.append(job_id)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_seen"].timestamp()))
    return ordered[: max(0, limit)]
