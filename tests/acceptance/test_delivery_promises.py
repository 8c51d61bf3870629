"""The engine's promises under concurrency, with real worker processes:

- one start per delivery: copies of one message (same job id and lease) in the queue start
  the handler once, for thread and process workers, on PostgreSQL + Redis and embedded;
- a job that kills its worker uses up its attempts and ends ``failed`` after a bounded
  number of worker deaths, instead of crash-looping workers for ever;
- cancel tells the truth: "cancelled" only for a job that never runs, "cancel_requested"
  for one a worker holds.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from db.settings import get_settings
from tasks import api
from tasks.errors import InvalidTransition
from tasks.transport.broker import make_huey, storage_of
from tests.processes import Processes, wait_for

SYSTEMS = ["postgres+redis", "embedded"]


@pytest.fixture(params=SYSTEMS)
def system(request: pytest.FixtureRequest) -> Processes:
    """Worker and maintainer processes on PostgreSQL + Redis, or on the embedded default."""
    name = "processes" if request.param == "postgres+redis" else "embedded"
    return request.getfixturevalue(name)


def _executions(data_dir: Path) -> list[str]:
    """Job ids of every handler run of ``test.record`` (one line per run)."""
    path = data_dir / "executions.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _copy_message(job_id: uuid.UUID, copies: int) -> None:
    """Push ``copies`` more copies of the job's message (same id, same lease) to its queue,
    each with its own FIFO prefix, as a doubled push or a replayed message would."""
    storage = storage_of(make_huey(get_settings()))
    message = next(m for m in storage.window("default") if str(job_id).encode() in m)
    storage.push("default", [(message, 0)] * copies)
    assert len(storage.window("default")) == copies + 1


def _status(job_id: uuid.UUID) -> str:
    return str(api.get_job(job_id)["status"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_three_copies_of_a_message_run_the_handler_once(
    processes: Processes, settings_env: dict[str, str], kind: str
) -> None:
    data_dir = Path(settings_env["QUEUE_DATA_DIR"])
    job_id = api.submit_job("test.record", {"seconds": 0.3, "tag": "copied"})
    assert _status(job_id) == "dispatched"  # sent by its producer: the queue was idle
    _copy_message(job_id, 2)

    worker = processes.worker("--concurrency", "3", "--kind", kind)
    storage = storage_of(make_huey(get_settings()))
    wait_for(lambda: _status(job_id) == "completed", 20, "the job to complete")
    wait_for(lambda: storage.size_of("default") == 0, 10, "every copy to be popped")
    worker.terminate()  # graceful: a handler still running a copy would finish first
    assert worker.wait(timeout=30) == 0
    assert _executions(data_dir) == [str(job_id)]
    job = api.get_job(job_id)
    assert (job["attempt"], job["lease"]) == (1, 1)


@pytest.mark.slow
def test_copies_reaching_handlers_that_wait_for_the_doorbell_run_once(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    """Three copies pushed at once (with three doorbell tokens) to a thread worker whose
    three handlers all wait on the doorbell: each wakes and runs the pop-and-mark
    script (tasks/transport/broker.py ``pop``); only the first takes the delivery, so one handler
    runs it."""
    data_dir = Path(settings_env["QUEUE_DATA_DIR"])
    job_id = api.submit_job("test.record", {"seconds": 0.3, "tag": "copied"})
    storage = storage_of(make_huey(get_settings()))
    [message] = storage.window("default")
    storage.conn.delete(storage.key_for("default"))  # held back until the handlers wait
    processes.worker("--concurrency", "3", "--kind", "thread")
    db = storage.conn.connection_pool.connection_kwargs.get("db", 0)

    def waiting_handlers() -> int:
        clients = storage.conn.client_list()
        return sum(1 for c in clients if c["cmd"] == "blpop" and int(c["db"]) == db)

    wait_for(lambda: waiting_handlers() == 3, 20, "three handlers to wait for a doorbell token")
    storage.push("default", [(message, 0)] * 3)  # one ZADD: each waiting handler gets one
    wait_for(lambda: _status(job_id) == "completed", 20, "the job to complete")
    wait_for(lambda: waiting_handlers() == 3, 20, "every handler to wait again")
    assert storage.size_of("default") == 0
    assert _executions(data_dir) == [str(job_id)]
    job = api.get_job(job_id)
    assert (job["attempt"], job["lease"]) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_copies_of_a_message_run_once_on_the_embedded_default(
    embedded: Processes, settings_env: dict[str, str], kind: str
) -> None:
    job_id = api.submit_job("test.record", {"seconds": 0.3, "tag": "copied"})
    maintainer = embedded.maintainer()
    wait_for(lambda: _status(job_id) == "dispatched", 20, "the maintainer to send the job")
    maintainer.terminate()
    assert maintainer.wait(timeout=30) == 0
    _copy_message(job_id, 2)

    worker = embedded.worker("--concurrency", "3", "--kind", kind)
    storage = storage_of(make_huey(get_settings()))
    wait_for(lambda: _status(job_id) == "completed", 20, "the job to complete")
    wait_for(lambda: storage.size_of("default") == 0, 10, "every copy to be popped")
    worker.terminate()
    assert worker.wait(timeout=30) == 0
    assert _executions(Path(settings_env["QUEUE_DATA_DIR"])) == [str(job_id)]


@pytest.mark.slow
def test_a_job_that_kills_its_worker_ends_failed_after_bounded_deaths(
    system: Processes, request: pytest.FixtureRequest
) -> None:
    processes = system
    processes.maintainer()
    job_id = api.submit_job("test.crash", {})  # max_attempts=2: os._exit(1) at once
    deaths = 0
    while _status(job_id) != "failed":
        assert deaths <= 2, f"worker died {deaths} times; the job is {_status(job_id)}"
        worker = processes.worker("--concurrency", "2")

        def ended(worker=worker) -> bool:
            return worker.poll() is not None or _status(job_id) == "failed"

        wait_for(ended, 30, "the job to kill its worker or to fail")
        if worker.poll() is not None:
            assert worker.returncode == 1
            deaths += 1
            # the death must be counted before the next worker takes the job again: by the
            # reconciler (the delivery's mark; dispatched) or the rescuer (claimed; running)
            wait_for(
                lambda: _status(job_id) not in ("dispatched", "running"),
                30,
                "the death to be counted",
            )
    assert deaths == 2
    job = api.get_job(job_id)
    assert job["attempt"] == 2
    assert [e["kind"] for e in job["errors"]] == ["rescued", "rescued"]
    if request.node.callspec.params["system"] == "postgres+redis":  # the reconciler's count
        assert all("died before recording its start" in e["error"] for e in job["errors"])
    assert [e["attempt"] for e in job["errors"]] == [1, 2]


@pytest.mark.slow
def test_cancel_answers_match_what_the_ledger_later_shows(
    system: Processes, settings_env: dict[str, str]
) -> None:
    processes = system
    data_dir = Path(settings_env["QUEUE_DATA_DIR"])
    processes.maintainer()
    processes.worker("--concurrency", "2")
    warm = api.submit_job("test.record", {"tag": "warm-up"})
    wait_for(lambda: _status(warm) == "completed", 30, "the worker to start")

    answers: dict[uuid.UUID, str] = {}
    for i in range(30):
        # the jobs cancelled once they have surely started run long enough to be caught
        seconds = 2.0 if i % 3 == 0 else 0.05
        job_id = api.submit_job("test.record", {"seconds": seconds, "tag": f"j{i}"})
        if i % 3 == 0:  # once it has surely started: a request, never "cancelled"
            wait_for(lambda job_id=job_id: str(job_id) in _executions(data_dir), 10, "start")
        elif i % 3 == 1:
            os.sched_yield()  # a moment for a worker to take it, or not
        try:
            answers[job_id] = api.cancel_job(job_id)
        except InvalidTransition:  # it finished first: the third truthful answer
            answers[job_id] = "finished"

    terminal = {"completed", "failed", "cancelled"}
    wait_for(lambda: all(_status(j) in terminal for j in answers), 30, "every job to end")
    ran = set(_executions(data_dir))
    for job_id, answer in answers.items():
        job = api.get_job(job_id)
        assert answer in ("cancelled", "cancel_requested", "finished")
        if answer == "finished":
            assert job["status"] == "completed" and str(job_id) in ran
        elif answer == "cancelled":  # it never ran and never will
            assert job["status"] == "cancelled"
            assert str(job_id) not in ran
            assert job["started_at"] is None
        else:  # a worker held it: it ran to its end (test.record ignores requests) or the
            # worker saw the request before starting it
            assert job["cancel_requested_at"] is not None
            assert (job["status"] == "completed") == (str(job_id) in ran)
    started_first = [j for i, j in enumerate(answers) if i % 3 == 0]
    assert all(answers[j] == "cancel_requested" for j in started_first)
