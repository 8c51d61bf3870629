"""The Jobs page in a real browser against a running system (PostgreSQL, Redis, worker,
maintainer): actions bound to the job picked while new jobs keep arriving (issue 16's live
refresh race), job URLs and filters in the URL, and job text that is never rendered as
Markdown (issue 17: an image link in an error fetches nothing)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from console import browser_sessions, passwords
from db.engine import engine_for, write
from db.models import Job
from db.settings import get_settings
from tasks import api
from tests.acceptance.conftest import wait_for
from tests.browser.conftest import System, go, idle

ROW_HEIGHT = 35  # st.dataframe's header and rows, in CSS pixels
LOAD = 20_000  # ms for a page load (a new session, resumed from the cookie) on a busy machine
ANALYST, ANALYST_PASSWORD = "carol", "browser-test-analyst-pw"


class Arrivals:
    """New scheduled ``demo.echo`` jobs, one every ``every`` seconds, in a thread: each one is
    the newest job, so it becomes row 0 and pushes every row of the table down."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            job_id = api.schedule_job("demo.echo", {"arrival": len(self.ids)}, timedelta(hours=1))
            self.ids.append(str(job_id))

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _show_only(tab: Any, job_type: str, status: str) -> None:
    """Filter the table through the page's own widgets (periodic system jobs also arrive)."""
    tab.get_by_label("Type").click()
    tab.get_by_role("option", name=job_type, exact=True).click()
    tab.get_by_label("Status").click()
    tab.get_by_role("option", name=status, exact=True).click()
    tab.keyboard.press("Escape")
    expect(tab.get_by_role("listbox")).to_have_count(0)  # no dropdown left over the table
    expect(tab.locator('[data-testid="stMultiSelect"]')).to_contain_text(status)
    # the page has run with both filters once it shows exactly their jobs
    expected = min(50, len(api.get_jobs(status=status, type=job_type, limit=51)))
    expect(tab.get_by_text(re.compile(rf"^Page 1 · {expected} jobs shown"))).to_be_visible()


def _tick_row(tab: Any, index: int) -> None:
    """Click the row marker (the checkbox left of the row) of row ``index`` of the table."""
    canvas = tab.locator('[data-testid="stDataFrame"] canvas').first
    canvas.wait_for()
    idle(tab)
    box = canvas.bounding_box()
    assert box is not None
    tab.mouse.click(box["x"] + 15, box["y"] + ROW_HEIGHT + ROW_HEIGHT * index + ROW_HEIGHT / 2)


def click_until(tab: Any, target: Any, done: Any, what: str, tries: int = 3) -> None:
    """Click an idempotent button until ``done()``: a click that lands while a live refresh
    redraws the button can be lost."""
    for _ in range(tries):
        idle(tab)
        target.click()
        try:
            wait_for(done, 7, what)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{what}: not after {tries} clicks")


def _scheduled_shown(tab: Any) -> int | None:
    """The live per-status count of scheduled jobs on the page (None: no such count)."""
    button = tab.get_by_role("button", name=re.compile(r"^scheduled [\d,]+$"))
    if button.count() == 0:
        return None
    return int(button.first.inner_text().split()[-1].replace(",", ""))


def _live_refresh_seen(tab: Any, above: int, timeout: float = 15) -> bool:
    """Wait until a live refresh shows more than ``above`` scheduled jobs; False if the page
    never does (a page without live counts or refresh)."""
    try:
        wait_for(lambda: (_scheduled_shown(tab) or 0) > above, timeout, "a live refresh")
    except AssertionError:
        return False
    return True


def _cancelled(ids: list[str]) -> list[str]:
    return [j for j in ids if api.get_job(j)["status"] == "cancelled"]


