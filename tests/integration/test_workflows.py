"""Job dependencies on SQLite and PostgreSQL, driven through the ledger's own calls (claim,
complete, fail, cancel, retry): promotion, cancellation downstream, revival, validation.
Runs with real workers are in tests/acceptance/test_workflows.py."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from db.engine import engine_for, read, transaction, write
from db.ledger import attempts, core, producer
from db.models import Job, JobDependency, Metric
from tasks import api, workflows
from tasks.errors import InvalidArgument, InvalidDependency, InvalidTransition, UnknownDependency


def eng(url: str) -> Any:
    return engine_for(url)


def status(job_id: uuid.UUID) -> str:
    return str(api.get_job(job_id)["status"])


def run(url: str, job_id: uuid.UUID, result: Any = None, *, fail: bool = False) -> None:
    """What a worker does with one attempt: claim it, then complete or fail it."""
    with write(eng(url)) as conn:
        claimed = attempts.claim(conn, job_id, None)
    assert claimed is not None, status(job_id)
    with write(eng(url)) as conn:
        if fail:
            entry = core.error_entry(
                claimed.attempt, "boom", traceback=None, worker=None, kind="error"
            )
            attempts.fail_attempt(conn, job_id, claimed.lease, entry, 0.0)
        else:
            assert attempts.complete(conn, job_id, claimed.lease, result)


def counts(url: str) -> tuple[int, int]:
    with read(eng(url)) as conn:
        jobs = conn.execute(select(func.count()).select_from(Job)).scalar_one()
        edges = conn.execute(select(func.count()).select_from(JobDependency)).scalar_one()
    return jobs, edges


def test_a_chain_is_released_one_step_at_a_time(use_ledger: str) -> None:
    a, b, c = workflows.chain(("demo.echo", {"n": 1}), ("demo.echo", {"n": 2}), ("demo.echo", {}))
    assert [status(j) for j in (a, b, c)] == ["queued", "waiting", "waiting"]
    run(use_ledger, a, {"n": 1})
    assert [status(j) for j in (a, b, c)] == ["completed", "queued", "waiting"]
    run(use_ledger, b, {"n": 2})
    assert status(c) == "queued"
    assert workflows.dependency_results(c) == {b: {"n": 2}}
    shown = api.get_job(b)
    assert [d["id"] for d in shown["depends_on"]] == [a]
    assert [d["id"] for d in shown["dependents"]] == [c]
    assert shown["deps_pending"] == 0


def test_a_fan_in_waits_for_its_last_parent_and_sees_every_result(use_ledger: str) -> None:
    header, callback = workflows.chord(
        [("demo.echo", {"i": i}) for i in range(20)], ("demo.echo", {})
    )
    for i, parent in enumerate(header):
        assert status(callback) == "waiting"
        run(use_ledger, parent, {"i": i})
    assert status(callback) == "queued"
    results = workflows.dependency_results(callback)
    assert results == {p: {"i": i} for i, p in enumerate(header)}


def test_parents_ending_at_once_release_the_callback_exactly_once(use_ledger: str) -> None:
    if use_ledger.startswith("sqlite"):
        pytest.skip("SQLite serializes every write: no concurrent finish to race")
    header, callback = workflows.chord([("demo.echo", {}) for _ in range(60)], ("demo.echo", {}))
    claimed = {}
    with write(eng(use_ledger)) as conn:
        for p in header:
            claimed[p] = attempts.claim(conn, p, None)
    barrier = threading.Barrier(6)

    def finish(part: list[uuid.UUID]) -> None:
        barrier.wait()
        for p in part:
            with write(eng(use_ledger)) as conn:
                attempts.complete_many(conn, [attempts.Outcome(p, claimed[p].lease, None)])

    threads = [threading.Thread(target=finish, args=(header[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = api.get_job(callback)
    assert (job["status"], job["deps_pending"]) == ("queued", 0)
    assert all(d["resolved"] == "completed" for d in job["depends_on"])


def test_a_failed_parent_cancels_the_graph_below_it(use_ledger: str) -> None:
    ok = api.submit_job("demo.echo", {})
    bad = api.submit_job("demo.echo", {}, max_attempts=1)
    callback = api.submit_job("demo.echo", {}, depends_on=[ok, bad])
    after = api.submit_job("demo.echo", {}, depends_on=[callback])
    runs_anyway = api.submit_job(
        "demo.echo", {}, depends_on=[callback], on_dependency_failure="run"
    )
    run(use_ledger, bad, fail=True)
    assert status(bad) == "failed"
    job = api.get_job(callback)
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert job["errors"][-1]["kind"] == "dependency"
    assert job["errors"][-1]["dependency"] == str(bad)
    assert str(bad) in job["last_error"]
    assert status(after) == "cancelled"
    assert str(callback) in api.get_job(after)["last_error"]
    assert status(runs_anyway) == "queued"  # "run": ended in any way is enough
    assert api.dependents_cancelled(bad) == 2
    run(use_ledger, ok)  # the other parent ends later: nothing moves back
    assert status(callback) == "cancelled"


def test_run_mode_callback_runs_after_a_failed_parent(use_ledger: str) -> None:
    bad = api.submit_job("demo.echo", {}, max_attempts=1)
    good = api.submit_job("demo.echo", {})
    callback = api.submit_job("demo.echo", {}, depends_on=[bad, good], on_dependency_failure="run")
    run(use_ledger, bad, fail=True)
    assert status(callback) == "waiting"
    run(use_ledger, good, {"ok": 1})
    assert status(callback) == "queued"
    assert workflows.dependency_results(callback) == {bad: None, good: {"ok": 1}}


def test_cancelling_a_root_cancels_its_waiting_graph_and_says_how_many(use_ledger: str) -> None:
    root, *rest = workflows.chain(*[("demo.echo", {"n": i}) for i in range(5)])
    side = api.submit_job("demo.echo", {}, depends_on=[rest[0]])
    assert api.cancel_job(root) == "cancelled"
    assert [status(j) for j in rest] == ["cancelled"] * 4
    assert status(side) == "cancelled"
    assert api.dependents_cancelled(root) == 5


def test_cancelling_a_waiting_job_leaves_its_parent_alone(use_ledger: str) -> None:
    a, b, c = workflows.chain(("demo.echo", {}), ("demo.echo", {}), ("demo.echo", {}))
    assert api.cancel_job(b) == "cancelled"
    assert (status(a), status(c)) == ("queued", "cancelled")
    run(use_ledger, a)
    assert status(c) == "cancelled"
    with pytest.raises(InvalidTransition):
        api.cancel_job(c)


def test_retrying_the_failed_parent_revives_and_completes_the_graph(use_ledger: str) -> None:
    good = api.submit_job("demo.echo", {})
    bad = api.submit_job("demo.echo", {}, max_attempts=1)
    callback = api.submit_job("demo.echo", {}, depends_on=[good, bad])
    email = api.submit_job("demo.echo", {}, depends_on=[callback])
    run(use_ledger, good, {"g": 1})
    run(use_ledger, bad, fail=True)
    assert (status(callback), status(email)) == ("cancelled", "cancelled")
    assert api.retry_job(bad) == 2
    assert (status(callback), status(email)) == ("waiting", "waiting")
    assert api.get_job(callback)["deps_pending"] == 1
    assert api.get_job(callback)["finished_at"] is None
    run(use_ledger, bad, {"b": 2})
    assert status(callback) == "queued"
    run(use_ledger, callback, {"c": 3})
    assert status(email) == "queued"
    run(use_ledger, email)
    assert workflows.dependency_results(callback) == {good: {"g": 1}, bad: {"b": 2}}


def test_an_admin_cancelled_dependent_is_not_revived(use_ledger: str) -> None:
    parent = api.submit_job("demo.echo", {}, max_attempts=1)
    child = api.submit_job("demo.echo", {}, depends_on=[parent])
    api.cancel_job(child)
    run(use_ledger, parent, fail=True)
    assert api.retry_job(parent) == 0
    assert status(child) == "cancelled"


def test_a_job_blocked_by_another_failed_parent_stays_cancelled(use_ledger: str) -> None:
    p1 = api.submit_job("demo.echo", {}, max_attempts=1)
    p2 = api.submit_job("demo.echo", {}, max_attempts=1)
    child = api.submit_job("demo.echo", {}, depends_on=[p1, p2], on_dependency_failure="cancel")
    run(use_ledger, p1, fail=True)
    run(use_ledger, p2, fail=True)
    assert api.retry_job(p1) == 0
    assert status(child) == "cancelled"
    assert api.retry_job(p2) == 1  # now nothing else blocks it
    assert (status(child), api.get_job(child)["deps_pending"]) == ("waiting", 2)


def test_dependencies_already_ended_at_submit(use_ledger: str) -> None:
    done = api.submit_job("demo.echo", {})
    run(use_ledger, done, {"x": 1})
    assert status(api.submit_job("demo.echo", {}, depends_on=[done])) == "queued"
    later = datetime.now(UTC) + timedelta(hours=1)
    assert status(api.schedule_job("demo.echo", {}, later, depends_on=[done])) == "scheduled"
    failed = api.submit_job("demo.echo", {}, max_attempts=1)
    run(use_ledger, failed, fail=True)
    doomed = api.submit_job("demo.echo", {}, depends_on=[done, failed])
    assert status(doomed) == "cancelled"
    assert api.get_job(doomed)["errors"][0]["dependency"] == str(failed)
    runs = api.submit_job("demo.echo", {}, depends_on=[failed], on_dependency_failure="run")
    assert status(runs) == "queued"
    assert api.retry_job(failed) == 1  # the job submitted cancelled waits for it now
    assert status(doomed) == "waiting"


def test_a_released_job_with_a_time_waits_for_it(use_ledger: str) -> None:
    parent = api.submit_job("demo.echo", {})
    later = datetime.now(UTC) + timedelta(hours=1)
    child = api.schedule_job("demo.echo", {}, later, depends_on=[parent])
    assert status(child) == "waiting"
    run(use_ledger, parent)
    assert status(child) == "scheduled"


def test_submit_jobs_names_earlier_items_by_index_and_existing_jobs_by_id(use_ledger: str) -> None:
    existing = api.submit_job("demo.echo", {})
    ids = api.submit_jobs(
        [
            {"type": "demo.echo", "data": {"i": 0}},
            {"type": "demo.echo", "data": {"i": 1}, "depends_on": [0, str(existing)]},
            {"type": "demo.echo", "data": {"i": 2}, "depends_on": [0, 1, 1]},
        ]
    )
    assert [status(j) for j in ids] == ["queued", "waiting", "waiting"]
    assert api.get_job(ids[2])["deps_pending"] == 2  # a repeated dependency counts once
    assert {d["id"] for d in api.get_job(ids[1])["depends_on"]} == {ids[0], existing}
    assert api.get_job(existing)["has_dependents"] is True


@pytest.mark.parametrize(
    ("items", "error", "words"),
    [
        ([{"type": "demo.echo", "data": {}, "depends_on": [0]}], InvalidDependency, "itself"),
        (
            [
                {"type": "demo.echo", "data": {}, "depends_on": [1]},
                {"type": "demo.echo", "data": {}},
            ],
            InvalidDependency,
            "a later item",
        ),
        ([{"type": "demo.echo", "data": {}, "depends_on": [-1]}], InvalidDependency, "no item"),
        ([{"type": "demo.echo", "data": {}, "depends_on": ["nope"]}], InvalidDependency, "job id"),
        ([{"type": "demo.echo", "data": {}, "depends_on": "0"}], InvalidDependency, "list"),
        ([{"type": "demo.echo", "data": {}, "depends_on": [True]}], InvalidDependency, "job id"),
        (
            [{"type": "demo.echo", "data": {}, "depends_on": [str(uuid.uuid4())]}],
            UnknownDependency,
            "unknown dependency",
        ),
        (
            [
                {"type": "demo.echo", "data": {}},
                {"type": "demo.echo", "data": {}, "depends_on": [0], "on_dependency_failure": "x"},
            ],
            InvalidArgument,
            "on_dependency_failure",
        ),
        (
            [
                {"type": "demo.echo", "data": {}, "idempotency_key": "k"},
                {"type": "demo.echo", "data": {}, "depends_on": [0]},
            ],
            InvalidArgument,
            "idempotency key",
        ),
    ],
)
def test_bad_dependencies_are_refused_and_write_nothing(
    use_ledger: str, items: list[dict[str, Any]], error: type[Exception], words: str
) -> None:
    before = api.submit_job("demo.echo", {})  # an unrelated job, untouched
    with pytest.raises(error) as info:
        api.submit_jobs(items)
    assert words in str(info.value)
    assert counts(use_ledger) == (1, 0)
    assert api.get_job(before)["has_dependents"] is False


def test_an_index_is_not_a_dependency_of_a_single_submit(use_ledger: str) -> None:
    with pytest.raises(InvalidDependency, match="index"):
        api.submit_job("demo.echo", {}, depends_on=[0])  # type: ignore[list-item]
    with pytest.raises(UnknownDependency):
        api.submit_job("demo.echo", {}, depends_on=[uuid.uuid4()])
    assert counts(use_ledger) == (0, 0)


def test_a_dependency_ending_after_the_lock_is_seen_by_the_new_edge(use_ledger: str) -> None:
    """The insert locks its dependency (``has_dependents``) before it reads its state: a
    dependency that ends after that must count the new edge when it ends."""
    parent = api.submit_job("demo.echo", {})
    with write(eng(use_ledger)) as conn:
        claimed = attempts.claim(conn, parent, None)
    new = api.build_job("demo.echo", {}, depends_on=(parent,))
    with transaction(eng(use_ledger)) as conn:
        producer.insert_graph(conn, [new])
    with write(eng(use_ledger)) as conn:
        assert attempts.complete(conn, parent, claimed.lease, None)
    assert status(new.id) == "queued"


def test_jobs_without_dependencies_are_untouched(use_ledger: str) -> None:
    plain = api.submit_job("demo.echo", {})
    job = api.get_job(plain)
    assert (job["depends_on"], job["dependents"], job["deps_pending"]) == ([], [], 0)
    assert job["has_dependents"] is False and job["on_dependency_failure"] is None
    run(use_ledger, plain)
    assert counts(use_ledger) == (1, 0)


def test_retention_keeps_a_job_a_live_job_depends_on_and_deletes_edges(use_ledger: str) -> None:
    from db.retention import prune_jobs
    from tests.integration.test_metrics_read_models import metric_row
    from tests.integration.test_metrics_rollup import job_row

    engine = eng(use_ledger)
    now = datetime.now(UTC)
    old = now - timedelta(days=2)
    flow = {"has_dependents": False, "on_dependency_failure": None, "deps_pending": 0}
    parent = job_row(**{**flow, "has_dependents": True}, status="cancelled", finished_at=old)
    child = job_row(
        **{**flow, "on_dependency_failure": "run", "deps_pending": 1},
        status="waiting",
        attempt=0,
        updated_at=old,
    )
    plain = job_row(**flow, status="cancelled", finished_at=old)
    with transaction(engine) as conn:
        conn.execute(Job.__table__.insert(), [parent, child, plain])
        conn.execute(
            JobDependency.__table__.insert(),
            [{"job_id": child["id"], "depends_on": parent["id"], "resolved": None}],
        )
        rolled = [metric_row("q1", t) for t in (old - timedelta(hours=1), now - timedelta(hours=1))]
        conn.execute(Metric.__table__.insert(), rolled)
    cutoffs = {"completed_before": now - timedelta(days=1), "failed_before": now}
    assert prune_jobs(engine, **cutoffs).deleted == 1  # the plain job only
    assert counts(use_ledger) == (2, 1)
    with write(engine) as conn:  # the dependent ends (long ago): the graph may go
        conn.execute(
            Job.__table__.update()
            .where(Job.__table__.c.id == child["id"])
            .values(status="cancelled", finished_at=old)
        )
    assert prune_jobs(engine, **cutoffs).deleted == 2
    assert counts(use_ledger) == (0, 0)


def test_waiting_jobs_are_not_queue_depth(use_ledger: str) -> None:
    from db.queries import current_depth

    parent = api.submit_job("demo.echo", {})
    for _ in range(3):
        api.submit_job("demo.echo", {}, depends_on=[parent])
    with read(eng(use_ledger)) as conn:
        assert current_depth(conn, datetime.now(UTC) + timedelta(seconds=5)) == {"default": 1}
    stats = api.get_queue_stats()["default"]
    assert (stats["counts"]["waiting"], stats["counts"]["queued"]) == (3, 1)
