"""The Periodic page in a real browser (issue 20, part 3): an admin pauses a periodic job after
a confirmation that names it, sees it flagged PAUSED, and resumes it; both are audited and
stored in the ledger the running maintainer reads."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from db.engine import engine_for, read
from db.models import AuditEntry
from db.settings import get_settings
from tasks.steering import list_periodic
from tests.browser.conftest import go, idle

DIGEST = "edurise.outbox_digest"


def paused() -> bool:
    return next(r["paused"] for r in list_periodic() if r["name"] == DIGEST)


def test_pause_and_resume_a_periodic_job_in_the_browser(console_page: Any) -> None:
    tab = console_page
    go(tab, "Periodic")
    expect(tab.get_by_text("Pause or resume")).to_be_visible()
    tab.get_by_label("Reason (for pausing)").fill("exam week")
    tab.get_by_label("Reason (for pausing)").press("Enter")
    tab.get_by_role("button", name=f"Pause {DIGEST}…").click()
    confirm = tab.locator('[data-testid="stAlert"]', has_text="Pause periodic job")
    expect(confirm).to_contain_text(DIGEST)  # the confirmation names the periodic job
    expect(confirm).to_contain_text("exam week")
    assert not paused()  # nothing happens before the confirmation
    tab.get_by_role("button", name=f"Yes, pause {DIGEST}").click()
    expect(tab.get_by_text(f"Paused periodic job {DIGEST}.")).to_be_visible()
    assert paused()
    expect(tab.get_by_role("button", name=f"Resume {DIGEST}…")).to_be_visible()
    idle(tab)  # the pause reruns the page once more (its flash message): click after that
    tab.get_by_role("button", name=f"Resume {DIGEST}…").click()
    expect(tab.locator('[data-testid="stAlert"]', has_text="Resume periodic job")).to_contain_text(
        DIGEST
    )
    tab.get_by_role("button", name=f"Yes, resume {DIGEST}").click()
    expect(tab.get_by_text(f"Resumed periodic job {DIGEST}.")).to_be_visible()
    assert not paused()
    with read(engine_for(get_settings().ledger_url)) as conn:
        rows = conn.execute(
            select(AuditEntry.action, AuditEntry.target, AuditEntry.username)
            .where(AuditEntry.action.like("periodic_%"))
            .order_by(AuditEntry.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("periodic_pause", DIGEST, "alice"),
        ("periodic_resume", DIGEST, "alice"),
    ]
