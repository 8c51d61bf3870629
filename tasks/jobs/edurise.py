"""EduRise job types: realistic, harmless, no network. Files go under QUEUE_DATA_DIR.

Both write their output under a name derived from the job id, so an attempt that runs twice
(at-least-once execution) overwrites the same file instead of producing a duplicate.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from db.settings import get_settings
from tasks.registry import JobContext, job, periodic_job


class StudentProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_id: str = Field(min_length=1, max_length=100)
    lessons_completed: int = Field(ge=0)
    quiz_average: float = Field(ge=0, le=100)


class CourseReportData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    course_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    total_lessons: int = Field(ge=1, le=10_000)
    students: list[StudentProgress] = Field(max_length=10_000)


class EnrollmentData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_email: str = Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    student_name: str = Field(min_length=1, max_length=200)
    course_id: str = Field(min_length=1, max_length=100)
    course_title: str = Field(min_length=1, max_length=300)


def _data_dir(sub: str) -> Path:
    path = get_settings().queue_data_dir / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@job("edurise.course_progress_report", queue="reports", schema=CourseReportData, timeout=300)
def course_progress_report(data: CourseReportData, ctx: JobContext) -> dict[str, object]:
    """Write a course-progress report as CSV (one row per student, completion %)."""
    path = _data_dir("reports") / f"{data.course_id}-{ctx.job_id}.csv"
    rows: list[list[str | int]] = []
    for s in data.students:
        pct = min(100.0, 100.0 * s.lessons_completed / data.total_lessons)
        rows.append([s.student_id, s.lessons_completed, f"{pct:.1f}", f"{s.quiz_average:.1f}"])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["student_id", "lessons_completed", "completion_pct", "quiz_average"])
    writer.writerows(rows)
    _atomic_write(path, buf.getvalue())
    done = sum(1 for r in rows if float(r[2]) >= 100.0)
    return {"path": str(path), "students": len(rows), "completed_course": done}


@job("edurise.enrollment_notification", queue="notifications", schema=EnrollmentData)
def enrollment_notification(data: EnrollmentData, ctx: JobContext) -> dict[str, str]:
    """Write a welcome message for a new enrollment to the notification outbox."""
    message = {
        "id": str(ctx.job_id),  # the outbox reader de-duplicates on this id
        "to": data.student_email,
        "subject": f"Welcome to {data.course_title}",
        "body": (
            f"Hi {data.student_name}, you are enrolled in {data.course_title} "
            f"({data.course_id}). Your first lesson is waiting."
        ),
        "created_at": datetime.now(UTC).isoformat(),
    }
    path = _data_dir("outbox") / f"{ctx.job_id}.json"
    _atomic_write(path, json.dumps(message, indent=2))
    return {"outbox": str(path)}


@periodic_job("edurise.outbox_digest", crontab="0 * * * *", queue="notifications")
def outbox_digest(data: dict[str, object], ctx: JobContext) -> dict[str, int]:
    """Hourly: count the messages waiting in the notification outbox."""
    return {"waiting": len(list(_data_dir("outbox").glob("*.json")))}
