"""The Queues page in a real browser against a running system (PostgreSQL, Redis, worker,
maintainer): a queue holding partitioned jobs (fair share) is broken down by partition, the
partition with most jobs waiting first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tasks import api, registry
from tests.browser.conftest import go

QUEUE = "reports"


@pytest.fixture
def paused_queue(system: Any) -> Iterator[str]:
    """``reports``, paused: its jobs stay queued (waiting) while the page is looked at."""
    api.pause_queue(QUEUE, by="browser test", reason="partition breakdown")
    try:
        yield QUEUE
    finally:
        api.resume_queue(QUEUE)


def test_a_queue_broken_down_by_partition(console_page: Any, paused_queue: str) -> None:
    registry.load_job_modules(["tests.jobs_for_tests"])  # test.school, by data["school"]
    big, small = f"school-{uuid.uuid4().hex[:8]}", f"school-{uuid.uuid4().hex[:8]}"
    items = [(small, 1), (big, 3)]
    api.submit_jobs(
        [
            {"type": "test.school", "data": {"school": school}, "queue": paused_queue}
            for school, n in items
            for _ in range(n)
        ]
    )
    tab = console_page
    go(tab, "Queues")
    expect(tab.get_by_role("heading", name="Partitions")).to_be_visible()
    box = tab.get_by_role("combobox", name="Queue to break down by partition")
    expect(box).to_have_value(paused_queue)  # the one queue with partitioned jobs
    table = tab.locator('[data-testid="stDataFrame"]').filter(has_text=big)
    expect(table).to_be_visible()
    # the grid is drawn on a canvas; its accessible copy (a table inside it) has the cells
    rows = table.locator("table tbody tr")
    cells = [rows.nth(i).locator("td") for i in range(2)]
    # the partitions, most waiting first: type, partition, waiting, running, ...
    expect(cells[0].nth(1)).to_have_text(big)
    expect(cells[0].nth(2)).to_have_text("3")
    expect(cells[1].nth(1)).to_have_text(small)
    expect(cells[1].nth(2)).to_have_text("1")
    expect(rows).to_have_count(2)
    expect(tab.get_by_text("2 partitions of queue")).to_be_visible()
