"""Read models of the Overview page: the headline KPIs, the mission's success criteria and
whether a maintainer runs. (Its last-hour chart is :func:`metrics.read.series.time_series`.)"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from db import maintainers
from db.clock import db_clock
from db.engine import read
from db.models import Job, Worker
from db.queries import current_depth
from db.states import JobStatus
from metrics import hist
from metrics.read.common import error_rate, stale_seconds, window_totals
from metrics.rollup import MINUTE, floor_minute

jobs = Job.__table__
workers = Worker.__table__


@dataclass(frozen=True)
class Target:
    """One success criterion: the measured value must be ``comparison`` ``threshold``."""

    key: str
    label: str
    unit: str
    comparison: str  # "<" or ">"
    default: float
    env: str  # the setting that overrides ``default``


#: the mission's five targets, in its order; each configurable by its environment variable
TARGETS = (
    Target(
        "p95_processing",
        "Job processing time (p95)",
        "ms",
        "<",
        1000.0,
        "QUEUE_TARGET_PROCESSING_MS",
    ),
    Target("p95_wait", "Queue latency (p95 wait)", "ms", "<", 100.0, "QUEUE_TARGET_LATENCY_MS"),
    Target("utilization", "Worker utilization", "%", ">", 80.0, "QUEUE_TARGET_UTILIZATION_PCT"),
    Target("error_rate", "Error rate", "%", "<", 0.1, "QUEUE_TARGET_ERROR_RATE_PCT"),
    Target("completion_rate", "Completion rate", "%", ">", 99.9, "QUEUE_TARGET_COMPLETION_PCT"),
)


def target_threshold(target: Target) -> float:
    """The threshold of ``target``: its environment variable, else the mission's default.
    A percentage must lie in [0, 100], a time be positive; anything else raises ValueError
    naming the variable."""
    text = os.environ.get(target.env, "").strip()
    if not text:
        return target.default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    valid = 0 <= value <= 100 if target.unit == "%" else value > 0
    if not (math.isfinite(value) and valid):
        bounds = "a percentage from 0 to 100" if target.unit == "%" else "a time in ms above 0"
        raise ValueError(f"{target.env} must be {bounds}, got {text!r}")
    return value


def success_criteria(engine: Engine, *, window_minutes: int = 60) -> list[dict[str, Any]]:
    """The mission's success criteria (``TARGETS``) over the last ``window_minutes``
    rolled-up minutes of all queues: each with its measured ``value`` (None: no data),
    ``threshold``, ``comparison`` and ``ok`` (True met, False missed, None no data). Rates and
    utilization are in percent, times in milliseconds."""
    thresholds = {t.key: target_threshold(t) for t in TARGETS}
    with read(engine) as conn:
        until = floor_minute(db_clock(conn))
        t = window_totals(conn, until - window_minutes * MINUTE, until)
    finished = t.completed_count + t.failed_count
    rate = error_rate(t.error_count, t.job_count, t.retries)
    utilization = t.utilization
    measured = {
        "p95_processing": hist.quantile(t.processing_counts, 0.95),
        "p95_wait": hist.quantile(t.wait_counts, 0.95),
        "utilization": None if utilization is None else 100.0 * min(1.0, utilization),
        "error_rate": None if rate is None else 100.0 * rate,
        "completion_rate": 100.0 * t.completed_count / finished if finished else None,
    }
    out = []
    for target in TARGETS:
        value, threshold = measured[target.key], thresholds[target.key]
        ok = None
        if value is not None:
            ok = value < threshold if target.comparison == "<" else value > threshold
        out.append(
            {
                "key": target.key,
                "label": target.label,
                "value": value,
                "unit": target.unit,
                "threshold": threshold,
                "comparison": target.comparison,
                "ok": ok,
            }
        )
    return out


def overview_kpis(engine: Engine) -> dict[str, Any]:
    """Headline numbers: waiting/running/live workers now (indexed counts), the rest from the
    rollups (throughput: last 5 minutes; p95 wait: last 15; failures and error rate: last 60)."""
    with read(engine) as conn:
        now = db_clock(conn)
        until = floor_minute(now)
        waiting = sum(current_depth(conn, now).values())
        running = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
        ).scalar_one()
        live = conn.execute(
            select(func.count())
            .select_from(workers)
            .where(
                workers.c.status == "running",
                workers.c.last_heartbeat >= now - timedelta(seconds=stale_seconds()),
            )
        ).scalar_one()
        hour = window_totals(conn, until - 60 * MINUTE, until, hists=False)
        recent = window_totals(conn, until - 5 * MINUTE, until, hists=False)
        quarter = window_totals(conn, until - 15 * MINUTE, until)
    return {
        "waiting": int(waiting),
        "running": int(running),
        "failed_last_hour": hour.failed_count,
        "throughput_per_s": recent.job_count / 300.0 if recent.minutes else None,
        "p95_wait_ms": hist.quantile(quarter.wait_counts, 0.95),
        "error_rate": error_rate(hour.error_count, hour.job_count, hour.retries),
        "live_workers": int(live),
    }


# --- is a maintainer alive? ---------------------------------------------------------------------


def maintainer_signal(engine: Engine) -> dict[str, Any]:
    """Whether a maintainer runs: the heartbeats in ``queue_maintainers`` (each maintainer
    writes its own every ``QUEUE_HEARTBEAT_SECONDS``). ``live``: maintainers whose heartbeat
    is younger than ``QUEUE_STALE_SECONDS`` and that did not stop; ``alive``: at least one;
    ``last_seen``/``age_seconds``: the newest heartbeat of any (None: none ever ran here)."""
    with read(engine) as conn:
        now = db_clock(conn)
        found = maintainers.newest(conn, stale_seconds())
    last = found["last_seen"]
    age = None if last is None else max(0.0, (now - last).total_seconds())
    return {
        "live": found["live"],
        "last_seen": last,
        "age_seconds": age,
        "alive": found["live"] > 0,
    }
