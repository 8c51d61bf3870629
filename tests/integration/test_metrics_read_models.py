"""The metrics read models on SQLite and PostgreSQL: documented keys, sensible values."""

from __future__ import annotations

import math
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from db.clock import db_clock
from db.engine import engine_for, read, transaction
from db.models import (
    HourlyMetric,
    HourlyTypeMetric,
    Job,
    Metric,
    PeriodicState,
    TypeMetric,
    Worker,
)
from metrics import hist
from metrics.queueing import erlang_c, servers_needed, wait_percentile
from metrics.read import capacity, errors, overview, periodic, series
from metrics.rollup import floor_minute, rollup, rollup_range
from tasks.registry import Schedule
from tests.integration.test_metrics_rollup import (
    M0,
    M2,
    NOW,
    T,
    job_row,
    load_scenario,
    worker_row,
)

SERIES_KEYS = {
    "bucket",
    "queue_name",
    "job_type",
    "job_count",
    "completed_count",
    "failed_count",
    "error_count",
    "retries",
    "throughput",
    "processing_mean_ms",
    "processing_p50",
    "processing_p95",
    "processing_p99",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "depth",
    "utilization",
    "worker_count",
    "error_rate",
}


def by_queue(rows: list[dict[str, Any]], queue: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["queue_name"] == queue]


# --- time series ---------------------------------------------------------------------------


def test_time_series_minutes_are_the_stored_rows(ledger_url: str) -> None:
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    rows = series.time_series(engine, start=T, end=T + timedelta(minutes=3))
    assert len(rows) == 6 and all(set(r) == SERIES_KEYS for r in rows)
    assert [r["bucket"] for r in rows] == sorted(r["bucket"] for r in rows)
    q1 = by_queue(rows, "q1")
    m0 = q1[0]
    assert m0["bucket"] == M0 and m0["job_type"] is None
    assert (m0["job_count"], m0["completed_count"], m0["failed_count"]) == (3, 2, 1)
    assert m0["throughput"] == pytest.approx(3 / 60)
    assert m0["processing_mean_ms"] == pytest.approx(32000 / 3)
    assert m0["processing_p95"] == pytest.approx(19700)
    assert m0["wait_p50"] == pytest.approx(3000)
    assert (m0["depth"], m0["worker_count"]) == (2, 2)
    assert m0["utilization"] == pytest.approx(42 / 360)
    assert m0["error_rate"] == pytest.approx(2 / (3 + 1))  # errors / (finished + retried)
    assert q1[2]["error_rate"] is None  # nothing ended in M2

    types = series.time_series(
        engine, start=T, end=T + timedelta(minutes=3), by="type", queue="q1", job_type="a"
    )
    assert [(r["bucket"], r["job_type"], r["job_count"]) for r in types] == [
        (M0, "a", 2),
        (M0 + timedelta(minutes=1), "a", 1),
        (M2, "a", 0),
    ]
    assert all(r["depth"] is None and r["utilization"] is None for r in types)
    assert all(r["worker_count"] is None for r in types)


def test_time_series_hours_and_days_resample_the_minutes(ledger_url: str) -> None:
    load_scenario(ledger_url)
    engine = engine_for(ledger_url)
    rollup(engine, now=NOW, minutes=3)
    for resolution, step in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
        start = T if resolution == "hour" else T.replace(hour=0)
        rows = series.time_series(
            engine, start=start, end=start + step, resolution=resolution, queue="q1"
        )
        assert len(rows) == 1, resolution
        b = rows[0]
        assert set(b) == SERIES_KEYS
        assert b["bucket"] == start
        assert (b["job_count"], b["completed_count"], b["failed_count"]) == (4, 3, 1)
        assert (b["error_count"], b["retries"]) == (3, 2)
        assert b["error_rate"] == pytest.approx(3 / 6)
        # rolled-up data ends at 12:03: the rate is over the covered part of the bucket
        covered = (T + timedelta(minutes=3) - start).total_seconds()
        assert b["throughput"] == pytest.approx(4 / covered)
        assert b["processing_mean_ms"] == pytest.approx((32000 + 30000) / 4)
        # percentiles from the merged histograms: within a bucket's 9.1 %
        assert b["processing_p50"] == pytest.approx((8000 + 21000) / 2, rel=0.1)
        assert b["wait_p50"] == pytest.approx(4000, rel=0.1)  # [1000, 2000, 4000, 10000, 30000]
        assert (b["depth"], b["worker_count"]) == (2, 2)
        assert b["utilization"] == pytest.approx((42 + 20 + 30) / (3 * 360))


