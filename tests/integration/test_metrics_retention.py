"""Retention on SQLite and PostgreSQL: finished jobs are deleted in batches only once their
minutes are rolled up for good; old rollup rows are deleted; the system jobs drive both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from db.clock import db_clock
from db.engine import engine_for, read, transaction
from db.models import HourlyMetric, HourlyTypeMetric, Job, Metric, TypeMetric
from db.retention import prune_jobs, prune_metrics
from metrics.rollup import floor_hour, floor_minute, rollup, rollup_holes, rollup_range
from tasks.registry import JobContext
from tests.integration.test_metrics_read_models import metric_row
from tests.integration.test_metrics_rollup import job_row

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


def finished(at: datetime, status: str = "completed", started: bool = True) -> dict[str, Any]:
    return job_row(
        status=status,
        scheduled_at=at - timedelta(seconds=2),
        started_at=at - timedelta(seconds=1) if started else None,
        finished_at=at,
    )


def job_ids(url: str) -> set[uuid.UUID]:
    with read(engine_for(url)) as conn:
        return set(conn.execute(select(Job.id)).scalars())


def test_pruning_never_deletes_a_job_not_yet_rolled_up(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    two_days = NOW - timedelta(days=2)
    rolled = finished(two_days)  # its minute will be rolled up
    gap = finished(two_days + timedelta(minutes=10))  # its minute never is
    never_started = finished(two_days + timedelta(minutes=10), "cancelled", started=False)
    failed = finished(two_days, "failed")  # kept 7 days
    young = finished(NOW - timedelta(minutes=2))  # kept 24 h; the rollup's recent activity
    rows = [rolled, gap, never_started, failed, young]
    with transaction(engine) as conn:
        conn.execute(insert(Job), rows)
    cutoffs = {
        "completed_before": NOW - timedelta(hours=24),
        "failed_before": NOW - timedelta(days=7),
    }
    everything = {r["id"] for r in rows}

    # nothing rolled up yet: nothing is deleted
    result = prune_jobs(engine, **cutoffs)
    assert (result.deleted, result.cutoff) == (0, None)
    assert job_ids(ledger_url) == everything

    # the first minute rolled up, but still inside the recompute window of the newest
    # rolled-up minute: not final yet
    minute = floor_minute(two_days)
    rollup_range(engine, start=minute, end=minute + timedelta(minutes=1), now=NOW)
    assert prune_jobs(engine, **cutoffs).deleted == 0
    assert job_ids(ledger_url) == everything

    # the rollup runs on: only what is final and rolled up goes (never-started jobs have
    # nothing to roll up); the gap's job stays until its minute is rolled up
    rollup(engine, now=NOW)
    assert prune_jobs(engine, **cutoffs, batch_size=1).deleted == 2
    assert job_ids(ledger_url) == {gap["id"], failed["id"], young["id"]}

    # back-filling the gap (only minutes without rows) makes its job prunable
    assert rollup_holes(engine, start=two_days, end=NOW - timedelta(hours=1), now=NOW) > 100
    assert prune_jobs(engine, **cutoffs).deleted == 1
    assert job_ids(ledger_url) == {failed["id"], young["id"]}
    # ... and the failed job goes after its own, longer retention
    later = {**cutoffs, "failed_before": NOW - timedelta(days=1)}
    assert prune_jobs(engine, **later).deleted == 1
    assert job_ids(ledger_url) == {young["id"]}


def test_pruning_goes_in_batches(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    old = NOW - timedelta(days=2)
    rows = [finished(old + timedelta(seconds=i)) for i in range(25)]
    young = finished(NOW - timedelta(minutes=2))  # activity: the rollup writes rows
    with transaction(engine) as conn:
        conn.execute(insert(Job), [*rows, young])
    rollup_range(engine, start=old, end=old + timedelta(minutes=1), now=NOW)
    rollup(engine, now=NOW)
    cutoffs = {"completed_before": NOW - timedelta(days=1), "failed_before": NOW}
    assert prune_jobs(engine, **cutoffs, batch_size=10, max_batches=2).deleted == 20
    assert prune_jobs(engine, **cutoffs, batch_size=10).deleted == 5
    assert job_ids(ledger_url) == {young["id"]}


def test_prune_metrics_deletes_old_rows_of_every_rollup_table(ledger_url: str) -> None:
    engine = engine_for(ledger_url)
    old = [metric_row("q", NOW - timedelta(days=100, minutes=i)) for i in range(7)]
    new = [metric_row("q", NOW - timedelta(days=1, minutes=i)) for i in range(3)]
    types = [
        {k: v for k, v in {**r, "job_type": "t"}.items() if k in TypeMetric.__table__.columns}
        for r in old + new
    ]
    with transaction(engine) as conn:
        conn.execute(insert(Metric), old + new)
        conn.execute(insert(TypeMetric), types)
    # hourly rows go with the last minute (:59) of their hour
    before = NOW - timedelta(days=90)
    hours = [floor_hour(before) + k * timedelta(hours=1) for k in (-24, -1, 0, 24 * 89)]
    gone = [h for h in hours if h + timedelta(minutes=59) < before]
    assert len(gone) == 2
    with transaction(engine) as conn:
        for model, extra in ((HourlyMetric, {}), (HourlyTypeMetric, {"job_type": "t"})):
            conn.execute(
                insert(model),
                [{"queue_name": "q", **extra, "hour": h, "wait_hist": None} for h in hours],
            )
    assert prune_metrics(engine, before=before, batch_size=3) == 14 + 2 * len(gone)
    with read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(Metric)).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(TypeMetric)).scalar_one() == 3
        for model in (HourlyMetric, HourlyTypeMetric):
            kept = set(conn.execute(select(model.hour)).scalars())
            assert kept == set(hours) - set(gone), model


# --- the periodic system jobs --------------------------------------------------------------


@pytest.fixture
def system_jobs(use_ledger: str) -> Any:
    import tasks.jobs.system as module

    module.metrics_settings.cache_clear()
    yield module
    module.metrics_settings.cache_clear()


def ctx(name: str) -> JobContext:
    return JobContext(job_id=uuid.uuid4(), attempt=1, max_attempts=1, type=name, queue="system")


def test_system_jobs_are_registered(system_jobs: Any) -> None:
    from tasks import registry

    periodic = {t.name: t for t in registry.periodic_types()}
    assert {"system.metrics_rollup", "system.prune_jobs", "system.prune_metrics"} <= set(periodic)
    rollup_type = periodic["system.metrics_rollup"]
    assert rollup_type.queue == "system"
    assert rollup_type.schedule is not None
    assert rollup_type.schedule.every == timedelta(minutes=1)


def test_rollup_job_catches_up_on_minutes_never_rolled_up(
    system_jobs: Any, use_ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(use_ledger)
    with read(engine) as conn:
        now = db_clock(conn)
    history = [finished(now - timedelta(minutes=m)) for m in (50, 20, 2)]
    with transaction(engine) as conn:
        conn.execute(insert(Job), history)
    monkeypatch.setattr(system_jobs, "CATCH_UP_MINUTES", 25)

    first = system_jobs.metrics_rollup({}, ctx("system.metrics_rollup"))
    assert first["queue_rows"] >= 5
    assert first["back_filled_minutes"] == 25  # from the oldest finished job, one chunk
    covered = datetime.fromisoformat(first["covered_to"])
    assert covered == floor_minute(history[0]["finished_at"]) + timedelta(minutes=25)
    # the worker stores the result; the next run continues from it
    with transaction(engine) as conn:
        conn.execute(
            insert(Job),
            [
                job_row(
                    type="system.metrics_rollup",
                    finished_at=now - timedelta(hours=3),
                    result=first,
                )
            ],
        )
    second = system_jobs.metrics_rollup({}, ctx("system.metrics_rollup"))
    assert second["back_filled_minutes"] > 0
    assert second["covered_to"] == second["window_end"]  # caught up
    with read(engine) as conn:
        counted = conn.execute(select(func.sum(Metric.job_count))).scalar_one()
    assert counted == 3


def test_prune_jobs_read_their_settings(system_jobs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_RETENTION_COMPLETED_HOURS", "2")
    monkeypatch.setenv("QUEUE_METRICS_RETENTION_DAYS", "30")
    system_jobs.metrics_settings.cache_clear()
    settings = system_jobs.metrics_settings()
    assert settings.queue_retention_completed_hours == 2
    assert settings.queue_retention_failed_days == 7
    assert settings.queue_metrics_retention_days == 30
    assert settings.queue_metrics_recompute_minutes == 5
    out = system_jobs.prune_finished_jobs({}, ctx("system.prune_jobs"))
    assert out == {"deleted": 0, "rolled_up_before": None}
    out = system_jobs.prune_old_metrics({}, ctx("system.prune_metrics"))
    assert out["deleted"] == 0


def test_pruned_jobs_take_their_log_lines_along(ledger_url: str) -> None:
    from db import job_logs
    from db.job_logs import LogLine

    engine = engine_for(ledger_url)
    two_days = NOW - timedelta(days=2)
    old, young = finished(two_days), finished(NOW - timedelta(minutes=2))
    with transaction(engine) as conn:
        conn.execute(insert(Job), [old, young])
        job_logs.insert_lines(
            conn,
            [LogLine(j["id"], 1, two_days, "INFO", f"line of {j['id']}") for j in (old, young)],
        )
    minute = floor_minute(two_days)
    rollup_range(engine, start=minute, end=minute + timedelta(minutes=1), now=NOW)
    rollup(engine, now=NOW)
    cutoffs = {"completed_before": NOW - timedelta(hours=24), "failed_before": NOW}
    assert prune_jobs(engine, **cutoffs).deleted == 1
    with read(engine) as conn:
        assert job_logs.lines_of(conn, old["id"]) == []
        assert len(job_logs.lines_of(conn, young["id"])) == 1
