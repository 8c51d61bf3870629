"""`alembic upgrade head` on an empty database equals the models."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select, text

from db.engine import create_ledger_engine, engine_for
from db.migrate import alembic_config, upgrade
from db.models import Base, HourlyMetric, HourlyTypeMetric, Metric, TypeMetric
from metrics import hist
from metrics.read import series
from tests import services


def test_upgrade_head_matches_models_on_postgresql(pg_url: str) -> None:
    engine = engine_for(pg_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_notify_trigger_installed(pg_url: str) -> None:
    with engine_for(pg_url).connect() as conn:
        triggers = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'queue_jobs'::regclass")
        ).scalars()
        assert "queue_jobs_notify_insert" in set(triggers)


def test_upgrade_creates_the_tables_on_sqlite(sqlite_url: str) -> None:
    tables = set(inspect(engine_for(sqlite_url)).get_table_names())
    assert {
        "queue_jobs",
        "queue_workers",
        "queue_metrics",
        "queue_type_metrics",
        "queue_controls",
        "users",
        "audit_log",
        "alembic_version",
    } <= tables


# --- 0016: the hour histograms move out of the :59 minute rows --------------------------------

H = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _hist(values: list[float], hour: list[float] | None = None) -> dict[str, Any] | None:
    """A minute histogram in the format before 0016: its hour's counts under ``"h"``."""
    out = {"g": hist.GAMMA, "b": (hist.from_values(values) or {"b": {}})["b"]}
    if hour:
        merged = hist.from_values(hour)
        assert merged is not None
        out["h"] = merged["b"]
    elif not values:
        return None
    return out


def _minute(queue: str, minutes: int, jobs: int, p: Any, w: Any, **extra: Any) -> dict[str, Any]:
    row = {
        "queue_name": queue,
        "timestamp": H + timedelta(minutes=minutes),
        "created_at": H + timedelta(minutes=minutes + 1),
        "job_count": jobs,
        "completed_count": jobs,
        "failed_count": 0,
        "error_count": 0,
        "retries": 0,
        "processing_time": 1000.0 if jobs else None,
        "busy_seconds": float(jobs),
        "processing_hist": p,
        "wait_hist": w,
        **extra,
    }
    if "job_type" not in extra:
        row.update(throughput=jobs / 60, depth=0, worker_count=0, worker_slots=0)
    return row


