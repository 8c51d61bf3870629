"""Reading per-job logs on PostgreSQL and SQLite: in order, after a line (to follow a running
job), by attempt, by text (case-insensitive, ``%`` and ``_`` literal), and deleted with their
jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from db import job_logs
from db.engine import engine_for, read, write
from db.job_logs import LogLine


def _store(url: str, job_id: uuid.UUID, messages: list[tuple[int, str]]) -> None:
    now = datetime.now(UTC)
    with write(engine_for(url)) as conn:
        job_logs.insert_lines(
            conn, [LogLine(job_id, attempt, now, "INFO", text) for attempt, text in messages]
        )


def test_lines_read_in_order_after_a_line_by_attempt_and_by_text(ledger_url: str) -> None:
    job_id, other = uuid.uuid4(), uuid.uuid4()
    _store(ledger_url, job_id, [(1, "Grading 40 submissions"), (1, "done 100%"), (2, "retry")])
    _store(ledger_url, other, [(1, "someone else's line")])
    with read(engine_for(ledger_url)) as conn:
        lines = job_logs.lines_of(conn, job_id)
        assert [x["message"] for x in lines] == ["Grading 40 submissions", "done 100%", "retry"]
        after = job_logs.lines_of(conn, job_id, after=lines[0]["id"])
        assert [x["message"] for x in after] == ["done 100%", "retry"]
        assert [x["message"] for x in job_logs.lines_of(conn, job_id, attempt=2)] == ["retry"]
        found = job_logs.lines_of(conn, job_id, contains="GRADING")
        assert [x["message"] for x in found] == ["Grading 40 submissions"]
        assert [x["message"] for x in job_logs.lines_of(conn, job_id, contains="0%")] == [
            "done 100%"
        ]
        assert job_logs.lines_of(conn, job_id, contains="_") == []
    with write(engine_for(ledger_url)) as conn:
        assert job_logs.delete_of_jobs(conn, [job_id]) == 3
    with read(engine_for(ledger_url)) as conn:
        assert job_logs.lines_of(conn, job_id) == []
        assert len(job_logs.lines_of(conn, other)) == 1
