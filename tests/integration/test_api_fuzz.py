"""Fuzz the job API: every call succeeds or raises a documented QueueError, and a call that
raises writes nothing."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from db.engine import engine_for, read
from db.models import Job
from tasks import api
from tasks.errors import QueueError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["'; DROP TABLE queue_jobs; --", "\x00", "\ud800", "%_\\", "ß😀"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
types = st.sampled_from(["demo.echo", "demo.sleep", "demo.fail", "nope", "", "demo.echo'--"])
priorities = st.one_of(st.none(), st.integers(-5, 15), st.text(max_size=2), st.floats())
#: declared queues (the built-in types'), undeclared names and invalid ones
queues = st.none() | st.sampled_from(["default", "reports", "system"]) | st.text(max_size=5)


def count(url: str) -> int:
    with read(engine_for(url)) as conn:
        return conn.execute(select(func.count()).select_from(Job)).scalar_one()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(job_type=types, data=json_values, priority=priorities, queue=queues)
def test_submit_succeeds_or_raises_a_queue_error(
    use_ledger: str, job_type: str, data: Any, priority: Any, queue: Any
) -> None:
    before = count(use_ledger)
    try:
        job_id = api.submit_job(job_type, data, priority, queue=queue)
    except QueueError as exc:
        assert str(exc)
        assert count(use_ledger) == before
        return
    stored = api.get_job(job_id)
    assert stored["type"] == job_type
    assert count(use_ledger) == before + 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    search=st.text(max_size=20) | st.sampled_from(["\x00", "\ud800", "%", "\\"]),
    status=st.none() | st.text(max_size=10),
)
def test_get_jobs_never_breaks(use_ledger: str, search: str, status: Any) -> None:
    with contextlib.suppress(QueueError):
        api.get_jobs(search=search, status=status or None, limit=5)