def test_cancel_under_a_job_picked_before_new_jobs_arrived_cancels_that_job(
    console_page: Any,
) -> None:
    """Issue 16, critical: pick job A in the table, let new jobs arrive every 0.5 s (live
    refreshes move A down the table), click Cancel under A's detail: A is cancelled, and no
    other job. (Before the fix the selection was a row number: the job now in that row was
    cancelled instead.)"""
    tab = console_page
    a = str(api.schedule_job("demo.echo", {"race": "A"}, timedelta(hours=1)))
    go(tab, "Jobs")
    _show_only(tab, "demo.echo", "scheduled")
    _tick_row(tab, 0)  # A is the newest scheduled demo.echo job
    expect(tab.get_by_role("heading", name=f"Job {a}")).to_be_visible()
    with Arrivals() as arrivals:
        shown = _scheduled_shown(tab) or 0
        refreshed = _live_refresh_seen(tab, shown + 2)  # A is several rows down by now
        expect(tab.get_by_role("heading", name=f"Job {a}")).to_be_visible()
        tab.get_by_role("button", name=re.compile(r"^Cancel job")).click()
        yes = tab.get_by_role("button", name=re.compile(r"^Yes, cancel"))
        done = tab.get_by_text(re.compile(r"^Job [0-9a-f-]{36}: cancel"))
        expect(yes.or_(done).first).to_be_visible()
        confirmed_after_refresh = False
        if yes.is_visible():
            expect(tab.get_by_text(f"Cancel job {a}?")).to_be_visible()
            expect(yes).to_have_text(f"Yes, cancel job {a[:8]}")
            # more jobs arrive and the page refreshes while the confirmation is on screen
            confirmed_after_refresh = _live_refresh_seen(tab, (_scheduled_shown(tab) or 0) + 2)
            expect(tab.get_by_text(f"Cancel job {a}?")).to_be_visible()
            yes.click()
        expect(done).to_be_visible()
    arrived = list(arrivals.ids)
    assert arrived, "no job arrived between the pick and the click"
    cancelled = _cancelled([a, *arrived])
    assert cancelled == [a], f"picked {a}, but cancelled {cancelled}"
    expect(tab.get_by_text(f"Job {a}: cancelled")).to_be_visible()
    expect(tab.get_by_role("heading", name=f"Job {a}")).to_be_visible()
    assert refreshed and confirmed_after_refresh, "no live refresh happened before the click"


def test_ticked_rows_are_cancelled_by_id_while_jobs_arrive(console_page: Any) -> None:
    """Tick two rows, let new jobs arrive (the ticked jobs move down, ticks stay on them),
    cancel the ticked ones: the confirmation names them, and exactly they are cancelled."""
    tab = console_page
    a = str(api.schedule_job("demo.echo", {"tick": "A"}, timedelta(hours=1)))
    b = str(api.schedule_job("demo.echo", {"tick": "B"}, timedelta(hours=1)))
    go(tab, "Jobs")
    _show_only(tab, "demo.echo", "scheduled")
    _tick_row(tab, 0)  # B, the newest
    expect(tab.get_by_role("heading", name=f"Job {b}")).to_be_visible()
    _tick_row(tab, 1)  # A
    expect(tab.get_by_role("heading", name=f"Job {a}")).to_be_visible()
    expect(tab.get_by_text("2 job(s) ticked")).to_be_visible()
    with Arrivals() as arrivals:
        assert _live_refresh_seen(tab, (_scheduled_shown(tab) or 0) + 2)
        tab.get_by_role("button", name="Cancel ticked (2)…").click()
        expect(tab.get_by_text("This will cancel 2 jobs, exactly these ids:")).to_be_visible()
        listing = tab.locator('[data-testid="stCode"]', has_text=a)
        expect(listing).to_contain_text(b)
        assert _live_refresh_seen(tab, (_scheduled_shown(tab) or 0) + 2)
        tab.get_by_role("button", name="Yes, cancel 2 jobs").click()
        expect(tab.get_by_text(re.compile(r"^Cancel of 2 job\(s\): 2 cancelled"))).to_be_visible()
    assert sorted(_cancelled([a, b, *arrivals.ids])) == sorted([a, b])


@pytest.fixture(scope="module")
def analyst(system: System) -> str:
    passwords.create_user(
        engine_for(get_settings().ledger_url), ANALYST, ANALYST_PASSWORD, "analyst"
    )
    return ANALYST


