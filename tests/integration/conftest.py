"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from db.settings import get_settings
from tasks import registry
from tasks.transport.broker import LedgerRedisStorage, make_huey


@pytest.fixture
def storage(pg_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> LedgerRedisStorage:
    """The Redis transport of a worker on the ``default`` queue, with the test job types."""
    monkeypatch.setenv("QUEUE_JOB_MODULES", "tests.jobs_for_tests")
    get_settings.cache_clear()
    registry.load_job_modules(["tests.jobs_for_tests"])
    storage = make_huey(get_settings(), ["default"]).storage
    assert isinstance(storage, LedgerRedisStorage)
    return storage
