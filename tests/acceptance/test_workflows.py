"""Workflows with real worker and maintainer processes, on PostgreSQL + Redis and on the
embedded default (SQLite ledger and transport): chains run in order, a fan-in runs its
callback once after its last parent with every result, failures cancel (or with "run" do
not cancel) what waits, a cancelled root cancels its graph, a retried parent completes it."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

from tasks import api, workflows
from tests import services
from tests.acceptance.conftest import Processes, wait_for

SYSTEMS = ["postgres+redis", "embedded"]


@pytest.fixture(params=SYSTEMS)
def system(request: pytest.FixtureRequest) -> Processes:
    """A maintainer and a 4-thread worker on PostgreSQL + Redis or the embedded default."""
    name = "processes" if request.param == "postgres+redis" else "embedded"
    procs: Processes = request.getfixturevalue(name)
    procs.maintainer()
    procs.worker("--concurrency", "4")
    return procs


def runs(settings_env: dict[str, str]) -> list[tuple[str, str]]:
    """``(tag, job id)`` of every handler run of ``test.step``, in the order they started."""
    path = Path(settings_env["QUEUE_DATA_DIR"]) / "workflow.log"
    if not path.exists():
        return []
    return [(line.split()[0], line.split()[1]) for line in path.read_text().splitlines()]


def job(job_id: uuid.UUID) -> dict[str, Any]:
    return api.get_job(job_id)


def ended(*ids: uuid.UUID) -> bool:
    return all(job(i)["status"] in ("completed", "failed", "cancelled") for i in ids)


def step(tag: str, **extra: Any) -> dict[str, Any]:
    return workflows.step("test.step", {"tag": tag, **extra})


def test_a_chain_runs_in_order(system: Processes, settings_env: dict[str, str]) -> None:
    ids = workflows.chain(*(step(f"c{i}") for i in range(6)))
    wait_for(lambda: ended(*ids), 60, "the chain to end")
    rows = [job(i) for i in ids]
    assert [r["status"] for r in rows] == ["completed"] * 6
    assert [tag for tag, _ in runs(settings_env)] == [f"c{i}" for i in range(6)]
    for before, after in itertools.pairwise(rows):
        assert after["started_at"] >= before["completed_at"]
        assert after["result"]["inputs"] == [before["result"]["tag"]]


def test_a_fan_in_runs_its_callback_once_after_the_last_of_100_parents(
    system: Processes, settings_env: dict[str, str]
) -> None:
    header, callback = workflows.chord([step(f"p{i}") for i in range(100)], step("report"))
    wait_for(lambda: ended(callback), 90, "the callback to end")
    done = job(callback)
    assert done["status"] == "completed"
    assert done["result"]["inputs"] == sorted(f"p{i}" for i in range(100))
    assert [tag for tag, _ in runs(settings_env)].count("report") == 1
    assert runs(settings_env)[-1][0] == "report"  # it started after every parent
    last_parent = max(job(p)["completed_at"] for p in header)
    assert done["started_at"] >= last_parent


def test_a_failed_parent_cancels_the_callback_or_with_run_still_runs_it(
    system: Processes, settings_env: dict[str, str]
) -> None:
    ids = api.submit_jobs(
        [
            step("good"),
            step("bad", fail_attempts=1),
            {**step("cancelled-callback"), "depends_on": [0, 1]},
            {**step("after-cancelled"), "depends_on": [2]},
            {**step("run-callback"), "depends_on": [0, 1], "on_dependency_failure": "run"},
        ]
    )
    _, bad, cancelled, _, ran = ids
    wait_for(lambda: ended(*ids), 60, "the graph to end")
    assert [job(i)["status"] for i in ids] == [
        "completed",
        "failed",
        "cancelled",
        "cancelled",
        "completed",
    ]
    assert job(cancelled)["errors"][-1]["dependency"] == str(bad)
    assert job(ran)["result"]["inputs"] == sorted(["-", "good"])  # the failed one: None
    tags = [tag for tag, _ in runs(settings_env)]
    assert "cancelled-callback" not in tags and "after-cancelled" not in tags


def test_a_cancelled_root_cancels_its_waiting_graph(
    system: Processes, settings_env: dict[str, str]
) -> None:
    root = api.schedule_job("test.step", {"tag": "root"}, 3600)
    header = workflows.group(step("a"), step("b"), after=root)
    callback = workflows.chord(header, step("report")).callback
    email = api.submit_job("test.step", {"tag": "email"}, depends_on=[callback])
    assert api.cancel_job(root) == "cancelled"
    assert api.dependents_cancelled(root) == 4
    assert all(job(i)["status"] == "cancelled" for i in (*header, callback, email))
    assert runs(settings_env) == []


def test_retrying_the_failed_parent_completes_the_graph(
    system: Processes, settings_env: dict[str, str]
) -> None:
    parent = api.submit_job("test.step", {"tag": "grade", "fail_attempts": 1})
    report = api.submit_job("test.step", {"tag": "report"}, depends_on=[parent])
    email = api.submit_job("test.step", {"tag": "email"}, depends_on=[report])
    wait_for(lambda: ended(parent), 30, "the parent to fail")
    statuses = [job(i)["status"] for i in (parent, report, email)]
    assert statuses == ["failed", "cancelled", "cancelled"]
    assert api.retry_job(parent) == 2
    wait_for(lambda: job(email)["status"] == "completed", 60, "the graph to complete")
    assert [tag for tag, _ in runs(settings_env)] == ["grade", "grade", "report", "email"]
    assert job(report)["result"]["inputs"] == ["grade"]


def test_a_killed_worker_mid_chain_loses_no_step(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    """The step whose worker is killed runs again (at-least-once); every step after it is
    released once, after it completed, and runs once."""
    processes.maintainer()
    victim = processes.worker("--concurrency", "2")
    tags = ["k0", "k1", "k2", "k3"]
    ids = workflows.chain(
        *({**step(t, first_seconds=30 if t == "k1" else 0), "max_attempts": 3} for t in tags)
    )
    wait_for(lambda: job(ids[1])["status"] == "running", 30, "the long step to start")
    victim.kill()
    victim.wait()
    processes.worker("--concurrency", "2")
    # the rescuer ends the dead worker's attempt (stale heartbeat: 3 s); attempt 2 is quick
    wait_for(lambda: job(ids[1])["attempt"] >= 2, 30, "the rescued step to run again")
    wait_for(lambda: ended(*ids), 90, "the chain to end")
    assert [job(i)["status"] for i in ids] == ["completed"] * 4
    ran = [tag for tag, _ in runs(settings_env)]
    assert ran.count("k0") == 1 and ran.count("k2") == 1 and ran.count("k3") == 1
    assert ran.index("k2") > max(i for i, t in enumerate(ran) if t == "k1")
    assert job(ids[2])["started_at"] >= job(ids[1])["completed_at"]


def test_a_redis_flush_mid_chain_loses_no_step(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    """A released step whose message Redis loses is sent again by the reconciler; the chain
    completes with every step run once, in order."""
    processes.maintainer()
    ids = workflows.chain(*(step(f"r{i}") for i in range(3)))
    wait_for(lambda: job(ids[0])["status"] == "dispatched", 30, "the first step to be sent")
    services.redis_client().flushdb()
    processes.worker("--concurrency", "2")
    wait_for(lambda: ended(*ids), 60, "the chain to end")
    assert [job(i)["status"] for i in ids] == ["completed"] * 3
    assert [tag for tag, _ in runs(settings_env)] == ["r0", "r1", "r2"]


def test_a_process_worker_handler_reads_its_dependency_results(
    processes: Processes, settings_env: dict[str, str]
) -> None:
    """``ctx.dependency_results`` in a forked handler process (its own ledger connection)."""
    processes.maintainer()
    processes.worker("--kind", "process", "--concurrency", "2")
    callback = workflows.chord([step("x"), step("y")], step("z")).callback
    wait_for(lambda: ended(callback), 60, "the callback to end")
    assert job(callback)["status"] == "completed"
    assert job(callback)["result"]["inputs"] == ["x", "y"]
