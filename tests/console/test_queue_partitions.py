"""The Queues page breaks a queue with partitioned jobs (fair share) down by partition: its
top 20 partitions, most waiting first, with what each runs and finished in the last hour;
analysts and admins alike. The opened job names its partition."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import engine_for, transaction
from db.ledger import attempts
from db.settings import get_settings
from tasks import api, registry
from tests.console.conftest import run_to_completion, run_to_failure
from tests.console.test_queues import queues_page, table


@pytest.fixture
def schools(console_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The console's ledger, with the partitioned test job types (``test.school``, by
    ``school``) known to the console and the job API."""
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    return console_db


def submit(school: str, n: int, **extra: Any) -> list[uuid.UUID]:
    items = [{"type": "test.school", "data": {"school": school, "tag": str(i)}} for i in range(n)]
    return api.submit_jobs([{**item, **extra} for item in items])


def start(url: str, job_id: uuid.UUID) -> None:
    with transaction(engine_for(url)) as conn:
        assert attempts.claim(conn, job_id, None) is not None


def partitions_table(at: AppTest) -> list[dict[str, Any]]:
    (df,) = [d.value for d in at.dataframe if "partition" in d.value.columns]
    return df.to_dict("records")


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.main.caption]


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_the_top_20_partitions_most_waiting_first(
    schools: str, make_app: Callable[..., AppTest], role: str
) -> None:
    for i in range(25):  # school-00 has 1 job waiting, ..., school-24 has 25
        submit(f"school-{i:02}", i + 1)
    start(schools, submit("school-24", 1)[0])
    run_to_completion(schools, submit("school-23", 1)[0])
    run_to_failure(schools, submit("school-23", 1, max_attempts=1)[0])
    at = queues_page(make_app, role)
    assert table(at)["default"]["waiting"] == str(sum(range(1, 26)))  # the page as before
    limits = table(at)["default"]["limits"]  # the limits say they hold per partition
    assert "test.school: fair share by school" in limits
    assert "test.school_one: 1 at once per school, fair share by school" in limits
    assert any(h.value == "Partitions" for h in at.subheader)
    assert at.selectbox(key="queues_partitions_queue").value == "default"
    rows = partitions_table(at)
    assert len(rows) == 20
    assert [r["partition"] for r in rows] == [f"school-{i:02}" for i in range(24, 4, -1)]
    first, second = rows[0], rows[1]
    assert (first["type"], first["waiting"], first["running"]) == ("test.school", 25, 1)
    assert (second["waiting"], second["completed (1 h)"], second["failed (1 h)"]) == (24, 1, 1)
    assert all(r["oldest wait"] != "—" for r in rows)  # every one has jobs queued
    assert any("Top 20 of 25 partitions" in c for c in captions(at))


def test_choose_the_queue_to_break_down(schools: str, make_app: Callable[..., AppTest]) -> None:
    submit("north", 2)
    submit("south", 5, queue="reports")
    submit("east", 1, queue="reports")
    at = queues_page(make_app)
    box = at.selectbox(key="queues_partitions_queue")
    assert box.options == ["default", "reports"]
    assert [(r["partition"], r["waiting"]) for r in partitions_table(at)] == [("north", 2)]
    assert any("1 partition of queue" in c for c in captions(at))
    box.select("reports").run()
    assert not at.exception
    rows = partitions_table(at)
    assert [(r["partition"], r["waiting"]) for r in rows] == [("south", 5), ("east", 1)]
    assert any("2 partitions of queue" in c for c in captions(at))


def test_a_declared_partitioned_type_without_jobs_says_so(
    schools: str, make_app: Callable[..., AppTest]
) -> None:
    at = queues_page(make_app)
    assert at.selectbox(key="queues_partitions_queue").value == "default"
    assert any("No partitioned job of queue" in i.value for i in at.info)


def test_no_partitions_section_without_partitioned_jobs(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the console knows no partitioned type (another test may have loaded the test types)
    plain = {k: t for k, t in registry._REGISTRY.items() if t.partition_by is None}
    monkeypatch.setattr(registry, "_REGISTRY", plain)
    api.submit_job("demo.echo", {"x": 1})
    at = queues_page(make_app)
    assert not any(h.value == "Partitions" for h in at.subheader)
    assert len(at.dataframe) == 1  # the queues table only


def test_the_opened_job_names_its_partition(schools: str, make_app: Callable[..., AppTest]) -> None:
    (job_id,) = submit("A", 1, partition="course-7")
    plain = api.submit_job("test.record", {})
    at = make_app("analyst").run()
    at.query_params["id"] = str(job_id)
    at.switch_page("views/jobs.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Partition"] == "` course-7 `"
    assert (metrics["Type"], metrics["Queue"]) == ("` test.school `", "` default `")
    at.text_input(key="id").input(str(plain)).run()
    assert "Partition" not in {m.label for m in at.metric}  # a job without one: no field