def test_hour_buckets_use_the_hour_histograms(ledger_url: str) -> None:
    """Full hours read their hourly row's histogram; partial hours merge their minutes: both
    give the same percentiles."""
    engine = engine_for(ledger_url)
    rows = []
    for i in range(0, 3600, 20):  # a job finishing every 20 s, 100 ms .. 18 s
        start = T + timedelta(seconds=i)
        end = start + timedelta(milliseconds=100 * (1 + i // 20))
        rows.append(job_row(scheduled_at=start, started_at=start, finished_at=end))
    with transaction(engine) as conn:
        conn.execute(insert(Job), rows)
    rollup_range(engine, start=T, end=T + timedelta(hours=1), now=T + timedelta(hours=2))
    with read(engine) as conn:
        hour = conn.execute(
            select(HourlyMetric.processing_hist).where(HourlyMetric.hour == T)
        ).scalar_one()
    assert sum(hour["b"].values()) == 180
    full = series.time_series(engine, start=T, end=T + timedelta(hours=1), resolution="hour")[0]
    partial = series.time_series(  # ends 1 µs early: no hour histogram, minutes merged
        engine, start=T, end=T + timedelta(hours=1, microseconds=-1), resolution="hour"
    )[0]
    for key in ("processing_p50", "processing_p95", "processing_p99", "wait_p95"):
        assert full[key] == pytest.approx(partial[key]), key
    exact = [100.0 * (1 + k) for k in range(180)]
    assert full["processing_p95"] == pytest.approx(hist.percentile_cont(exact, 0.95), rel=0.1)
    assert full["job_count"] == 180


def _minute_counts(
    engine: Any, table: Any, start: datetime, end: datetime, key: tuple[str, ...]
) -> tuple[int, dict[int, int], dict[int, int]]:
    """Jobs and the processing and wait counts of the minute rows of ``key`` in [start, end),
    merged here: what any bucket of that span must show."""
    where = [table.c.timestamp >= start, table.c.timestamp < end, table.c.queue_name == key[0]]
    if len(key) == 2:
        where.append(table.c.job_type == key[1])
    jobs_n, processing, wait = 0, {}, {}  # type: ignore[var-annotated]
    with read(engine) as conn:
        rows = conn.execute(
            select(table.c.job_count, table.c.processing_hist, table.c.wait_hist).where(*where)
        )
        for count, p, w in rows:
            jobs_n += count
            hist.merge_into(processing, p)
            hist.merge_into(wait, w)
    return jobs_n, processing, wait


def test_hour_and_day_buckets_over_several_hours_equal_the_merged_minutes(
    ledger_url: str,
) -> None:
    """Ranges that start and end inside an hour: full hours read their hourly row (on
    PostgreSQL beside the sums per hour on a second connection), the partial hours at the
    edges their minutes; every bucket equals merging its minutes directly. Without the hourly
    rows (minutes merged for every hour) the buckets are the same."""
    engine = engine_for(ledger_url)
    rows = []
    for i in range(0, 4 * 3600, 30):
        for queue, job_type, scale in (("q1", "a", 1), ("q2", "b", 3)):
            due = T + timedelta(seconds=i)
            started = due + timedelta(milliseconds=scale * (10 + (i * 13) % 900))
            finished = started + timedelta(milliseconds=scale * 50 * (1 + (i * 7) % 40))
            rows.append(
                job_row(
                    type=job_type,
                    queue=queue,
                    scheduled_at=due,
                    started_at=started,
                    finished_at=finished,
                )
            )
    with transaction(engine) as conn:
        conn.execute(insert(Job), rows)
    rollup_range(engine, start=T, end=T + timedelta(hours=4), now=T + timedelta(hours=5))
    start, end = T + timedelta(minutes=25), T + timedelta(hours=3, minutes=40)
    tables = {"queue": Metric.__table__, "type": TypeMetric.__table__}
    read_back = {}
    for by in ("queue", "type"):
        for resolution, step in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
            buckets = series.time_series(engine, start=start, end=end, resolution=resolution, by=by)
            read_back[(by, resolution)] = buckets
            assert len(buckets) == (4 if resolution == "hour" else 1) * 2, (by, resolution)
            for b in buckets:
                key = (b["queue_name"],) if by == "queue" else (b["queue_name"], b["job_type"])
                span = (max(b["bucket"], start), min(b["bucket"] + step, end))
                jobs_n, processing, wait = _minute_counts(engine, tables[by], *span, key)
                assert b["job_count"] == jobs_n > 0
                for q in (0.5, 0.95, 0.99):
                    assert b[f"processing_p{round(q * 100)}"] == hist.quantile(processing, q)
                    assert b[f"wait_p{round(q * 100)}"] == hist.quantile(wait, q)
    with transaction(engine) as conn:
        for table in (HourlyMetric, HourlyTypeMetric):
            assert conn.execute(delete(table)).rowcount == 2 * 4  # 2 keys, 4 hours
    for (by, resolution), buckets in read_back.items():
        assert buckets == series.time_series(
            engine, start=start, end=end, resolution=resolution, by=by
        ), (by, resolution)


def test_time_series_rejects_bad_arguments(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    with pytest.raises(ValueError):
        series.time_series(engine, start=T, end=NOW, resolution="week")
    with pytest.raises(ValueError):
        series.time_series(engine, start=T, end=NOW, by="worker")
    with pytest.raises(ValueError):
        series.time_series(engine, start=T.replace(tzinfo=None), end=NOW)
    assert series.time_series(engine, start=T, end=NOW) == []


# --- error groups --------------------------------------------------------------------------


def raise_in_handler(message: str) -> str:
    try:
        parse_payload(message)
    except ValueError as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("unreachable")


def parse_payload(message: str) -> None:
    raise ValueError(message)


FRAMEWORK_TB = (
    "Traceback (most recent call last):\n"
    '  File "/app/.venv/lib/python3.11/site-packages/huey/api.py", line 10, in _execute\n'
    "    task.execute()\n"
    '  File "/app/tasks/worker.py", line 97, in run\n    result = job_type.func(data, ctx)\n'
    '  File "/app/jobs/reports.py", line {line}, in build_report\n    rows = fetch(course)\n'
    '  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads\n'
    "    return _default_decoder.decode(s)\n"
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
)


def entry(at: datetime, attempt: int, error: str, tb: str | None, kind: str = "error") -> dict:
    return {
        "at": at.isoformat(),
        "attempt": attempt,
        "error": error,
        "traceback": tb,
        "worker": None,
        "kind": kind,
    }


def test_error_groups_by_fingerprint(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    now = datetime.now(UTC)
    since = now - timedelta(hours=1)
    json_error = "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    a1 = entry(now - timedelta(minutes=30), 1, json_error, FRAMEWORK_TB.format(line=41))
    a2 = entry(now - timedelta(minutes=20), 2, json_error, FRAMEWORK_TB.format(line=45))
    b = entry(now - timedelta(minutes=10), 1, "ValueError: bad 7", raise_in_handler("bad 7"))
    rescued = entry(now - timedelta(minutes=5), 1, "Rescued: worker lost", None, "rescued")
    old = entry(now - timedelta(hours=3), 1, json_error, FRAMEWORK_TB.format(line=41))
    f1, f2, f3, f4, f6, r1, c1, f5 = (uuid.uuid4() for _ in range(8))
    finished = now - timedelta(minutes=1)

    def failed(job_id: uuid.UUID, errors: list[dict], at: datetime = finished, **kw: Any) -> dict:
        return job_row(
            id=job_id,
            status="failed",
            errors=errors,
            started_at=at,
            finished_at=at,
            scheduled_at=at,
            **kw,
        )

    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [
                failed(f1, [a1, a2], type="reports.build"),  # two attempts, same place
                failed(f2, [a2]),  # another line of the same function: same group
                failed(f3, [b]),
                failed(f4, [rescued], queue="q2"),
                failed(f6, [old, b]),  # only its recent entry counts; its last error is B
                job_row(id=r1, status="retrying", errors=[a1], updated_at=now),  # in flight
                job_row(id=c1, errors=[a1], started_at=finished, finished_at=finished),
                failed(f5, [old], at=now - timedelta(hours=2)),  # failed before `since`
            ],
        )
    groups = errors.error_groups(engine, since=since)
    assert [g["count"] for g in groups] == [4, 2, 1]
    keys = {
        "fingerprint",
        "exception_type",
        "location",
        "message_sample",
        "count",
        "first_seen",
        "last_seen",
        "example_job_id",
        "job_ids",
    }
    assert all(set(g) == keys for g in groups)
    json_group, value_group, rescued_group = groups
    assert json_group["exception_type"] == "json.decoder.JSONDecodeError"
    assert json_group["location"].startswith("/app/jobs/reports.py:")
    assert json_group["location"].endswith(" in build_report")
    assert sorted(json_group["job_ids"]) == sorted([f1, f2])  # failed ones only, not r1
    assert json_group["first_seen"] == datetime.fromisoformat(a1["at"])
    assert json_group["last_seen"] == datetime.fromisoformat(a2["at"])
    assert json_group["message_sample"] == json_error
    assert value_group["exception_type"] == "ValueError"
    assert value_group["location"].endswith(" in parse_payload")  # the top handler frame
    assert "test_metrics_read_models.py" in value_group["location"]
    assert sorted(value_group["job_ids"]) == sorted([f3, f6])
    assert rescued_group["exception_type"] == "Rescued"
    assert rescued_group["job_ids"] == [f4]

    assert [g["count"] for g in errors.error_groups(engine, since=since, queue="q2")] == [1]
    only_type = errors.error_groups(engine, since=since, job_type="reports.build")
    assert [(g["count"], g["job_ids"]) for g in only_type] == [(2, [f1])]
    assert len(errors.error_groups(engine, since=since, limit=1)) == 1


def test_fingerprint_ignores_line_numbers_and_messages() -> None:
    one = errors.fingerprint(entry(T, 1, "x: 1", FRAMEWORK_TB.format(line=41)))
    two = errors.fingerprint(entry(T, 1, "x: 2", FRAMEWORK_TB.format(line=99)))
    assert one.fingerprint == two.fingerprint and one.location != two.location
    plain = errors.fingerprint(entry(T, 1, "KeyError: 'x'", None))
    assert (plain.exception_type, plain.location) == ("KeyError", None)


# --- capacity, success criteria, KPIs ------------------------------------------------------------


def metric_row(queue: str, ts: datetime, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "queue_name": queue,
        "timestamp": ts,
        "created_at": ts,
        "job_count": 0,
        "completed_count": 0,
        "failed_count": 0,
        "worker_count": 1,
        "worker_slots": 4,
        "processing_time": None,
        "error_count": 0,
        "retries": 0,
        "throughput": 0.0,
        "processing_p50": None,
        "processing_p95": None,
        "processing_p99": None,
        "wait_p50": None,
        "wait_p95": None,
        "wait_p99": None,
        "depth": 0,
        "utilization": None,
        "busy_seconds": 0.0,
        "processing_hist": None,
        "wait_hist": None,
    }
    row.update(kw)
    return row


def minutes_around_now(engine: Any, back: int, ahead: int = 3) -> list[datetime]:
    """Minute starts from ``back`` minutes ago to a few ahead (a test crossing a minute
    boundary still finds full windows)."""
    with read(engine) as conn:
        current = floor_minute(db_clock(conn))
    return [current + timedelta(minutes=k) for k in range(-back, ahead)]


def test_capacity_is_erlang_c_over_the_rollups(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    minutes = minutes_around_now(engine, 120)
    with transaction(engine) as conn:
        conn.execute(
            insert(Metric),
            [
                metric_row(
                    "cap", m, job_count=600, completed_count=600, processing_time=200.0
                )  # 10 jobs/s of 0.2 s
                for m in minutes
            ],
        )
        live = datetime.now(UTC)
        conn.execute(
            insert(Worker),
            [worker_row(queues=["cap"], concurrency=4, last_heartbeat=live, started_at=live)],
        )
    out = capacity.capacity(engine, queue="cap", window_minutes=60)
    assert set(out) == {
        "queue",
        "arrival_rate",
        "mean_service_seconds",
        "live_slots",
        "utilization",
        "p95_wait_seconds",
        "workers_needed",
        "load_factor",
    }
    assert out["arrival_rate"] == pytest.approx(10.0)
    assert out["mean_service_seconds"] == pytest.approx(0.2)
    assert out["live_slots"] == 4
    assert out["utilization"] == pytest.approx(0.5)  # 2 erlangs on 4 slots
    assert out["p95_wait_seconds"] == pytest.approx(wait_percentile(4, 10.0, 5.0, 0.95))
    assert out["workers_needed"] == servers_needed(10.0, 5.0, 0.95, 5.0) == 3

    tripled = capacity.capacity(engine, queue="cap", load_factor=3.0)
    assert tripled["utilization"] == pytest.approx(1.5)
    assert tripled["p95_wait_seconds"] is None  # 6 erlangs on 4 slots: unstable
    assert tripled["workers_needed"] == servers_needed(30.0, 5.0, 0.95, 5.0)
    assert tripled["workers_needed"] >= 7

    strict = capacity.capacity(engine, queue="cap", target_p95_wait_seconds=0.01)
    assert strict["workers_needed"] > out["workers_needed"]
    empty = capacity.capacity(engine, queue="nothing")
    assert (empty["arrival_rate"], empty["workers_needed"], empty["utilization"]) == (0.0, 0, None)


def test_success_criteria_against_thresholds(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    assert [r["ok"] for r in overview.success_criteria(engine)] == [None] * 5
    fast = hist.from_values([100.0] * 10)
    slow = hist.from_values([40_000.0] * 10)
    with transaction(engine) as conn:
        conn.execute(
            insert(Metric),
            [
                metric_row(
                    "q",
                    m,
                    job_count=1000,
                    completed_count=999,
                    failed_count=1,
                    error_count=5,
                    retries=4,
                    worker_slots=1,
                    busy_seconds=54.0,
                    processing_time=40_000.0,
                    wait_hist=fast,
                    processing_hist=slow,
                )
                for m in minutes_around_now(engine, 90)
            ],
        )
    rows = {r["key"]: r for r in overview.success_criteria(engine, window_minutes=60)}
    # the mission's five targets, in the mission's order
    assert list(rows) == [
        "p95_processing",
        "p95_wait",
        "utilization",
        "error_rate",
        "completion_rate",
    ]
    for r in rows.values():
        assert set(r) == {"key", "label", "value", "unit", "threshold", "comparison", "ok"}
    assert rows["completion_rate"]["value"] == pytest.approx(99.9)
    assert rows["completion_rate"]["ok"] is False  # 99.9 % is not above 99.9 %
    assert (rows["completion_rate"]["comparison"], rows["completion_rate"]["unit"]) == (">", "%")
    assert rows["error_rate"]["value"] == pytest.approx(100 * 5 / 1004)
    assert rows["error_rate"]["ok"] is False  # 0.5 % is not under 0.1 %
    assert rows["p95_wait"]["value"] == pytest.approx(100, rel=0.1)  # on the 100 ms line
    assert rows["p95_processing"]["value"] == pytest.approx(40_000, rel=0.1)
    assert rows["p95_processing"]["ok"] is False  # 40 s is not under 1 s
    assert rows["utilization"]["value"] == pytest.approx(90.0)
    assert rows["utilization"]["ok"] is True  # 90 % is above 80 %


def test_overview_kpis(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    now = datetime.now(UTC)
    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [
                job_row(status="queued", scheduled_at=now - timedelta(seconds=5)),
                job_row(status="dispatched", scheduled_at=now - timedelta(seconds=5)),
                job_row(status="retrying", scheduled_at=now - timedelta(seconds=1)),
                job_row(status="scheduled", scheduled_at=now + timedelta(hours=1)),
                job_row(status="running", started_at=now),
                job_row(status="running", started_at=now),
            ],
        )
        conn.execute(
            insert(Worker),
            [
                worker_row(last_heartbeat=now, started_at=now),
                worker_row(last_heartbeat=now - timedelta(minutes=5), started_at=now),
            ],
        )
        conn.execute(
            insert(Metric),
            [
                metric_row(
                    "q",
                    m,
                    job_count=60,
                    completed_count=59,
                    failed_count=1,
                    error_count=2,
                    retries=1,
                    wait_hist=hist.from_values([250.0] * 20),
                )
                for m in minutes_around_now(engine, 120)
            ],
        )
    kpis = overview.overview_kpis(engine)
    assert set(kpis) == {
        "waiting",
        "running",
        "failed_last_hour",
        "throughput_per_s",
        "p95_wait_ms",
        "error_rate",
        "live_workers",
    }
    assert (kpis["waiting"], kpis["running"], kpis["live_workers"]) == (3, 2, 1)
    assert kpis["failed_last_hour"] == 60
    assert kpis["throughput_per_s"] == pytest.approx(1.0)
    assert kpis["p95_wait_ms"] == pytest.approx(250, rel=0.1)
    assert kpis["error_rate"] == pytest.approx(2 / 61)


# --- periodic health -------------------------------------------------------------------------


def tick_row(name: str, tick: datetime, status: str = "completed") -> dict[str, Any]:
    finished = tick + timedelta(seconds=1) if status in ("completed", "failed") else None
    return job_row(
        type=name,
        status=status,
        tick_key=f"{name}@{tick.isoformat()}",
        scheduled_at=tick,
        created_at=tick,
        started_at=tick if finished else None,
        finished_at=finished,
    )


def test_periodic_health(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    now = T + timedelta(minutes=10, seconds=30)  # 12:10:30
    minutely = [T + timedelta(minutes=k) for k in range(8) if k != 3]  # 12:00..12:07, no 12:03
    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [tick_row("p.minutely", t) for t in minutely]
            + [tick_row("p.five", T), tick_row("p.five", T + timedelta(minutes=5))]
            + [tick_row("p.five", T + timedelta(minutes=10), "queued")]
            + [tick_row("p.stuck", T), tick_row("p.stuck", T + timedelta(minutes=5), "queued")]
            + [tick_row("p.old", T - timedelta(days=3))],
        )
    schedules = [
        ("p.minutely", Schedule(every=timedelta(minutes=1)), "default"),
        ("p.five", Schedule(cron="*/5 * * * *"), "default"),
        ("p.stuck", Schedule(cron="*/5 * * * *"), "system"),
        ("p.never", Schedule(cron="0 * * * *"), "default"),
        ("p.old", Schedule(every=timedelta(hours=6)), "default"),
    ]
    health = {h["name"]: h for h in periodic.periodic_health(engine, now=now, schedules=schedules)}
    assert all(
        set(h)
        == {
            "name",
            "schedule",
            "queue",
            "last_tick",
            "last_status",
            "last_finished_at",
            "next_tick",
            "missed_ticks",
            "late",
            "paused",
        }
        for h in health.values()
    )
    m = health["p.minutely"]
    assert m["last_tick"] == T + timedelta(minutes=7)
    assert m["last_status"] == "completed"
    assert m["last_finished_at"] == T + timedelta(minutes=7, seconds=1)
    assert m["next_tick"] == T + timedelta(minutes=11)
    assert m["schedule"] == "every 60 s"
    # due (older than 2 minutes): 12:00..12:08; missing 12:03 and 12:08
    assert (m["missed_ticks"], m["late"]) == (2, True)
    five = health["p.five"]
    assert (five["missed_ticks"], five["late"], five["last_status"]) == (0, False, "queued")
    assert five["queue"] == "default"
    stuck = health["p.stuck"]  # the 12:05 job is still waiting 5 minutes later
    assert (stuck["missed_ticks"], stuck["late"]) == (0, True)
    never = health["p.never"]
    assert (never["last_tick"], never["missed_ticks"], never["late"]) == (None, 0, False)
    old = health["p.old"]  # stopped 3 days ago: every tick of the last 24 h is missing
    assert old["last_tick"] == T - timedelta(days=3)
    assert (old["missed_ticks"], old["late"]) == (4, True)
    assert periodic.periodic_health(engine, now=now, schedules=[]) == []


def test_periodic_health_knows_paused_and_skipped_ticks(ledger_url: str) -> None:
    """A paused job is not late and the ticks due while paused are not missed; the tick the
    enqueuer skipped because the previous run was unfinished is not missed either."""
    engine = engine_for(ledger_url)
    now = T + timedelta(minutes=10, seconds=30)  # 12:10:30; due ticks 12:00..12:08
    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [tick_row("p.paused", T + timedelta(minutes=k)) for k in range(4)]  # to 12:03
            + [tick_row("p.skipping", T + timedelta(minutes=k)) for k in range(8)]  # to 12:07
            + [tick_row("p.dropped", T + timedelta(minutes=k)) for k in range(8)],
        )
        conn.execute(
            insert(PeriodicState).values(
                name="p.paused",
                paused=True,
                paused_at=T + timedelta(minutes=3, seconds=30),
                updated_at=T,
            )
        )
        conn.execute(  # 12:08 skipped: the 12:07 run was unfinished then
            insert(PeriodicState).values(
                name="p.skipping",
                paused=False,
                last_tick=T + timedelta(minutes=8),
                last_skipped_tick=T + timedelta(minutes=8),
                skipped_count=1,
                updated_at=T,
            )
        )
    every_minute = Schedule(every=timedelta(minutes=1))
    schedules = [
        (name, every_minute, "default") for name in ("p.paused", "p.skipping", "p.dropped")
    ]
    health = {h["name"]: h for h in periodic.periodic_health(engine, now=now, schedules=schedules)}
    paused = health["p.paused"]
    assert (paused["paused"], paused["late"], paused["missed_ticks"]) == (True, False, 0)
    skipping = health["p.skipping"]
    assert (skipping["paused"], skipping["late"], skipping["missed_ticks"]) == (False, False, 0)
    dropped = health["p.dropped"]  # the same rows without a recorded skip: 12:08 is missing
    assert (dropped["late"], dropped["missed_ticks"]) == (True, 1)


def test_erlang_helpers_are_exported() -> None:
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert math.isinf(wait_percentile(1, 2.0, 1.0, 0.95))
