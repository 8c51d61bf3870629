"""hourly rollups: ``queue_metrics_hourly`` and ``queue_type_metrics_hourly``

Until now the merged histograms of an hour were kept under the key ``"h"`` inside the
``processing_hist``/``wait_hist`` JSON of the hour's :59 minute row, and a key (queue, or
queue and job type) active in an hour but idle at :59 got an invented all-zero :59 row to
carry them. This revision moves every ``"h"`` into a row of the new tables, removes it from
the minute rows, and deletes the invented ``queue_type_metrics`` rows (all zero besides the
``"h"``: a type row exists only for a minute with activity). The invented ``queue_metrics``
rows stay: a queue row also records that its minute was rolled up (retention and the
back-fill look for it) and the queue's state (depth, workers), and an idle queue's real
zero rows look the same.

The downgrade puts every hourly row of an hour whose :59 is rolled up back under ``"h"`` of
its :59 row, recreating a zero :59 row where none is left.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from db.types import JSONType, UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

LAST_MINUTE = timedelta(minutes=59)
BATCH = 1000

#: (minute table, hourly table, key columns besides the time)
TABLES = (
    ("queue_metrics", "queue_metrics_hourly", ("queue_name",)),
    ("queue_type_metrics", "queue_type_metrics_hourly", ("queue_name", "job_type")),
)
#: a type row whose numbers are all zero (its histograms are checked in Python)
ZERO_COUNTS = ("job_count", "completed_count", "failed_count", "error_count", "retries")


def _minute_table(name: str, keys: Sequence[str]) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("id", sa.BigInteger()),
        *(sa.column(k, sa.String()) for k in keys),
        sa.column("timestamp", UTCDateTime()),
        sa.column("created_at", UTCDateTime()),
        *(sa.column(c, sa.Integer()) for c in ZERO_COUNTS),
        sa.column("busy_seconds", sa.Float()),
        sa.column("processing_hist", JSONType),
        sa.column("wait_hist", JSONType),
    )


def _hourly_table(name: str, keys: Sequence[str]) -> sa.TableClause:
    return sa.table(
        name,
        *(sa.column(k, sa.String()) for k in keys),
        sa.column("hour", UTCDateTime()),
        sa.column("processing_hist", JSONType),
        sa.column("wait_hist", JSONType),
    )


def _create_tables() -> None:
    op.create_table(
        "queue_metrics_hourly",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("processing_hist", JSONType, nullable=True),
        sa.Column("wait_hist", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_metrics_hourly")),
        sa.UniqueConstraint(
            "queue_name", "hour", name=op.f("uq_queue_metrics_hourly_queue_name_hour")
        ),
    )
    op.create_index("ix_queue_metrics_hourly_hour", "queue_metrics_hourly", ["hour"])
    op.create_table(
        "queue_type_metrics_hourly",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("job_type", sa.String(length=200), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("processing_hist", JSONType, nullable=True),
        sa.Column("wait_hist", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_type_metrics_hourly")),
        sa.UniqueConstraint(
            "queue_name",
            "job_type",
            "hour",
            name=op.f("uq_queue_type_metrics_hourly_queue_name_job_type_hour"),
        ),
    )
    op.create_index("ix_queue_type_metrics_hourly_hour", "queue_type_metrics_hourly", ["hour"])


def _has_hour(conn: sa.Connection, column: Any) -> Any:
    """The minute histogram carries an hour under ``"h"`` (only :59 rows ever did)."""
    if conn.dialect.name == "postgresql":
        return sa.type_coerce(column, JSONType)["h"].is_not(None)
    return sa.func.json_extract(column, "$.h").is_not(None)


def _hour_hist(minute_hist: Any) -> dict[str, Any] | None:
    """The hour histogram stored under ``"h"``, as a histogram of its own."""
    if not isinstance(minute_hist, dict) or not minute_hist.get("h"):
        return None
    return {"g": minute_hist.get("g"), "b": dict(minute_hist["h"])}


def _without_hour(minute_hist: Any) -> dict[str, Any] | None:
    """The minute histogram without ``"h"``; None when no bucket is left (what the rollup
    stores for a minute without values)."""
    if not isinstance(minute_hist, dict):
        return None
    if not minute_hist.get("b"):
        return None
    return {k: v for k, v in minute_hist.items() if k != "h"}


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


def _is_zero(row: Any) -> bool:
    numbers = (row._mapping[c] for c in (*ZERO_COUNTS, "busy_seconds"))
    no_values = not _without_hour(row.processing_hist) and not _without_hour(row.wait_hist)
    return no_values and not any(numbers)


def _move_out(conn: sa.Connection, minute_name: str, hourly_name: str, keys: Sequence[str]) -> None:
    """Move the ``"h"`` of every minute row that has one into the hourly table, a page of
    ``BATCH`` rows (by id) at a time, so a long history is never held in memory at once."""
    minute = _minute_table(minute_name, keys)
    hourly = _hourly_table(hourly_name, keys)
    carries_hour = sa.or_(
        _has_hour(conn, minute.c.processing_hist), _has_hour(conn, minute.c.wait_hist)
    )
    update = (
        sa.update(minute)
        .where(minute.c.id == sa.bindparam("b_id"))
        .values(
            processing_hist=sa.bindparam("b_processing_hist", type_=JSONType),
            wait_hist=sa.bindparam("b_wait_hist", type_=JSONType),
        )
    )
    after = -1
    while True:
        rows = conn.execute(
            sa.select(minute)
            .where(carries_hour, minute.c.id > after)
            .order_by(minute.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        moved = [
            {
                **{k: row._mapping[k] for k in keys},
                "hour": row.timestamp.astimezone(UTC) - LAST_MINUTE,
                "processing_hist": _hour_hist(row.processing_hist),
                "wait_hist": _hour_hist(row.wait_hist),
            }
            for row in rows
        ]
        moved = [m for m in moved if m["processing_hist"] or m["wait_hist"]]
        invented = {row.id for row in rows if _is_zero(row)} if "job_type" in keys else set()
        cleaned = [
            {
                "b_id": row.id,
                "b_processing_hist": _without_hour(row.processing_hist),
                "b_wait_hist": _without_hour(row.wait_hist),
            }
            for row in rows
            if row.id not in invented
        ]
        if moved:
            conn.execute(sa.insert(hourly), moved)
        if invented:
            conn.execute(
                sa.delete(minute).where(minute.c.id == sa.bindparam("b_id")),
                [{"b_id": i} for i in sorted(invented)],
            )
        if cleaned:
            conn.execute(update, cleaned)


def upgrade() -> None:
    _create_tables()
    conn = op.get_bind()
    for minute_name, hourly_name, keys in TABLES:
        _move_out(conn, minute_name, hourly_name, keys)


def _with_hour(minute_hist: Any, hour_hist: Any) -> dict[str, Any] | None:
    """The old :59 format: the minute histogram with its hour's counts under ``"h"``."""
    if not isinstance(hour_hist, dict) or not hour_hist.get("b"):
        return minute_hist if isinstance(minute_hist, dict) else None
    base = minute_hist if isinstance(minute_hist, dict) else {}
    return {
        "g": base.get("g", hour_hist.get("g")),
        "b": dict(base.get("b") or {}),
        "h": {k: hour_hist["b"][k] for k in sorted(hour_hist["b"], key=int)},
    }


