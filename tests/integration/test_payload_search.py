"""A payload search on PostgreSQL answers within its budget: it reads the jobs newest first,
slice by slice of creation time, and says how far back it got when the budget ran out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from db import queries
from db.engine import engine_for, read, transaction
from db.models import Job
from db.settings import get_settings
from tasks import api

jobs = Job.__table__


@pytest.fixture
def month_of_jobs(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """300 jobs created one every 2.4 hours over the last 30 days (newest first in the
    list); the oldest one holds the word "needle", every tenth one "common"."""
    monkeypatch.setenv("QUEUE_DIRECT_DISPATCH", "false")
    get_settings.cache_clear()
    items = [
        {"type": "demo.echo", "data": {"n": i, "word": "common" if i % 10 == 0 else "plain"}}
        for i in range(299)
    ] + [{"type": "demo.echo", "data": {"n": 299, "word": "needle"}}]
    ids = api.submit_jobs(items)
    engine = engine_for(get_settings().ledger_url)
    with transaction(engine) as conn:
        for i, job_id in enumerate(ids):
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(created_at=func.now() - timedelta(hours=2.4 * i))
            )
    return [str(i) for i in ids]


def search(term: str, budget: float | None, **kw: object) -> queries.SearchedJobs:
    with read(engine_for(get_settings().ledger_url)) as conn:
        return queries.search_jobs(conn, search=term, budget_seconds=budget, **kw)  # type: ignore[arg-type]


def test_a_rare_match_a_month_back_is_found_within_a_generous_budget(
    month_of_jobs: list[str],
) -> None:
    found = search("needle", 30.0)
    assert [str(r["id"]) for r in found.rows] == [month_of_jobs[-1]]
    assert found.searched_since is None  # every job was read: the answer is exact


def test_a_full_page_of_recent_matches_is_exact(month_of_jobs: list[str]) -> None:
    found = search("common", 30.0, limit=5)
    assert [str(r["id"]) for r in found.rows] == month_of_jobs[0:50:10]  # the 5 newest
    assert found.searched_since is None
    second = search("common", 30.0, limit=5, offset=5)
    assert [str(r["id"]) for r in second.rows] == month_of_jobs[50:100:10]


def test_the_same_rows_as_the_unbudgeted_search(month_of_jobs: list[str]) -> None:
    for term in ("common", "needle", "plain", "nothing like it"):
        budgeted = search(term, 30.0, limit=40, status=["queued"])
        plain = search(term, None, limit=40, status=["queued"])
        assert budgeted.rows == plain.rows


def test_a_spent_budget_says_how_far_back_it_searched(month_of_jobs: list[str]) -> None:
    found = search("needle", 0.0)
    assert found.rows == []
    assert found.searched_since is not None  # not "no match": the old jobs were not read
    with read(engine_for(get_settings().ledger_url)) as conn:
        now = conn.execute(select(func.now())).scalar_one()
    assert found.searched_since > now - timedelta(minutes=1)


def test_a_whole_job_id_is_looked_up_whatever_the_budget(month_of_jobs: list[str]) -> None:
    found = search(month_of_jobs[-1], 0.0)
    assert [str(r["id"]) for r in found.rows] == [month_of_jobs[-1]]
    assert found.searched_since is None


def test_a_slice_past_the_budget_is_cancelled_and_the_timeout_reset(pg_url: str) -> None:
    with read(engine_for(pg_url)) as conn:
        default = conn.execute(text("SHOW statement_timeout")).scalar_one()
        with pytest.raises(OperationalError) as caught, queries._statement_timeout(conn, 0.05):
            conn.execute(text("SELECT pg_sleep(2)"))
        assert queries._cancelled(caught.value)
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == default
