"""The reconciler against real PostgreSQL and Redis: a job is requeued only when two passes in
a row find it dispatched with its message missing from Redis."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine

from db.engine import engine_for, write
from db.ledger import attempts, maintainer, producer
from db.queries import get_job
from db.settings import get_settings
from tasks.maintenance.reconciler import Reconciler, ReconcilerConfig
from tasks.transport.broker import encode_job_message, make_huey, storage_of


def _dispatch(engine: Engine, n: int) -> list[Any]:
    new = producer.NewJob(type="demo.echo", queue="default", priority=5, data={}, max_attempts=3)
    with write(engine) as conn:
        producer.insert_jobs(conn, [replace(new, id=uuid.uuid4()) for _ in range(n)])
        return maintainer.dispatch(conn, "default", n)


def test_a_message_is_lost_only_when_two_passes_miss_it(pg_redis: dict[str, str]) -> None:
    settings = get_settings()
    engine = engine_for(settings.ledger_url)
    storage = storage_of(make_huey(settings, ["default"]))
    reconciler = Reconciler(engine, storage, ReconcilerConfig(grace_seconds=-5))
    in_redis, popped, lost = _dispatch(engine, 3)
    storage.push("default", [(encode_job_message(in_redis.id, in_redis.lease), 5)])

    assert reconciler.run_once() == 0  # first pass: popped and lost are only suspects
    with write(engine) as conn:  # the worker that popped its message records the outcome
        done = attempts.Outcome(popped.id, popped.lease, {}, uuid.uuid4(), started_ago=0.01)
        assert attempts.complete_many(conn, [done]) == {popped.id}
    assert reconciler.run_once() == 1  # second pass: only the lost one goes back

    with write(engine) as conn:
        rows = {r.id: get_job(conn, r.id) for r in (in_redis, popped, lost)}
    assert rows[in_redis.id]["status"] == "dispatched"
    assert rows[popped.id]["status"] == "completed"
    assert (rows[lost.id]["status"], rows[lost.id]["attempt"]) == ("queued", 0)
    assert rows[lost.id]["lease"] == lost.lease  # not reused: the next dispatch takes a new one