def _zero_row(keys: Sequence[str], key: tuple[Any, ...], at59: datetime) -> dict[str, Any]:
    """The zero :59 row the old rollup wrote for a key idle at the end of its hour."""
    row: dict[str, Any] = dict(zip(keys, key, strict=True))
    row.update({c: 0 for c in ZERO_COUNTS})
    row.update(
        timestamp=at59,
        created_at=at59 + timedelta(minutes=1),
        busy_seconds=0.0,
        throughput=0.0,
        depth=0,
        worker_count=0,
        worker_slots=0,
    )
    if "job_type" in keys:
        for name in ("throughput", "depth", "worker_count", "worker_slots"):
            row.pop(name)
    return row


def _move_back(
    conn: sa.Connection, minute_name: str, hourly_name: str, keys: Sequence[str]
) -> None:
    """Put every hour whose last minute is rolled up back under ``"h"`` of its :59 row (the
    hour in progress had none before 0016: the old reads merge its minutes)."""
    minute = _minute_table(minute_name, keys)
    hourly = _hourly_table(hourly_name, keys)
    queue_minutes = _minute_table("queue_metrics", ("queue_name",))
    newest = conn.execute(sa.select(sa.func.max(queue_minutes.c.timestamp))).scalar()
    if newest is None:
        return
    hours = conn.execute(
        sa.select(hourly).where(hourly.c.hour <= newest.astimezone(UTC) - LAST_MINUTE)
    ).all()
    if not hours:
        return
    key_cols = [minute.c[k] for k in keys]
    at59s = sorted({h.hour.astimezone(UTC) + LAST_MINUTE for h in hours})
    stored = {}
    for i in range(0, len(at59s), BATCH):
        for row in conn.execute(
            sa.select(
                minute.c.id,
                *key_cols,
                minute.c.timestamp,
                minute.c.processing_hist,
                minute.c.wait_hist,
            ).where(minute.c.timestamp.in_(at59s[i : i + BATCH]))
        ):
            key = tuple(row._mapping[k] for k in keys)
            stored[(key, row.timestamp.astimezone(UTC))] = row
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    for h in hours:
        key = tuple(h._mapping[k] for k in keys)
        at59 = h.hour.astimezone(UTC) + LAST_MINUTE
        prior = stored.get((key, at59))
        if prior is None:
            inserts.append(
                {
                    **_zero_row(keys, key, at59),
                    "processing_hist": _with_hour(None, h.processing_hist),
                    "wait_hist": _with_hour(None, h.wait_hist),
                }
            )
        else:
            updates.append(
                {
                    "b_id": prior.id,
                    "b_processing_hist": _with_hour(prior.processing_hist, h.processing_hist),
                    "b_wait_hist": _with_hour(prior.wait_hist, h.wait_hist),
                }
            )
    update = (
        sa.update(minute)
        .where(minute.c.id == sa.bindparam("b_id"))
        .values(
            processing_hist=sa.bindparam("b_processing_hist", type_=JSONType),
            wait_hist=sa.bindparam("b_wait_hist", type_=JSONType),
        )
    )
    for chunk in _chunks(updates):
        conn.execute(update, chunk)
    if inserts:
        numbers = [c for c in inserts[0] if c not in (*keys, "timestamp", "created_at")]
        full = sa.table(
            minute_name,
            *(sa.column(k, sa.String()) for k in keys),
            sa.column("timestamp", UTCDateTime()),
            sa.column("created_at", UTCDateTime()),
            *(sa.column(c, _type_of(c, inserts[0][c])) for c in numbers),
        )
        for chunk in _chunks(inserts):
            conn.execute(sa.insert(full), chunk)


def _type_of(name: str, value: Any) -> Any:
    if name.endswith("_hist"):
        return JSONType
    return sa.Integer() if isinstance(value, int) else sa.Float()


def downgrade() -> None:
    conn = op.get_bind()
    for minute_name, hourly_name, keys in TABLES:
        _move_back(conn, minute_name, hourly_name, keys)
    op.drop_index("ix_queue_type_metrics_hourly_hour", table_name="queue_type_metrics_hourly")
    op.drop_table("queue_type_metrics_hourly")
    op.drop_index("ix_queue_metrics_hourly_hour", table_name="queue_metrics_hourly")
    op.drop_table("queue_metrics_hourly")
