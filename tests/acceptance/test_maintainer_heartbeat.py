"""A running maintainer process is seen alive through its heartbeat; one that stops says so
at once, one that is killed goes stale (PostgreSQL + Redis, real maintainer processes)."""

from __future__ import annotations

import signal

from db.engine import engine_for
from db.settings import get_settings
from metrics.read.overview import maintainer_signal
from tests.acceptance.conftest import Processes, wait_for


def signal_now() -> dict[str, object]:
    return maintainer_signal(engine_for(get_settings().ledger_url))


def test_the_console_sees_maintainers_come_and_go(processes: Processes) -> None:
    assert signal_now()["alive"] is False and signal_now()["last_seen"] is None
    first = processes.maintainer()
    second = processes.maintainer()
    wait_for(lambda: signal_now()["live"] == 2, 30, "two heartbeats")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=15)
    assert signal_now()["live"] == 1  # a clean stop is recorded before the process exits
    second.kill()  # no chance to say anything: its heartbeat goes stale (3 s in tests)
    wait_for(lambda: signal_now()["alive"] is False, 30, "the killed one to go stale")
    assert signal_now()["age_seconds"] is not None
