"""Browser end-to-end tests: ``streamlit run console/app.py`` on PostgreSQL + Redis with a
real worker and maintainer, driven by Playwright (sync API, no pytest plugin) on the Debian
``/usr/bin/chromium`` (``playwright install`` is not needed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from console import passwords
from db.engine import engine_for
from db.models import Base
from db.settings import get_settings
from tests import services
from tests.acceptance.conftest import Processes
from tests.conftest import FAST_TIMINGS

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN, ADMIN_PASSWORD = "alice", "browser-test-pw"
ROOT = Path(__file__).resolve().parents[2]
DOCS_IMG = ROOT / "docs" / "img"


def _missing(what: str, how: str) -> None:
    message = f"{what} is not available ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI requires it: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright", "make install")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"chromium at {CHROMIUM}", "apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def system(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Once per module: empty PostgreSQL + Redis, the admin user, a maintainer, a worker and
    ``streamlit run console/app.py``; the job API of this process points at the same ledger.
    Tests do not empty the tables between them: each one looks only at its own jobs."""
    redis_client = services.redis_client()  # skips locally / fails in CI when Redis is down
    redis_client.flushdb()
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in Base.metadata.sorted_tables)}"))
    log_dir = tmp_path_factory.mktemp("console-e2e")
    env = {
        **FAST_TIMINGS,
        "DATABASE_URL": pg_url,
        "REDIS_URL": services.TEST_REDIS_URL,
        "QUEUE_DATA_DIR": str(log_dir / "var"),
        passwords.FAST_ENV: "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("QUEUE_JOB_MODULES", raising=False)
        get_settings.cache_clear()
        passwords.create_user(engine, ADMIN, ADMIN_PASSWORD, "admin")
        procs = Processes(env, log_dir)
        try:
            procs.maintainer()
            procs.worker("--concurrency", "2")
            with _console(env, log_dir) as base:
                yield System(base=base, procs=procs, log_dir=log_dir)
        finally:
            procs.stop_all()
            get_settings.cache_clear()
    redis_client.flushdb()


@dataclass
class System:
    base: str
    procs: Processes
    log_dir: Path


@contextmanager
def _console(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    port = _free_port()
    log = open(log_dir / "streamlit.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "console" / "app.py"),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=log_dir,  # any folder works: app.py puts the repository on sys.path
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                "streamlit did not start:\n" + (log_dir / "streamlit.log").read_text()
            )
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def console_page(browser: Any, system: System) -> Iterator[Any]:
    """A fresh browser tab, logged in as the admin, on the Overview page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
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


def go(tab: Any, title: str) -> None:
    """Open a page through the sidebar (a URL change would start a new, logged-out session)."""
    tab.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    tab.get_by_role("heading", name=title).first.wait_for()


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/img when UPDATE_SCREENSHOTS=1 (refreshes the docs), a temp folder otherwise."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


def idle(tab: Any) -> None:
    """Wait until no script run is going on (Streamlit's "Running…" indicator is gone): a
    click that lands while a rerun replaces the page can be lost."""
    from playwright.sync_api import expect

    expect(tab.locator('[data-testid="stStatusWidget"]')).to_have_count(0)
