"""Steering periodic jobs: list them, pause and resume them (``queuectl periodic``, the
console's Periodic page). Stored in the ledger (``queue_periodic``), so it survives every
restart; the periodic enqueuer (``tasks.maintenance.periodic``) honours it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from db import periodic as store
from db.engine import read, transaction
from db.settings import get_settings
from tasks import api, registry
from tasks.errors import InvalidArgument


def _periodic_type(name: Any) -> registry.JobType:
    if not isinstance(name, str) or not name:
        raise InvalidArgument("name the periodic job (its job type)")
    job_type = registry.get(name)
    if job_type.schedule is None:
        raise InvalidArgument(f"job type {name!r} is not a periodic job")
    return job_type


def _check_text(what: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        raise InvalidArgument(f"{what} must be at most {limit} characters without NUL")
    return value or None


def _engine(engine: Engine | None) -> Engine:
    registry.load_job_modules(get_settings().job_modules)
    return engine if engine is not None else api.engine()


def list_periodic(
    engine: Engine | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every periodic job type, with its schedule and policies, whether it is paused (by
    whom, when, why), its next tick and the enqueuer's record: the newest tick dealt with and
    enqueued, ticks skipped because a run was unfinished (the newest and the run that blocked
    it), ticks missed and caught up. A paused name whose type is no longer registered is
    listed too (``registered`` False), so that it can be resumed."""
    engine = _engine(engine)
    now = now or datetime.now(UTC)
    with read(engine) as conn:
        rows = store.states(conn)
    out: list[dict[str, Any]] = []
    for t in registry.periodic_types():
        assert t.schedule is not None
        state = rows.pop(t.name, {})
        out.append(
            {
                "name": t.name,
                "registered": True,
                "schedule": t.schedule.describe(),
                "tz": t.schedule.tz or ("UTC" if t.schedule.cron else None),
                "queue": t.queue,
                "overlap": t.overlap,
                "catch_up": t.catch_up,
                "catch_up_window_seconds": t.catch_up_window.total_seconds(),
                "next_tick": t.schedule.next_tick(now),
                **_state_fields(state),
            }
        )
    for name, state in sorted(rows.items()):
        if state.get("paused"):
            out.append(
                {
                    "name": name,
                    "registered": False,
                    "schedule": None,
                    "tz": None,
                    "queue": None,
                    "overlap": None,
                    "catch_up": None,
                    "catch_up_window_seconds": None,
                    "next_tick": None,
                    **_state_fields(state),
                }
            )
    return out


def _state_fields(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "paused": bool(state.get("paused")),
        "paused_at": state.get("paused_at"),
        "paused_by": state.get("paused_by"),
        "reason": state.get("reason"),
        "last_tick": state.get("last_tick"),
        "last_enqueued_tick": state.get("last_enqueued_tick"),
        "skipped_count": int(state.get("skipped_count") or 0),
        "last_skipped_tick": state.get("last_skipped_tick"),
        "last_skipped_for": state.get("last_skipped_for"),
        "missed_count": int(state.get("missed_count") or 0),
        "last_missed_tick": state.get("last_missed_tick"),
        "caught_up_count": int(state.get("caught_up_count") or 0),
    }


def pause_periodic(
    name: str, *, by: str | None = None, reason: str | None = None, engine: Engine | None = None
) -> bool:
    """Stop enqueuing the ticks of periodic job ``name`` (runs already enqueued go on; run it
    by hand with ``submit_job`` still works). Survives restarts. Returns False if it was
    paused already."""
    engine = _engine(engine)
    job_type = _periodic_type(name)
    by = _check_text("by", by, 200)
    reason = _check_text("reason", reason, 500)
    with transaction(engine) as conn:
        return store.set_paused(conn, job_type.name, by=by, reason=reason)


def resume_periodic(
    name: str, *, engine: Engine | None = None, now: datetime | None = None
) -> bool:
    """Enqueue the ticks of periodic job ``name`` again, from its next tick: ticks due while
    it was paused are not caught up. Returns False if it was not paused. A paused name whose
    type is no longer registered can be resumed (to clear it)."""
    engine = _engine(engine)
    if not isinstance(name, str) or not name:
        raise InvalidArgument("name the periodic job (its job type)")
    now = now or datetime.now(UTC)
    with transaction(engine) as conn:
        if store.set_resumed(conn, name, now=now):
            return True
    _periodic_type(name)  # unknown names: a clear error rather than "was not paused"
    return False
