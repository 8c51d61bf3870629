"""Fair share with real worker and maintainer processes: a small school is not queued behind a
big one, and a per-school concurrency limit holds while schools run side by side (PostgreSQL
+ Redis, and the embedded default)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from db.settings import get_settings
from tasks import api
from tests.acceptance.conftest import Processes, wait_for


def lines(name: str) -> list[list[str]]:
    path = get_settings().queue_data_dir / name
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_ten_jobs_of_a_small_school_start_before_fifty_of_a_big_one(
    processes: Processes, kind: str
) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "1", "--kind", kind)
    big = [{"type": "test.school", "data": {"school": "A", "seconds": 0.002}}] * 2000
    api.submit_jobs(big)
    wait_for(lambda: len(lines("schools.log")) >= 100, 60, "school A's jobs to be running")
    api.submit_jobs(
        [{"type": "test.school", "data": {"school": "B", "tag": str(i)}} for i in range(10)]
    )
    submitted = len(lines("schools.log"))  # jobs started before B's submit returned
    wait_for(lambda: sum(s == "B" for s, *_ in lines("schools.log")) == 10, 60, "school B")
    after = [school for school, *_ in lines("schools.log")[submitted:]]
    last_b = max(i for i, school in enumerate(after) if school == "B")
    a_before = after[:last_b].count("A")
    assert a_before < 50, f"{a_before} of A's jobs started before B's last one"
    assert len(lines("schools.log")) < 2010  # A was still far from done: B did not wait


def overlaps(intervals: list[tuple[float, float]]) -> bool:
    return any(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in combinations(intervals, 2))


def check_one_per_school_side_by_side(expected: int) -> None:
    runs: dict[str, list[tuple[float, float]]] = {}
    for school, start, end in lines("intervals.log"):
        runs.setdefault(school, []).append((float(start), float(end)))
    assert sum(len(r) for r in runs.values()) == expected
    for school, intervals in runs.items():
        assert not overlaps(intervals), f"two jobs of {school} ran at once"
    # the schools ran side by side: some instant had one job of each of the three running
    firsts = [min(r) for r in runs.values()]
    assert max(start for start, _ in firsts) < min(end for _, end in firsts)


def submit_three_schools() -> None:
    api.submit_jobs(
        [
            {"type": "test.school_one", "data": {"school": school, "seconds": 0.6}}
            for school in ("north", "south", "east")
            for _ in range(3)
        ]
    )


def test_one_job_per_school_runs_at_a_time_while_three_schools_run(processes: Processes) -> None:
    processes.maintainer()
    processes.worker("--concurrency", "6")
    submit_three_schools()
    wait_for(lambda: len(lines("intervals.log")) == 9, 60, "nine jobs")
    check_one_per_school_side_by_side(9)


def test_fair_share_on_the_embedded_default(embedded: Processes, tmp_path: Path) -> None:
    embedded.maintainer()
    embedded.worker("--concurrency", "6")
    submit_three_schools()
    wait_for(lambda: len(lines("intervals.log")) == 9, 60, "nine jobs")
    check_one_per_school_side_by_side(9)
