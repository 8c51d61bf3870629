"""Capacity: each queue is credited only with its share of the slots of the workers serving
it, the modelled p95 wait stands next to the measured one, and an empty system says "not
enough data" instead of "meets target"."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from db import workers as worker_sql
from db.engine import engine_for, write
from db.models import Metric
from metrics import hist
from tests.console.conftest import insert_metrics


def capacity_page(make_app: Callable[..., AppTest], queue: str = "default") -> AppTest:
    at = make_app("analyst").run()
    at.switch_page("views/capacity.py").run()
    at.selectbox(key="capacity_queue").select(queue).run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest) -> dict[str, dict[str, object]]:
    return {r["queue"]: r for r in at.dataframe[-1].value.to_dict("records")}


def register(url: str, queues: list[str], concurrency: int) -> None:
    with write(engine_for(url)) as conn:
        worker_sql.register(
            conn,
            worker_id=uuid.uuid4(),
            name="w",
            hostname="h",
            pid=1,
            queues=queues,
            concurrency=concurrency,
            worker_kind="thread",
        )


def test_an_empty_system_has_not_enough_data(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    at = capacity_page(make_app)
    assert at.info[0].value.startswith("Not enough data for")
    assert not at.success
    assert {r["verdict"] for r in table(at).values()} == {"not enough data"}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["p95 wait modelled at x1"] == "—"
    assert metrics["Slots needed for p95 ≤ 5 s"] == "—"


def test_slots_of_a_shared_worker_are_split_between_its_queues(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    insert_metrics(console_db, ("default", "reports"))
    register(console_db, ["default", "reports"], 4)
    register(console_db, ["reports"], 2)
    rows = table(capacity_page(make_app))
    credited = {q: r["slots credited"] for q, r in rows.items() if q in ("default", "reports")}
    shares = {q: float(text.split(" of ")[0]) for q, text in credited.items()}
    serving = {q: int(text.split(" of ")[1]) for q, text in credited.items()}
    assert serving == {"default": 4, "reports": 6}  # every slot of the workers serving it
    assert abs(sum(shares.values()) - 6.0) < 0.11  # never more than the 6 live slots
    assert 0 < shares["default"] < 4 and 2 < shares["reports"] < 6
    assert rows["notifications"]["slots credited"] == "0.0 of 0"  # nobody serves it


def test_the_measured_wait_stands_next_to_the_model(
    console_db: str, make_app: Callable[..., AppTest]
) -> None:
    """The model (random arrivals, 4 slots, 0.1 s jobs at 1/s) says a tiny wait; the jobs
    waited 10 s: both are shown and the page does not claim the target is met."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = [
        {
            "queue_name": "default",
            "timestamp": end - timedelta(minutes=i),
            "created_at": end - timedelta(minutes=i),
            "job_count": 60,
            "worker_count": 1,
            "error_count": 0,
            "retries": 0,
            "completed_count": 60,
            "failed_count": 0,
            "throughput": 1.0,
            "depth": 0,
            "busy_seconds": 6.0,
            "worker_slots": 4,
            "processing_time": 100.0,
            "processing_hist": hist.from_values([100.0] * 60),
            "wait_hist": hist.from_values([10_000.0] * 60),
        }
        for i in range(1, 31)
    ]
    with write(engine_for(console_db)) as conn:
        conn.execute(insert(Metric), rows)
    register(console_db, ["default"], 4)
    at = capacity_page(make_app)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["p95 wait modelled at x1"] in ("0 ms", "< 0.01 ms") or metrics[
        "p95 wait modelled at x1"
    ].endswith("ms")
    assert metrics["p95 wait measured"].endswith(" s")
    assert 9 < float(metrics["p95 wait measured"][:-2]) < 11.5
    assert not at.success
    assert any("waited" in w.value and "measured" in w.value for w in at.warning)
    assert table(at)["default"]["verdict"] == "measured wait above target"
