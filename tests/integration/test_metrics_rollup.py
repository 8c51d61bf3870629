"""The metrics rollup on SQLite and PostgreSQL: crafted jobs with known timestamps give the
hand-computed rows, reruns change nothing, late finishers land in their minute, and the SQL
and Python computations agree."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from db.engine import engine_for, read, transaction
from db.models import HourlyMetric, HourlyTypeMetric, Job, Metric, TypeMetric, Worker
from metrics import hist
from metrics.rollup import compute_postgresql, compute_python, rollup, rollup_range

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # minute M0; M1 = 12:01, M2 = 12:02
NOW = T + timedelta(minutes=3, seconds=30)  # rollup of the last 3 minutes: M0, M1, M2


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def job_row(**kw: Any) -> dict[str, Any]:
    """A queue_jobs row with every column present (explicit values win)."""
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "type": "a",
        "queue": "q1",
        "priority": 5,
        "status": "completed",
        "data": {},
        "scheduled_at": T,
        "started_at": None,
        "completed_at": None,
        "finished_at": None,
        "created_at": T - timedelta(minutes=5),
        "updated_at": None,
        "attempt": 1,
        "max_attempts": 3,
        "errors": [],
    }
    row.update(kw)
    if row["status"] == "completed" and row["completed_at"] is None:
        row["completed_at"] = row["finished_at"]
    if row["updated_at"] is None:
        row["updated_at"] = row["finished_at"] or row["started_at"] or row["scheduled_at"]
    return row


def err(seconds: float, attempt: int, kind: str = "error", message: str = "boom") -> dict[str, Any]:
    return {
        "at": at(seconds).isoformat(),
        "attempt": attempt,
        "error": f"RuntimeError: {message}",
        "traceback": None,
        "worker": None,
        "kind": kind,
    }


def scenario_jobs() -> list[dict[str, Any]]:
    """The crafted jobs; the expected numbers below are computed by hand from them."""
    return [
        # M0: two completed 'a', one failed 'b' (its second attempt)
        job_row(started_at=at(1), finished_at=at(4)),  # J1 proc 3000, wait 1000
        job_row(started_at=at(2), finished_at=at(10)),  # J2 proc 8000, wait 2000
        job_row(  # J3: retry due at 12:00:05, failed for good at 12:00:30
            type="b",
            status="failed",
            attempt=2,
            max_attempts=2,
            scheduled_at=at(5),
            started_at=at(9),
            finished_at=at(30),
            errors=[err(-10, 1), err(30, 2)],  # the first entry is before the window
        ),
        job_row(  # J4: failed attempt 1 at 12:00:35, retried, ran 12:00:50 .. 12:01:20
            attempt=2,
            scheduled_at=at(40),
            started_at=at(50),
            finished_at=at(80),
            errors=[err(35, 1), {**err(36, 1), "kind": "note"}],  # a non-error entry: ignored
        ),
        # M1: 'b' attempt 1 rescued at 12:01:05 and waiting for its retry (due 12:01:10)
        job_row(
            type="b",
            status="retrying",
            started_at=at(60),
            scheduled_at=at(70),
            errors=[err(65, 1, kind="rescued", message="worker lost")],
            updated_at=at(65),
        ),
        job_row(status="cancelled", finished_at=at(90), scheduled_at=at(85)),  # never started
        job_row(  # q2: one 500 ms job in M1, waited 500 ms
            queue="q2",
            type="c",
            scheduled_at=at(60),
            started_at=at(60.5),
            finished_at=at(61),
        ),
        # M2: 'a' running since 12:02:30 (due 12:02:00)
        job_row(status="running", scheduled_at=at(120), started_at=at(150)),
        # outside the window, or not started: no effect on the rollup
        job_row(started_at=at(-600), finished_at=at(-590)),
        job_row(status="queued", scheduled_at=at(120)),  # waiting: depth
        job_row(status="scheduled", scheduled_at=at(3600)),  # not due: not waiting
    ]


def worker_row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "w",
        "status": "running",
        "started_at": NOW - timedelta(hours=1),
        "last_heartbeat": NOW - timedelta(seconds=1),
        "stopped_at": None,
        "hostname": "h",
        "pid": 1,
        "queues": ["q1"],
        "concurrency": 4,
        "worker_kind": "thread",
        "jobs_processed": 0,
        "jobs_failed": 0,
    }
    row.update(kw)
    return row


def scenario_workers() -> list[dict[str, Any]]:
    return [
        worker_row(),  # q1: 4 slots
        worker_row(queues=["q1", "q2"], concurrency=2),  # both queues: 2 slots
        worker_row(status="stopped", concurrency=8),  # stopped: not live
        worker_row(last_heartbeat=NOW - timedelta(seconds=60), concurrency=16),  # stale
    ]


def load_scenario(url: str) -> None:
    with transaction(engine_for(url)) as conn:
        conn.execute(insert(Job), scenario_jobs())
        conn.execute(insert(Worker), scenario_workers())


def queue_rows(url: str) -> dict[tuple[str, datetime], dict[str, Any]]:
    with read(engine_for(url)) as conn:
        rows = conn.execute(select(Metric).order_by(Metric.queue_name, Metric.timestamp))
        return {(r.queue_name, r.timestamp): dict(r._mapping) for r in rows}


def type_rows(url: str) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    with read(engine_for(url)) as conn:
        rows = conn.execute(select(TypeMetric))
        return {(r.queue_name, r.job_type, r.timestamp): dict(r._mapping) for r in rows}


M0, M1, M2 = T, T + timedelta(minutes=1), T + timedelta(minutes=2)

#: hand-computed (see scenario_jobs); percentiles are percentile_cont (linear interpolation)
EXPECTED_QUEUE = {
    ("q1", M0): {
        "job_count": 3,
        "completed_count": 2,
        "failed_count": 1,
        "throughput": 3 / 60,
        "processing_time": (3000 + 8000 + 21000) / 3,
        "processing_p50": 8000.0,
        "processing_p95": 8000 + 0.9 * 13000,  # rank 1.9 of [3000, 8000, 21000]
        "processing_p99": 8000 + 0.98 * 13000,
        "wait_p50": 3000.0,  # [1000, 2000, 4000, 10000]: rank 1.5
        "wait_p95": 4000 + 0.85 * 6000,
        "wait_p99": 4000 + 0.97 * 6000,
        "error_count": 2,  # J3 attempt 2 (final) and J4 attempt 1 (retried)
        "retries": 1,
        "busy_seconds": 3 + 8 + 21 + 10,
        "depth": 2,  # queued job + the due retrying job, measured at rollup time
        "worker_count": 2,
        "worker_slots": 6,
        "utilization": 42 / 360,
    },
    ("q1", M1): {
        "job_count": 1,
        "completed_count": 1,
        "failed_count": 0,
        "processing_time": 30000.0,
        "processing_p50": 30000.0,
        "processing_p95": 30000.0,
        "processing_p99": 30000.0,
        "wait_p50": None,  # the retrying job's attempt lost its due time: not counted
        "error_count": 1,
        "retries": 1,
        "busy_seconds": 20.0,
        "utilization": 20 / 360,
    },
    ("q1", M2): {
        "job_count": 0,
        "processing_time": None,
        "processing_p50": None,
        "wait_p50": 30000.0,
        "wait_p99": 30000.0,
        "error_count": 0,
        "busy_seconds": 30.0,  # running job, counted up to the minute's end
        "depth": 2,
        "worker_count": 2,
        "worker_slots": 6,
        "utilization": 30 / 360,
    },
    ("q2", M0): {"job_count": 0, "busy_seconds": 0.0, "worker_count": 1, "worker_slots": 2},
    ("q2", M1): {
        "job_count": 1,
        "processing_time": 500.0,
        "processing_p95": 500.0,
        "wait_p50": 500.0,
        "busy_seconds": 0.5,
        "depth": 0,
        "worker_count": 1,
        "worker_slots": 2,
        "utilization": 0.5 / 120,
    },
    ("q2", M2): {"job_count": 0, "utilization": 0.0},
}

EXPECTED_TYPE = {
    ("q1", "a", M0): {
        "job_count": 2,
        "completed_count": 2,
        "failed_count": 0,
        "processing_time": 5500.0,
        "processing_p50": 5500.0,
        "processing_p95": 3000 + 0.95 * 5000,
        "processing_p99": 3000 + 0.99 * 5000,
        "wait_p50": 2000.0,  # [1000, 2000, 10000]
        "wait_p95": 2000 + 0.9 * 8000,
        "wait_p99": 2000 + 0.98 * 8000,
        "error_count": 1,
        "retries": 1,
        "busy_seconds": 21.0,
    },
    ("q1", "b", M0): {
        "job_count": 1,
        "failed_count": 1,
        "processing_time": 21000.0,
        "wait_p50": 4000.0,
        "error_count": 1,
        "retries": 0,
        "busy_seconds": 21.0,
    },
    ("q1", "a", M1): {"job_count": 1, "processing_p50": 30000.0, "busy_seconds": 20.0},
    ("q1", "b", M1): {"job_count": 0, "error_count": 1, "retries": 1, "busy_seconds": 0.0},
    ("q1", "a", M2): {"job_count": 0, "wait_p50": 30000.0, "busy_seconds": 30.0},
    ("q2", "c", M1): {"job_count": 1, "processing_p50": 500.0, "wait_p99": 500.0},
}


def assert_matches(actual: dict[str, Any], expected: dict[str, Any], where: object) -> None:
    for column, want in expected.items():
        got = actual[column]
        if want is None or (isinstance(want, int) and not isinstance(want, bool)):
            assert got == want, f"{where} {column}: {got!r} != {want!r}"
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{where} {column}"


def test_rollup_matches_hand_computed_values(ledger_url: str) -> None:
    load_scenario(ledger_url)
    result = rollup(engine_for(ledger_url), now=NOW, minutes=3)
    assert (result.window_start, result.window_end) == (M0, M2 + timedelta(minutes=1))
    assert not result.skipped

    rows = queue_rows(ledger_url)
    assert set(rows) == set(EXPECTED_QUEUE)  # one row per queue per minute, idle ones too
    for key, expected in EXPECTED_QUEUE.items():
        assert_matches(rows[key], expected, key)
        assert rows[key]["created_at"] == NOW
    types = type_rows(ledger_url)
    assert set(types) == set(EXPECTED_TYPE)
    for key, expected in EXPECTED_TYPE.items():
        assert_matches(types[key], expected, key)

    # the histograms hold the same populations, within 5 % of each value
    m0 = rows[("q1", M0)]
    assert sum(hist.counts_of(m0["processing_hist"]).values()) == 3
    assert sum(hist.counts_of(m0["wait_hist"]).values()) == 4
    assert hist.quantile(hist.counts_of(m0["processing_hist"]), 0.5) == pytest.approx(
        8000, rel=0.05
    )
    assert rows[("q1", M2)]["processing_hist"] is None


def test_rerunning_changes_nothing(ledger_url: str) -> None:
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    first, first_types = queue_rows(ledger_url), type_rows(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    rollup(engine, now=NOW + timedelta(seconds=5), minutes=3)  # same minutes, same state
    assert queue_rows(ledger_url) == first
    assert type_rows(ledger_url) == first_types


def test_late_finisher_updates_its_minute_and_old_state_is_kept(ledger_url: str) -> None:
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    # a job whose finish (in M1) commits after that run, and more waiting jobs
    late = job_row(type="b", started_at=at(61), finished_at=at(119))
    with transaction(engine) as conn:
        conn.execute(insert(Job), [late, job_row(status="queued", scheduled_at=at(170))])
    later = NOW + timedelta(minutes=1)
    rollup(engine, now=later, minutes=4)  # M0..M3
    rows = queue_rows(ledger_url)
    m1 = rows[("q1", M1)]
    assert (m1["job_count"], m1["completed_count"]) == (2, 2)
    assert m1["processing_p50"] == pytest.approx((30000 + 58000) / 2)
    assert m1["busy_seconds"] == pytest.approx(20 + 58)
    assert type_rows(ledger_url)[("q1", "b", M1)]["job_count"] == 1
    # depth and workers are state at rollup time: old minutes keep theirs, the last gets new
    assert rows[("q1", M1)]["depth"] == 2
    assert rows[("q1", M2)]["depth"] == 2
    assert rows[("q1", M2 + timedelta(minutes=1))]["depth"] == 3


def test_admin_retry_moves_a_failure_out_of_its_minute(ledger_url: str) -> None:
    """Recomputation reflects the ledger: a failed job retried by an admin (finished_at
    cleared) no longer counts as a failure of its minute."""
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    with transaction(engine) as conn:
        conn.execute(
            update(Job)
            .where(Job.status == "failed")
            .values(status="queued", finished_at=None, max_attempts=3)
        )
    rollup(engine, now=NOW, minutes=3)
    m0 = queue_rows(ledger_url)[("q1", M0)]
    assert (m0["job_count"], m0["failed_count"], m0["error_count"], m0["retries"]) == (2, 0, 2, 2)


def test_backfill_of_a_range(ledger_url: str) -> None:
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    result = rollup_range(engine, start=M0, end=M1, now=NOW + timedelta(days=1))
    assert (result.window_start, result.window_end) == (M0, M1)
    rows = queue_rows(ledger_url)
    assert set(rows) == {("q1", M0)}  # workers are not live a day later, q2 had nothing
    assert rows[("q1", M0)]["job_count"] == 3
    assert rows[("q1", M0)]["depth"] == 0  # state of a long-past minute is unknown


# --- SQL and Python agree (PostgreSQL only: it runs both) ------------------------------------


def random_jobs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        status = rng.choice(["completed"] * 6 + ["failed", "running", "retrying", "cancelled"])
        due = at(rng.uniform(-120, 300))
        start = due + timedelta(milliseconds=rng.expovariate(1 / 800))
        end = start + timedelta(milliseconds=rng.lognormvariate(6, 1.5))
        attempt = rng.randint(1, 3)
        errors = [
            err(
                (start - T).total_seconds() - rng.uniform(0, 30),
                a,
                rng.choice(["error", "rescued"]),
            )
            for a in range(1, attempt + (status in ("failed", "retrying")))
        ]
        finished = end if status in ("completed", "failed", "cancelled") else None
        out.append(
            job_row(
                queue=rng.choice(["q1", "q2", "q3"]),
                type=rng.choice(["a", "b", "c", "d"]),
                status=status,
                attempt=attempt,
                scheduled_at=due,
                started_at=start,
                finished_at=finished,
                updated_at=finished or end,
                errors=errors,
            )
        )
    return out


def test_sql_and_python_give_the_same_numbers(pg_url: str) -> None:
    from tests.conftest import empty_tables

    engine = engine_for(pg_url)
    empty_tables(engine)
    with transaction(engine) as conn:
        conn.execute(insert(Job), random_jobs(random.Random(7), 3000))
    ws, we, now = T - timedelta(minutes=2), T + timedelta(minutes=6), T + timedelta(minutes=6)
    with read(engine) as conn:
        by_sql = compute_postgresql(conn, ws, we, now)
        by_python = compute_python(conn, ws, we, now)
    assert set(by_sql) == set(by_python)
    assert sum(a.job_count for k, a in by_sql.items() if k[1] is None) > 500
    for key, py in by_python.items():
        sql = by_sql[key]
        for name in ("job_count", "completed_count", "failed_count", "error_count", "retries"):
            assert getattr(sql, name) == getattr(py, name), (key, name)
        assert sql.processing_hist == py.processing_hist, key
        assert sql.wait_hist == py.wait_hist, key
        assert sql.busy_seconds == pytest.approx(py.busy_seconds, rel=1e-9, abs=1e-6)
        pairs = [(sql.processing_time, py.processing_time)]
        pairs += list(zip(sql.processing, py.processing, strict=True))
        pairs += list(zip(sql.wait, py.wait, strict=True))
        for s, p in pairs:
            assert (s is None) == (p is None), key
            if s is not None:
                assert s == pytest.approx(p, rel=1e-9), key


def hourly_rows(url: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """The hourly rows of both tables, keyed (queue, hour) and (queue, type, hour)."""
    with read(engine_for(url)) as conn:
        out: dict[tuple[str, ...], dict[str, Any]] = {}
        for r in conn.execute(select(HourlyMetric.__table__)):
            out[(r.queue_name, r.hour)] = dict(r._mapping)
        for r in conn.execute(select(HourlyTypeMetric.__table__)):
            out[(r.queue_name, r.job_type, r.hour)] = dict(r._mapping)
        return out


def test_the_hourly_rows_hold_the_merged_hour(ledger_url: str) -> None:
    """``queue_metrics_hourly`` / ``queue_type_metrics_hourly`` hold the merged histograms of
    each hour's minute rows (hours and days read one histogram per hour), the hour in
    progress included; kept right by every run touching the hour and by back-fills. Minute
    rows keep only their own histogram, and no row is invented to carry the hour."""
    engine = engine_for(ledger_url)

    def done(queue: str, finish: float, ms: float) -> dict[str, Any]:
        start = at(finish) - timedelta(milliseconds=ms)
        return job_row(queue=queue, scheduled_at=start, started_at=start, finished_at=at(finish))

    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [
                done("q1", 600, 1000),  # 12:10
                done("q3", 605, 1000),  # 12:10, a queue that is idle afterwards
                done("q1", 1800, 2000),  # 12:30
                done("q1", 3570, 4000),  # 12:59:30
                done("q1", 3630, 8000),  # 13:00:30
            ],
        )
    rollup_range(engine, start=T, end=at(2400), now=at(2405))  # 12:00 .. 12:40
    rollup(engine, now=at(3690), minutes=5)  # 12:56 .. 13:01, covers 12:59

    def counts(values: list[float]) -> dict[str, Any]:
        merged = hist.from_values(values)
        assert merged is not None
        return merged

    hours = hourly_rows(ledger_url)
    assert hours[("q1", T)]["processing_hist"] == counts([1000, 2000, 4000])
    assert hours[("q1", T)]["wait_hist"] == counts([0, 0, 0])
    assert hours[("q1", "a", T)]["processing_hist"] == counts([1000, 2000, 4000])
    assert hours[("q1", at(3600))]["processing_hist"] == counts([8000])  # 13:00, in progress
    assert hours[("q3", T)]["processing_hist"] == counts([1000])
    assert hours[("q3", "a", T)]["processing_hist"] == counts([1000])
    rows = queue_rows(ledger_url)
    assert rows[("q1", at(3540))]["processing_hist"] == counts([4000])  # 12:59: its own minute
    assert ("q3", at(3540)) not in rows  # an idle queue gets no row to carry its hour
    assert ("q3", "a", at(3540)) not in type_rows(ledger_url)

    # a back-fill of an earlier minute of the hour updates the hourly row
    with transaction(engine) as conn:
        conn.execute(insert(Job), [done("q1", 1200, 16000)])  # 12:20
    rollup_range(engine, start=at(1200), end=at(1260), now=at(3700))
    hours = hourly_rows(ledger_url)
    assert hours[("q1", T)]["processing_hist"] == counts([1000, 2000, 4000, 16000])
    assert hours[("q1", "a", T)]["processing_hist"] == counts([1000, 2000, 4000, 16000])
    assert queue_rows(ledger_url)[("q1", at(3540))]["processing_hist"] == counts([4000])

    # running again changes nothing; an hour whose minutes lose their values loses its row
    rollup(engine, now=at(3690), minutes=5)
    assert hourly_rows(ledger_url) == hours
    with transaction(engine) as conn:
        conn.execute(update(Job).where(Job.queue == "q3").values(queue="q4"))
    rollup_range(engine, start=T, end=at(2400), now=at(3700))
    hours = hourly_rows(ledger_url)
    assert ("q3", T) not in hours and ("q3", "a", T) not in hours
    assert hours[("q4", T)]["processing_hist"] == counts([1000])
