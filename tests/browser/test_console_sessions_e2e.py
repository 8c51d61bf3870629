"""A console session ends in every open tab (issue 17), in a real browser: logging out in one
tab, or ``queuectl user passwd``, logs the other open tabs out at their next click (before,
they stayed signed in until a reload)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from console import auth, browser_sessions, commands
from tests.browser.conftest import ADMIN, ADMIN_PASSWORD, System
from tests.processes import wait_for


@pytest.fixture
def context(browser: Any, system: System) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


def _cookie(ctx: Any) -> str | None:
    found = [c["value"] for c in ctx.cookies() if c["name"] == browser_sessions.COOKIE]
    return found[0] if found else None


def _log_in(ctx: Any, base: str) -> Any:
    tab = ctx.new_page()
    tab.goto(base)
    tab.get_by_role("textbox", name="Username").fill(ADMIN)
    tab.get_by_role("textbox", name="Password").fill(ADMIN_PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_role("heading", name="Overview").wait_for()
    wait_for(lambda: _cookie(ctx), 10, "the session cookie")
    return tab


def _second_tab(ctx: Any, base: str) -> Any:
    """Another tab of the same browser: it resumes the session from the cookie."""
    tab = ctx.new_page()
    tab.goto(base)
    expect(tab.get_by_text("Signed in as")).to_be_visible()
    return tab


def _next_click_shows_the_login_form(tab: Any) -> None:
    tab.locator('[data-testid="stSidebarNav"] a', has_text="Jobs").first.click()
    tab.get_by_role("button", name="Log in").wait_for()
    expect(tab.get_by_text(auth.SESSION_ENDED)).to_be_visible()
    expect(tab.get_by_text("Signed in as")).to_have_count(0)


def test_logging_out_in_one_tab_ends_the_other(context: Any, system: System) -> None:
    first = _log_in(context, system.base)
    second = _second_tab(context, system.base)
    first.get_by_role("button", name="Log out").click()
    first.get_by_role("button", name="Log in").wait_for()
    _next_click_shows_the_login_form(second)


def test_user_passwd_ends_every_open_tab(context: Any, system: System) -> None:
    first = _log_in(context, system.base)
    second = _second_tab(context, system.base)
    result = CliRunner().invoke(  # the same password again: only the sessions change
        commands.user_app, ["passwd", ADMIN, "--password-stdin"], input=f"{ADMIN_PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "1 console session(s) ended: open tabs are logged out" in result.output
    _next_click_shows_the_login_form(first)
    _next_click_shows_the_login_form(second)