def _old_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the rollup wrote before 0016: q1 busy in 12:10, 12:30 and 12:59 (its :59 row
    carries the hour); q3 busy at 12:10 only, so an invented zero row at 12:59 carries its
    hour, for the queue and for the type; 13:00 is an hour in progress (no "h" yet)."""
    q1_hour, q3_hour = [1000.0, 2000.0, 4000.0], [1000.0]
    queues = [
        _minute("q1", 10, 1, _hist([1000]), _hist([0])),
        _minute("q1", 30, 1, _hist([2000]), _hist([0])),
        _minute("q1", 59, 1, _hist([4000], q1_hour), _hist([0], [0, 0, 0])),
        _minute("q1", 60, 1, _hist([8000]), _hist([0])),
        _minute("q3", 10, 1, _hist([1000]), _hist([0])),
        _minute("q3", 59, 0, _hist([], q3_hour), _hist([], [0])),
    ]
    types = [
        {k: v for k, v in {**r, "job_type": "a"}.items() if k in TypeMetric.__table__.columns}
        for r in queues
    ]
    return queues, types


def _downgrade(engine: Any, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _by_key(engine: Any, model: Any, time_column: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    table = model.__table__
    keys = [c for c in ("queue_name", "job_type") if c in table.c]
    with engine.connect() as conn:
        return {
            (*(r._mapping[k] for k in keys), r._mapping[time_column]): dict(r._mapping)
            for r in conn.execute(select(table))
        }


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0015(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger migrated to 0015, on each database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = services.create_database()
    engine = create_ledger_engine(url)
    upgrade(engine, "0015")
    engine.dispose()
    yield url
    if request.param == "postgresql":
        services.drop_database(url)


def test_0016_moves_the_hour_histograms_into_the_hourly_tables(url_at_0015: str) -> None:
    engine = create_ledger_engine(url_at_0015)
    queues, types = _old_rows()
    with engine.begin() as conn:
        conn.execute(insert(Metric), queues)
        conn.execute(insert(TypeMetric), types)
    upgrade(engine)

    def hour(values: list[float]) -> dict[str, Any] | None:
        return hist.from_values(values)

    for model, key in ((HourlyMetric, ()), (HourlyTypeMetric, ("a",))):
        hours = _by_key(engine, model, "hour")
        assert set(hours) == {("q1", *key, H), ("q3", *key, H)}
        assert hours[("q1", *key, H)]["processing_hist"] == hour([1000, 2000, 4000])
        assert hours[("q1", *key, H)]["wait_hist"] == hour([0, 0, 0])
        assert hours[("q3", *key, H)]["processing_hist"] == hour([1000])
        assert hours[("q3", *key, H)]["wait_hist"] == hour([0])
    minutes = _by_key(engine, Metric, "timestamp")
    last = minutes[("q1", H + timedelta(minutes=59))]
    assert (last["processing_hist"], last["wait_hist"]) == (hour([4000]), hour([0]))
    # the queue's invented row stays (it records a rolled-up minute), without the hour
    idle = minutes[("q3", H + timedelta(minutes=59))]
    assert (idle["job_count"], idle["processing_hist"], idle["wait_hist"]) == (0, None, None)
    assert minutes[("q1", H + timedelta(minutes=60))]["processing_hist"] == hour([8000])
    type_minutes = _by_key(engine, TypeMetric, "timestamp")
    assert ("q3", "a", H + timedelta(minutes=59)) not in type_minutes  # invented: deleted
    assert type_minutes[("q1", "a", H + timedelta(minutes=59))]["processing_hist"] == hour([4000])
    assert len(type_minutes) == len(types) - 1

    # the charts read the same numbers from the hourly tables as from the minutes
    for by in ("queue", "type"):
        buckets = series.time_series(
            engine, start=H, end=H + timedelta(hours=1), resolution="hour", by=by
        )
        p95 = {b["queue_name"]: b["processing_p95"] for b in buckets}
        assert p95["q1"] == hist.quantile(hist.counts_of(hour([1000, 2000, 4000])), 0.95)

    # the downgrade puts the hours back under "h" of the :59 rows, the zero type row included;
    # the hour in progress (13:00, its :59 not rolled up) had no "h" before 0016: left out
    with engine.begin() as conn:
        conn.execute(
            insert(HourlyMetric),
            [{"queue_name": "q1", "hour": H + timedelta(hours=1), "processing_hist": hour([8000])}],
        )
    _downgrade(engine, "0015")
    assert _by_key(engine, Metric, "timestamp") == _by_key_of(queues, "timestamp", minutes)
    restored = _by_key(engine, TypeMetric, "timestamp")
    idle_type = restored[("q3", "a", H + timedelta(minutes=59))]
    assert idle_type["processing_hist"] == _hist([], [1000])
    assert idle_type["job_count"] == 0
    assert restored[("q1", "a", H + timedelta(minutes=59))]["processing_hist"] == _hist(
        [4000], [1000, 2000, 4000]
    )
    with engine.connect() as conn:
        assert "queue_metrics_hourly" not in inspect(conn).get_table_names()
    upgrade(engine)  # and up again
    assert len(_by_key(engine, HourlyTypeMetric, "hour")) == 2
    engine.dispose()


def _by_key_of(
    rows: list[dict[str, Any]], time_column: str, stored: dict[tuple[Any, ...], dict[str, Any]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """``rows`` as inserted, keyed like :func:`_by_key`, with the ids and columns the database
    filled in taken from ``stored``."""
    out = {}
    for r in rows:
        key = (r["queue_name"], r[time_column])
        out[key] = {**stored[key], **r}
    return out