def _log_in(tab: Any, name: str, password: str) -> None:
    tab.get_by_role("textbox", name="Username").fill(name)
    tab.get_by_role("textbox", name="Password").fill(password)
    tab.get_by_role("button", name="Log in").click()


def _session_cookie(tab: Any) -> bool:
    return any(c["name"] == browser_sessions.COOKIE for c in tab.context.cookies())


def test_job_urls_and_filters_survive_a_reload(console_page: Any, system: System) -> None:
    tab = console_page
    job_id = str(api.schedule_job("demo.echo", {"link": True}, timedelta(hours=1)))
    wait_for(lambda: _session_cookie(tab), 10, "the session cookie")  # written after the login
    tab.goto(f"{system.base}/jobs?id={job_id[:8]}")  # a new session: the cookie logs it in
    expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible(timeout=LOAD)
    assert tab.url.endswith(f"/jobs?id={job_id[:8]}")  # the link's own text stays
    other = str(api.schedule_job("demo.echo", {"link": "other"}, timedelta(hours=1)))
    box = tab.get_by_label(re.compile(r"^Job id"))
    box.fill(other)
    box.press("Enter")
    expect(tab.get_by_role("heading", name=f"Job {other}")).to_be_visible()
    wait_for(lambda: tab.url.endswith(f"/jobs?id={other}"), 20, "the URL to name the job")
    tab.goto(f"{system.base}/jobs?status=failed&type=demo.fail&queue=default&q=lesson")
    search = tab.get_by_label("Search (job id or text in the payload)")
    expect(search).to_have_value("lesson", timeout=LOAD)
    expect(tab.locator('[data-testid="stMultiSelect"]')).to_contain_text("failed")
    idle(tab)
    search.fill("exam")
    search.press("Enter")
    wait_for(lambda: "q=exam" in tab.url, 20, "the URL to follow the search box")
    tab.reload()
    expect(search).to_have_value("exam", timeout=LOAD)
    expect(tab.locator('[data-testid="stMultiSelect"]')).to_contain_text("failed")
    assert "type=demo.fail" in tab.url and "queue=default" in tab.url
    count = tab.get_by_role("button", name=re.compile(r"^cancelled [\d,]+$"))
    click_until(tab, count, lambda: "status=cancelled" in tab.url, "the URL to show the status")
    go(tab, "Overview")
    go(tab, "Jobs")  # back through the sidebar: the filters come back, into the URL too
    expect(search).to_have_value("exam")
    expect(tab.locator('[data-testid="stMultiSelect"]')).to_contain_text("cancelled")
    wait_for(lambda: "q=exam" in tab.url and "status=cancelled" in tab.url, 20, "the URL")


def test_an_analyst_opens_a_shared_job_link_read_only(
    browser: Any, system: System, analyst: str
) -> None:
    """A link shared with a colleague who is not signed in: the login form, then the job
    (read-only for an analyst); an admin-only page stays refused."""
    job_id = str(api.schedule_job("demo.echo", {"analyst": True}, timedelta(hours=1)))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(f"{system.base}/jobs?id={job_id}")
        _log_in(tab, analyst, ANALYST_PASSWORD)
        expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible(timeout=LOAD)
        wait_for(lambda: f"/jobs?id={job_id}" in tab.url, 10, "the job's URL")
        expect(
            tab.get_by_text(
                "Read-only: cancelling, retrying, running now and deleting need the admin role."
            )
        ).to_be_visible()
        actions = re.compile(r"^(Cancel|Retry|Run|Delete) job")
        expect(tab.get_by_role("button", name=actions)).to_have_count(0)
        expect(tab.get_by_role("button", name=re.compile(r"all matching"))).to_have_count(0)
        wait_for(lambda: _session_cookie(tab), 10, "the session cookie")  # written after the login
        tab.goto(f"{system.base}/audit")  # an admin-only page is not there for an analyst
        expect(tab.get_by_text("Signed in as")).to_be_visible(timeout=LOAD)
        expect(tab.get_by_role("heading", name="Audit")).to_have_count(0)
        assert api.get_job(job_id)["status"] == "scheduled"
    finally:
        context.close()


