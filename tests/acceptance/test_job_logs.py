"""Per-job logs with real workers (thread and process) on PostgreSQL + Redis: what a handler
logs through ``ctx.log`` or a logger under it is kept per attempt, in order, shows while the
job runs, and is bounded with a marker saying what was dropped."""

from __future__ import annotations

import uuid

import pytest

from db import job_logs
from db.engine import read
from tasks import api
from tasks.worker.job_logs import MAX_LINES
from tests.processes import Processes, wait_for

KINDS = ["thread", "process"]


def _lines(job_id: uuid.UUID) -> list[dict]:
    with read(api.engine()) as conn:
        return job_logs.lines_of(conn, job_id, limit=10_000)


def _status(job_id: uuid.UUID) -> str:
    return str(api.get_job(job_id)["status"])


@pytest.mark.parametrize("kind", KINDS)
def test_lines_are_kept_in_order_per_attempt(processes: Processes, kind: str) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2", "--kind", kind)
    job_id = api.submit_job("test.logs", {"lines": 5})
    quiet_id = api.submit_job("test.record", {"tag": "logs nothing"})
    wait_for(lambda: _status(job_id) == "completed", 20, "the job to complete")
    wait_for(lambda: len(_lines(job_id)) == 5, 5, "its lines to be written")
    lines = _lines(job_id)
    assert [x["message"] for x in lines] == [f"line {i} of attempt 1" for i in range(5)]
    assert {(x["attempt"], x["level"]) for x in lines} == {(1, "INFO")}
    wait_for(lambda: _status(quiet_id) == "completed", 20, "the quiet job")
    assert _lines(quiet_id) == []


@pytest.mark.parametrize("kind", KINDS)
def test_lines_show_while_the_job_runs(processes: Processes, kind: str) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "1", "--kind", kind)
    job_id = api.submit_job("test.logs", {"lines": 2, "hold": 10})
    wait_for(lambda: len(_lines(job_id)) == 2, 10, "the lines of the running job")
    assert _status(job_id) == "running"
    assert api.cancel_job(job_id) == "cancel_requested"
    wait_for(lambda: _status(job_id) == "cancelled", 5, "the hold to end on the cancel")


@pytest.mark.parametrize("kind", KINDS)
def test_an_attempt_keeps_a_bounded_log_and_says_what_it_dropped(
    processes: Processes, kind: str
) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "1", "--kind", kind)
    job_id = api.submit_job("test.logs", {"lines": MAX_LINES + 500})
    wait_for(lambda: _status(job_id) == "completed", 30, "the job to complete")
    wait_for(lambda: len(_lines(job_id)) == MAX_LINES + 1, 10, "its lines to be written")
    lines = _lines(job_id)
    assert lines[MAX_LINES - 1]["message"] == f"line {MAX_LINES - 1} of attempt 1"
    marker = lines[-1]
    assert marker["level"] == "WARNING"
    assert marker["message"].startswith("[truncated: 500 more line(s) not kept")


def test_queuectl_logs_prints_filters_and_follows(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "2")
    done_id = api.submit_job("test.logs", {"lines": 3})
    wait_for(lambda: len(_lines(done_id)) == 3, 20, "the lines to be written")
    out = processes.cli("logs", str(done_id))
    assert out.returncode == 0, out.stderr
    printed = out.stdout.splitlines()
    assert [p.split("] ", 1)[1] for p in printed] == [f"line {i} of attempt 1" for i in range(3)]
    assert all(" INFO    [attempt 1] " in p for p in printed)
    grep = processes.cli("logs", str(done_id), "--grep", "LINE 1 ")
    assert grep.stdout.count("\n") == 1 and "line 1 of attempt 1" in grep.stdout

    running_id = api.submit_job("test.logs", {"lines": 2, "hold": 2})
    followed = processes.cli("logs", str(running_id), "--follow")  # returns once it ends
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.count("of attempt 1") == 2
    assert _status(running_id) == "completed"

    missing = processes.cli("logs", str(uuid.uuid4()))
    assert missing.returncode != 0 and "does not exist" in missing.stderr
