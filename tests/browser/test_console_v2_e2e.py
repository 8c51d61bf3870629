"""Console v2 in a real browser against a running system: the Queues page pauses and resumes
one queue after a confirmation naming it; Submit says why it refuses a value; a scheduled job
run now is staged and run by the real maintainer and worker, then deleted; no Deploy button
and whole KPI values from 1024 to 1920 px."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from db.settings import get_settings
from tasks import api
from tests.acceptance.conftest import wait_for
from tests.browser.conftest import ADMIN, ADMIN_PASSWORD, System, go, screenshot_dir
from tests.browser.test_console_e2e import snap
from tests.console.conftest import insert_metrics


@contextmanager
def signed_in(browser: Any, system: System, width: int, height: int = 900) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto(system.base)
    tab.get_by_role("textbox", name="Username").fill(ADMIN)
    tab.get_by_role("textbox", name="Password").fill(ADMIN_PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_role("heading", name="Overview").wait_for()
    try:
        yield tab
    finally:
        context.close()


def paused(queue: str) -> bool:
    return any(c["queue_name"] == queue and c["paused"] for c in api.get_queue_controls())


def test_pause_and_resume_one_queue_from_its_row(console_page: Any, tmp_path: Path) -> None:
    for n in range(3):  # something to show (before the page's first, uncached read)
        api.schedule_job("demo.echo", {"n": n}, timedelta(hours=1))
    api.schedule_job("demo.echo", {"n": "report"}, timedelta(hours=1), queue="reports")
    tab = console_page
    go(tab, "Queues")
    expect(tab.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    snap(tab, screenshot_dir(tmp_path) / "queues.png")
    tab.get_by_role("button", name="Pause reports…").click()
    expect(tab.get_by_text("Pause queue reports?")).to_be_visible()  # names the queue
    assert not paused("reports")
    tab.get_by_label("Reason (optional)").fill("browser test")
    tab.get_by_role("button", name="Yes, pause reports").click()
    expect(tab.get_by_text(re.compile(r"^Queue reports paused"))).to_be_visible()
    assert paused("reports") and not paused("default")
    tab.get_by_role("button", name="Resume reports…").click()
    expect(tab.get_by_text("Resume queue reports?")).to_be_visible()
    tab.get_by_role("button", name="Yes, resume reports").click()
    expect(tab.get_by_text("Queue reports resumed.")).to_be_visible()
    assert not paused("reports")


def test_submit_says_why_a_priority_is_refused(console_page: Any) -> None:
    """Before, 42 turned the field red and Submit did nothing, silently."""
    tab = console_page
    go(tab, "Submit")
    tab.get_by_label("Data (JSON object)").fill(f'{{"marker": "{uuid.uuid4()}"}}')
    priority = tab.get_by_label(re.compile(r"^Priority"))
    priority.fill("42")
    tab.get_by_role("button", name="Submit job").click()
    expect(
        tab.get_by_text(re.compile(r"^Priority must be a whole number from 0 to 9"))
    ).to_be_visible()
    expect(tab.get_by_text(re.compile(r"^Nothing submitted: 1 field"))).to_be_visible()
    expect(priority).to_have_value("42")  # kept as typed


def test_run_a_scheduled_job_now_then_delete_it(console_page: Any) -> None:
    job_id = str(api.schedule_job("demo.echo", {"run": "now"}, timedelta(hours=2)))
    tab = console_page
    go(tab, "Jobs")
    box = tab.get_by_label(re.compile(r"^Job id"))
    box.fill(job_id)
    box.press("Enter")
    expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    tab.get_by_role("button", name="Run job now…").click()
    expect(tab.get_by_text(f"Run job {job_id} now?")).to_be_visible()
    tab.get_by_role("button", name=f"Yes, run job {job_id[:8]} now").click()
    expect(tab.get_by_text(re.compile(rf"^Job {job_id} is due now"))).to_be_visible()
    wait_for(lambda: api.get_job(job_id)["status"] == "completed", 20, "the job to run")
    tab.get_by_role("button", name="Delete job…").click()
    expect(tab.get_by_text(f"Delete job {job_id}? Deleting cannot be undone.")).to_be_visible()
    tab.get_by_role("button", name=f"Yes, delete job {job_id[:8]}").click()
    expect(tab.get_by_text(f"Job {job_id} deleted")).to_be_visible()
    with pytest.raises(Exception, match="not"):
        api.get_job(job_id)


@pytest.mark.parametrize("width", [1024, 1280, 1920])
def test_no_deploy_button_and_whole_kpi_values(browser: Any, system: System, width: int) -> None:
    with signed_in(browser, system, width) as tab:
        values = tab.locator('[data-testid="stMetricValue"]')
        expect(values.first).to_be_visible()
        expect(tab.get_by_role("button", name="Deploy")).to_have_count(0)
        cut = tab.evaluate(
            """() => [...document.querySelectorAll('[data-testid="stMetricValue"]')]
                .flatMap(el => [el, ...el.querySelectorAll('*')])
                .filter(el => el.scrollWidth > el.clientWidth + 1
                    || getComputedStyle(el).textOverflow === 'ellipsis')
                .map(el => el.textContent)"""
        )
        assert cut == [], f"KPI values cut off at {width} px: {cut}"
        go(tab, "Queues")
        expect(tab.get_by_role("button", name="Deploy")).to_have_count(0)


@pytest.fixture(scope="module")
def rollups(system: System) -> None:
    """An hour of rollups (once per module)."""
    insert_metrics(get_settings().ledger_url)


def test_metrics_live_refresh_moves_the_range_without_a_click(
    console_page: Any, rollups: None
) -> None:
    tab = console_page
    go(tab, "Metrics")
    caption = tab.get_by_text(re.compile(r"points · minute buckets"))
    expect(caption).to_be_visible()
    tab.get_by_text("Live refresh").click()
    expect(caption).to_contain_text("live, every 10 s")
    first = caption.inner_text()
    # the fragment redraws itself every 10 s with the range moved to now (10 s steps)
    expect(caption).not_to_have_text(first, timeout=25_000)
    expect(tab.locator('[data-testid="stPlotlyChart"]')).to_have_count(6)