class _Tracker(BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[tuple[int, list[str]]]:
    """A tiny local HTTP server that records every request it gets."""
    paths: list[str] = []
    handler = type("Tracker", (_Tracker,), {"paths": paths})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_link_in_a_job_error_fetches_nothing(
    console_page: Any, tracker: tuple[int, list[str]]
) -> None:
    """Issue 17: a job whose error, traceback, progress message and idempotency key hold
    Markdown image links and HTML is opened and its error expanded: the browser requests
    nothing from the image server (a control request from the page proves it could)."""
    port, paths = tracker
    image = f"![x](http://127.0.0.1:{port}/track.png)"
    html = f'<img src="http://127.0.0.1:{port}/track-html.png">'
    job_id = api.schedule_job(
        "demo.echo", {"note": image}, timedelta(hours=1), idempotency_key=f"key {image}"
    )
    now = datetime.now(UTC)
    error = f"DemoFailure: {image} {html}"
    with write(engine_for(get_settings().ledger_url)) as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="failed",
                attempt=1,
                started_at=now,
                finished_at=now,
                last_error=error,
                progress=0.4,
                progress_message=f"step {image}",
                errors=[
                    {
                        "at": now.isoformat(),
                        "attempt": 1,
                        "error": error,
                        "traceback": f"Traceback (most recent call last):\n{error}\n",
                        "worker": str(uuid.uuid4()),
                        "kind": "error",
                    }
                ],
            )
        )
    tab = console_page
    go(tab, "Jobs")
    box = tab.get_by_label(re.compile(r"^Job id"))
    box.fill(str(job_id))
    box.press("Enter")
    expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    expect(tab.get_by_text(f"step {image}", exact=True)).to_be_visible()  # progress, as text
    tab.locator('[data-testid="stExpander"] summary', has_text="Attempt 1").click()
    code = tab.locator('[data-testid="stCode"]', has_text="Traceback")
    expect(code).to_contain_text(image)
    expect(tab.locator('[data-testid="stExpander"] summary', has_text="Attempt 1")).to_contain_text(
        image
    )
    tab.evaluate(f"() => fetch('http://127.0.0.1:{port}/control.png', {{mode: 'no-cors'}})")
    wait_for(lambda: "/control.png" in paths, 10, "the control request")
    assert [p for p in paths if p != "/control.png"] == []
    expect(tab.locator(f'img[src*=":{port}/"]')).to_have_count(0)
    expect(tab.locator(f'a[href*=":{port}/"]')).to_have_count(0)


def test_the_opened_job_shows_its_log_as_it_grows(console_page: Any, system: System) -> None:
    """The job detail's log in the browser: lines are text (a Markdown image fetches
    nothing), new lines appear with the live refresh, the search box narrows them."""
    from db import job_logs
    from db.job_logs import LogLine

    tab = console_page
    job_id = api.schedule_job("demo.echo", {"log": True}, timedelta(hours=1))
    engine = engine_for(get_settings().ledger_url)

    def log(message: str) -> None:
        with write(engine) as conn:
            job_logs.insert_lines(conn, [LogLine(job_id, 1, datetime.now(UTC), "INFO", message)])

    log("grading 40 submissions ![x](http://127.0.0.1:9/pixel.png)")
    wait_for(lambda: _session_cookie(tab), 10, "the session cookie")
    tab.goto(f"{system.base}/jobs?id={job_id}")
    expect(tab.get_by_text("Log (1 line(s))")).to_be_visible(timeout=LOAD)
    expect(tab.get_by_text("![x](http://127.0.0.1:9/pixel.png)")).to_be_visible()
    log("submission 7 has no file")  # the job goes on logging: the next refresh shows it
    expect(tab.get_by_text("Log (2 line(s))")).to_be_visible(timeout=LOAD)
    search = tab.get_by_label("Search the log")
    search.fill("NO FILE")
    search.press("Enter")
    expect(tab.get_by_text("Log (1 line(s) matching)")).to_be_visible(timeout=LOAD)
    expect(tab.get_by_text("grading 40 submissions")).to_have_count(0)
