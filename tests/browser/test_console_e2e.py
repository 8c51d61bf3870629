"""The console in a real browser against a running system (PostgreSQL, Redis, worker,
maintainer): log in, submit and watch a job complete, cancel a scheduled job, see charts."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from console import browser_sessions
from db.settings import get_settings
from tasks import api
from tests.acceptance.conftest import wait_for
from tests.browser.conftest import System, go, screenshot_dir
from tests.console.conftest import insert_metrics


def test_submit_a_job_and_watch_it_complete(console_page: Any, tmp_path: Path) -> None:
    tab = console_page
    go(tab, "Submit")
    tab.get_by_label("Data (JSON object)").fill('{"greeting": "hello from the browser"}')
    tab.get_by_role("button", name="Submit job").click()
    message = tab.get_by_text(re.compile(r"^Submitted job [0-9a-f-]{36}$"))
    expect(message).to_be_visible()
    job_id = message.inner_text().removeprefix("Submitted job ")
    status = tab.locator('[data-testid="stMetric"]', has_text="Status")
    # no reload: the live-status fragment polls the job until the worker has finished it
    expect(status).to_contain_text("completed", timeout=20_000)
    job = api.get_job(job_id)
    assert job["status"] == "completed"
    assert job["result"] == {"greeting": "hello from the browser"}
    snap(tab, screenshot_dir(tmp_path) / "submit-completed.png")


def test_cancel_a_scheduled_job(console_page: Any) -> None:
    job_id = str(api.schedule_job("demo.echo", {"later": True}, timedelta(hours=1)))
    tab = console_page
    go(tab, "Jobs")
    box = tab.get_by_label(re.compile(r"^Job id"))
    box.fill(job_id)
    box.press("Enter")
    expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    tab.get_by_role("button", name="Cancel job…").click()
    expect(tab.get_by_text(f"Cancel job {job_id}?")).to_be_visible()  # names the job
    tab.get_by_role("button", name=f"Yes, cancel job {job_id[:8]}").click()
    expect(tab.get_by_text(f"Job {job_id}: cancelled")).to_be_visible()
    assert api.get_job(job_id)["status"] == "cancelled"


@pytest.fixture(scope="module")
def metrics_rows(system: System) -> None:
    """An hour of rollups for the charts (once per module)."""
    insert_metrics(get_settings().ledger_url)


def test_metrics_page_draws_plotly_charts(console_page: Any, metrics_rows: None) -> None:
    tab = console_page
    go(tab, "Metrics")
    charts = tab.locator('[data-testid="stPlotlyChart"]')
    expect(charts).to_have_count(6)  # throughput, error rate, wait, processing, depth, util.
    for i in range(6):
        expect(charts.nth(i).locator(".main-svg").first).to_be_visible()
    expect(tab.locator(".gtitle", has_text="Throughput (jobs/s)")).to_be_visible()
    expect(tab.locator(".legendtext", has_text="reports").first).to_be_visible()


def test_every_page_in_the_browser(console_page: Any, metrics_rows: None, tmp_path: Path) -> None:
    """Visit every page with some data and keep a screenshot of each (docs/img with
    UPDATE_SCREENSHOTS=1)."""
    ok = [api.submit_job("demo.echo", {"lesson": i}) for i in range(4)]
    bad = api.submit_job("demo.fail", {"fail_times": 5})
    api.schedule_job("demo.echo", {"tomorrow": True}, 3600)
    wait_for(
        lambda: (
            all(api.get_job(j)["status"] == "completed" for j in ok)
            and api.get_job(bad)["status"] == "failed"
        ),
        30,
        "the demo jobs to finish",
    )
    out = screenshot_dir(tmp_path)
    tab = console_page
    for title, wait in (
        ("Jobs", '[data-testid="stDataFrame"]'),
        ("Queues", '[data-testid="stDataFrame"]'),
        ("Submit", "textarea"),
        ("Workers", '[data-testid="stDataFrame"]'),
        ("Metrics", '[data-testid="stPlotlyChart"] .main-svg'),
        ("Periodic", '[data-testid="stDataFrame"]'),
        ("Errors", '[data-testid="stDataFrame"]'),
        ("Capacity", '[data-testid="stMetric"]'),
        ("Audit", '[data-testid="stDataFrame"]'),
        ("Overview", 'text="default: jobs/min"'),  # live fragment: appears without a reload
    ):
        go(tab, title)
        if title == "Submit":  # an audited action, so the Audit page has something to show
            tab.get_by_role("button", name="Submit job").click()
            expect(tab.get_by_text(re.compile(r"^Submitted job "))).to_be_visible()
        tab.locator(wait).first.wait_for(timeout=20_000)
        expect(tab.locator('[data-testid="stException"]')).to_have_count(0)
        snap(tab, out / f"{title.lower()}.png")


def snap(tab: Any, path: Path) -> None:
    """A screenshot of the whole page (Streamlit scrolls inside its main block, so the
    viewport is grown to the content first)."""
    height = tab.evaluate(
        "() => (document.querySelector('[data-testid=\"stMain\"]') || document.body).scrollHeight"
    )
    tab.set_viewport_size({"width": 1400, "height": max(900, min(int(height) + 40, 4000))})
    tab.wait_for_timeout(400)  # let charts re-layout and finish their transitions
    tab.screenshot(path=str(path))
    tab.set_viewport_size({"width": 1400, "height": 900})


def _session_cookie(tab: Any) -> str | None:
    found = [c["value"] for c in tab.context.cookies() if c["name"] == browser_sessions.COOKIE]
    return found[0] if found else None


def test_a_reload_keeps_the_login_until_log_out(console_page: Any) -> None:
    tab = console_page
    token = wait_for(lambda: _session_cookie(tab), 10, "the session cookie")
    go(tab, "Jobs")
    tab.reload()  # a new Streamlit session: the cookie brings the login back, on the same page
    expect(tab.get_by_text("Signed in as")).to_be_visible()
    tab.get_by_role("heading", name="Jobs").first.wait_for()
    tab.get_by_role("button", name="Log out").click()
    tab.get_by_role("button", name="Log in").wait_for()
    wait_for(lambda: _session_cookie(tab) is None, 10, "the cookie to be cleared")
    tab.context.add_cookies(  # even the old token, replayed, no longer logs in
        [{"name": browser_sessions.COOKIE, "value": token, "url": tab.url}]
    )
    tab.reload()
    tab.get_by_role("button", name="Log in").wait_for()
    expect(tab.get_by_text("Signed in as")).to_have_count(0)
