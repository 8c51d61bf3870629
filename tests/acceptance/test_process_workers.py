"""Process workers (``--kind process``, ``tasks.worker.process_pool``): a parent that pops, reads
leases and records outcomes for job processes that only run handlers. What a user relies
on, with real worker processes on PostgreSQL + Redis:

- progress and cooperative cancel reach the ledger from a job process
  (``test_resource_control.py::test_cooperative_cancel_and_progress[process]``);
- a job that kills its job process costs that attempt, not the worker: it ends ``failed``
  after its attempts while the worker keeps running other jobs;
- a killed worker leaves no job process running a handler;
- a graceful stop hands back an attempt still running after the shutdown timeout.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

from tasks import api
from tests.processes import Processes, wait_for


def _status(job_id: uuid.UUID) -> str:
    return str(api.get_job(job_id)["status"])


def _handler_pids(data_dir: Path, job_id: uuid.UUID) -> list[int]:
    """The pid of each process that ran ``test.record`` for ``job_id`` (executions.log)."""
    path = data_dir / "executions.log"
    if not path.exists():
        return []
    return [
        int(line.split()[-1])
        for line in path.read_text().splitlines()
        if line.startswith(str(job_id))
    ]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_job_that_kills_its_job_process_fails_and_the_worker_lives_on(
    processes: Processes,
) -> None:
    processes.maintainer()
    worker = processes.worker("--concurrency", "2", "--kind", "process")
    crash_id = api.submit_job("test.crash", {})  # max_attempts=2: os._exit(1) at once
    wait_for(lambda: _status(crash_id) == "failed", 30, "the crashing job to fail")
    job = api.get_job(crash_id)
    assert job["attempt"] == 2
    assert [e["attempt"] for e in job["errors"]] == [1, 2]
    assert all(
        e["error"].startswith("WorkerLost: its process exited with code 1") for e in job["errors"]
    ), job["errors"]
    assert worker.poll() is None, "the worker itself must not die with its job process"
    ok_id = api.submit_job("test.record", {"tag": "after"})
    wait_for(lambda: _status(ok_id) == "completed", 20, "the next job on the same worker")


def test_a_killed_worker_leaves_no_job_process_running(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    data_dir = Path(settings_env["QUEUE_DATA_DIR"])
    processes.maintainer()
    worker = processes.worker("--concurrency", "1", "--kind", "process")
    job_id = api.submit_job("test.record", {"seconds": 30, "tag": "orphan?"})
    wait_for(lambda: bool(_handler_pids(data_dir, job_id)), 20, "the handler to start")
    [handler_pid] = _handler_pids(data_dir, job_id)
    assert handler_pid != worker.pid and _alive(handler_pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: not _alive(handler_pid), 10, "the job process to die with its worker")


def test_graceful_stop_hands_back_an_attempt_still_running(processes: Processes) -> None:
    processes.maintainer()
    worker = processes.worker(
        "--concurrency", "1", "--kind", "process", extra_env={"QUEUE_SHUTDOWN_TIMEOUT": "0.5"}
    )
    job_id = api.submit_job("test.work", {"ms": 5000})
    wait_for(lambda: _status(job_id) == "running", 20, "the job to start")
    worker.terminate()
    assert worker.wait(timeout=20) == 0
    job = api.get_job(job_id)
    assert job["status"] in ("queued", "dispatched"), job  # handed back, never left running
    assert job["attempt"] == (1 if job["status"] == "dispatched" else 0), job
    assert job["errors"] == []
    processes.worker("--concurrency", "1", "--kind", "process")
    wait_for(lambda: _status(job_id) == "completed", 30, "the re-run")


def _a_job_and_one_behind(processes: Processes, first_type: str) -> tuple[uuid.UUID, uuid.UUID]:
    """One job process that ran short jobs (so the worker sends each job process its next
    attempt while it still runs one: ``tasks.worker.process_pool.PIPELINE_SECONDS``), then a job of
    ``first_type`` and a ``test.record`` job behind it, submitted together."""
    processes.maintainer()
    processes.worker("--concurrency", "1", "--kind", "process")
    warm = api.submit_jobs([{"type": "test.record", "data": {"tag": "warm"}}] * 5)
    for job_id in warm:
        wait_for(lambda j=job_id: _status(j) == "completed", 30, "the warm-up jobs")
    first_id, behind_id = api.submit_jobs(
        [
            {"type": first_type, "data": {}, "priority": 9},
            {"type": "test.record", "data": {"tag": "behind"}, "priority": 1},
        ]
    )
    return first_id, behind_id


def _ran_once_uncharged(settings_env: dict[str, str], job_id: uuid.UUID) -> None:
    job = api.get_job(job_id)
    assert (job["status"], job["attempt"], job["errors"]) == ("completed", 1, [])
    assert len(_handler_pids(Path(settings_env["QUEUE_DATA_DIR"]), job_id)) == 1


def test_an_attempt_sent_behind_one_that_kills_its_process_runs_once_elsewhere(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    crash_id, behind_id = _a_job_and_one_behind(processes, "test.crash")
    wait_for(lambda: _status(behind_id) == "completed", 30, "the job sent behind the crash")
    wait_for(lambda: _status(crash_id) == "failed", 30, "the crashing job to fail")
    # never charged for the crash of the job ahead of it: it had not started
    _ran_once_uncharged(settings_env, behind_id)


def test_a_cancel_question_answered_while_the_next_attempt_waits_in_the_pipe(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    """The job process asks about cancel while the parent has already sent it the next
    attempt: it keeps that attempt for later and reads the answer."""
    slow_id, behind_id = _a_job_and_one_behind(processes, "test.cooperative")

    def asked_twice() -> bool:  # progress after 0.5 s: at least one cancel question asked
        job = api.get_job(slow_id)
        return job["status"] == "running" and (job["progress"] or 0) >= 0.02

    wait_for(asked_twice, 30, "the cooperative job to run a while")
    assert _status(slow_id) == "running"  # the answer "no" was read, not the next attempt
    assert api.cancel_job(slow_id) == "cancel_requested"
    wait_for(lambda: _status(slow_id) == "cancelled", 30, "the cooperative job to stop")
    wait_for(lambda: _status(behind_id) == "completed", 30, "the job sent behind it")
    _ran_once_uncharged(settings_env, behind_id)
