"""The rescuer (``tasks/maintenance/rescuer.py``) against a real ledger, one ``run_once()`` at
a time: the running attempts of a dead worker end ``retrying`` (attempts left), ``failed``
(none left) or ``cancelled`` (cancel requested); a live worker's attempts are left alone;
a second pass, or a second rescuer at the same moment, changes nothing more."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from db import workers as worker_sql
from db.engine import create_ledger_engine, engine_for, read, write
from db.ledger import admin
from db.models import Job, Worker
from db.queries import get_job
from db.types import db_now
from tasks.maintenance.rescuer import Rescuer, RescuerConfig
from tests.integration.test_ledger import run_to_running

STALE = 10.0
WORKER_LOST = "Rescued: worker lost: heartbeat stale or worker stopped"


def rescuer(url: str) -> Rescuer:
    return Rescuer(engine_for(url), RescuerConfig(stale_seconds=STALE, deadline_grace_seconds=10))


def worker(url: str, *, silent_for: float, status: str = "running") -> uuid.UUID:
    """A worker row whose last heartbeat was ``silent_for`` seconds ago (database clock)."""
    worker_id = uuid.uuid4()
    with write(engine_for(url)) as conn:
        worker_sql.register(
            conn,
            worker_id=worker_id,
            name=f"test:{worker_id.hex[:6]}",
            hostname="test",
            pid=1,
            queues=["default"],
            concurrency=1,
            worker_kind="thread",
        )
        conn.execute(
            update(Worker)
            .where(Worker.id == worker_id)
            .values(last_heartbeat=db_now(-silent_for), status=status)
        )
    return worker_id


def running(
    url: str, worker_id: uuid.UUID | None, *, started_ago: float | None = None, **kw: Any
) -> uuid.UUID:
    """A job whose attempt 1 runs under ``worker_id``, started ``started_ago`` seconds ago."""
    claimed = run_to_running(url, **kw)
    values: dict[str, Any] = {"worker_id": worker_id}
    if started_ago is not None:
        values["started_at"] = db_now(-started_ago)
    with write(engine_for(url)) as conn:
        conn.execute(update(Job).where(Job.id == claimed.id).values(**values))
    return claimed.id


def job(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with read(engine_for(url)) as conn:
        found = get_job(conn, job_id)
    assert found is not None
    return found


def rescued_entry(row: dict[str, Any]) -> tuple[Any, ...]:
    [entry] = row["errors"]
    return entry["kind"], entry["attempt"], entry["error"], entry["worker"]


def test_a_dead_workers_attempts_end_by_what_is_left_and_a_second_pass_changes_nothing(
    ledger_url: str,
) -> None:
    dead = worker(ledger_url, silent_for=60)
    retry = running(ledger_url, dead, max_attempts=3)
    last = running(ledger_url, dead, max_attempts=1)
    cancel = running(ledger_url, dead, max_attempts=3)
    with write(engine_for(ledger_url)) as conn:
        assert admin.cancel(conn, cancel) == "cancel_requested"

    assert rescuer(ledger_url).run_once() == 3

    rows = {name: job(ledger_url, i) for name, i in (("r", retry), ("l", last), ("c", cancel))}
    assert {name: row["status"] for name, row in rows.items()} == {
        "r": "retrying",
        "l": "failed",
        "c": "cancelled",
    }
    for row in rows.values():
        assert rescued_entry(row) == ("rescued", 1, WORKER_LOST, str(dead))
        assert row["last_error"] == WORKER_LOST
        assert row["attempt"] == 1
    # retrying: the next attempt waits for its backoff, under no worker
    assert rows["r"]["worker_id"] is None and rows["r"]["finished_at"] is None
    assert rows["r"]["scheduled_at"] > datetime.now(UTC)
    assert rows["l"]["finished_at"] is not None and rows["c"]["finished_at"] is not None

    assert rescuer(ledger_url).run_once() == 0
    assert {name: job(ledger_url, row["id"]) for name, row in rows.items()} == rows


def test_a_live_workers_attempts_are_left_alone(ledger_url: str) -> None:
    live = worker(ledger_url, silent_for=0)
    quiet = worker(ledger_url, silent_for=STALE / 2)  # late, but not stale yet
    dead = worker(ledger_url, silent_for=STALE * 2)
    mine = [running(ledger_url, live), running(ledger_url, quiet, max_attempts=1)]
    lost = running(ledger_url, dead)
    before = [job(ledger_url, i) for i in mine]

    assert rescuer(ledger_url).run_once() == 1  # the pass ran: it rescued the dead one only

    assert [job(ledger_url, i) for i in mine] == before
    assert job(ledger_url, lost)["status"] == "retrying"


def test_a_stopped_unknown_or_missing_worker_counts_as_dead(ledger_url: str) -> None:
    owners = [
        worker(ledger_url, silent_for=0, status="stopped"),  # fresh heartbeat, but stopped
        uuid.uuid4(),  # its row is gone
        None,
    ]
    jobs = [running(ledger_url, owner, max_attempts=1) for owner in owners]
    assert rescuer(ledger_url).run_once() == 3
    for job_id in jobs:
        row = job(ledger_url, job_id)
        assert (row["status"], rescued_entry(row)[2]) == ("failed", WORKER_LOST)


def test_an_attempt_past_its_timeout_is_rescued_from_a_live_worker(ledger_url: str) -> None:
    """The backstop for hung handlers: ``started_at`` older than the type's timeout plus
    the grace (here 10 s)."""
    live = worker(ledger_url, silent_for=0)
    hung = running(ledger_url, live, started_ago=30, timeout_seconds=1.0)  # 1 + 10 < 30
    slow = running(ledger_url, live, started_ago=30, timeout_seconds=60.0)  # 60 + 10 > 30
    before = job(ledger_url, slow)

    assert rescuer(ledger_url).run_once() == 1

    row = job(ledger_url, hung)
    assert row["status"] == "retrying"
    assert rescued_entry(row) == ("rescued", 1, "Rescued: attempt exceeded its timeout", str(live))
    assert job(ledger_url, slow) == before


def test_two_rescuers_at_once_rescue_each_attempt_once(ledger_url: str) -> None:
    """Any number of maintainers may run; the rescuer takes no lock, its writes are fenced."""
    dead = worker(ledger_url, silent_for=60)
    jobs = [running(ledger_url, dead, max_attempts=3) for _ in range(20)]
    other_engine = create_ledger_engine(ledger_url)
    rescuers = [rescuer(ledger_url), Rescuer(other_engine, rescuer(ledger_url).config)]
    together = threading.Barrier(2, timeout=10)

    def one_pass(r: Rescuer) -> int:
        together.wait()
        return r.run_once()

    try:
        with ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(one_pass, rescuers))
    finally:
        other_engine.dispose()
    assert sum(counts) == 20, counts
    for job_id in jobs:
        row = job(ledger_url, job_id)
        assert row["status"] == "retrying"
        assert len(row["errors"]) == 1  # one rescue recorded, not two


def test_worker_rows_silent_for_an_hour_are_marked_stopped(ledger_url: str) -> None:
    gone = worker(ledger_url, silent_for=2 * 3600)
    recent = worker(ledger_url, silent_for=60)  # dead for the rescue, kept running as a row
    assert rescuer(ledger_url).run_once() == 0
    with read(engine_for(ledger_url)) as conn:
        rows = {r.id: r for r in conn.execute(select(Worker))}
    assert (rows[gone].status, rows[gone].stopped_at is not None) == ("stopped", True)
    assert (rows[recent].status, rows[recent].stopped_at) == ("running", None)


def test_the_look_for_long_silent_workers_runs_once_a_minute_not_every_pass(
    ledger_url: str,
) -> None:
    """The rescuer runs every second; an hour's threshold needs no such cadence (it was a
    write every pass, busy or idle)."""
    r = rescuer(ledger_url)
    r.run_once()  # the first pass looks
    gone = worker(ledger_url, silent_for=2 * 3600)
    r.run_once()  # within the minute: not yet
    with read(engine_for(ledger_url)) as conn:
        assert conn.execute(select(Worker.status).where(Worker.id == gone)).scalar() == "running"
    # a minute later it looks again (``forget_every`` made short to stand for that)
    later = Rescuer(r.engine, RescuerConfig(forget_every=0.0))
    later.run_once()
    later.run_once()
    with read(engine_for(ledger_url)) as conn:
        assert conn.execute(select(Worker.status).where(Worker.id == gone)).scalar() == "stopped"
