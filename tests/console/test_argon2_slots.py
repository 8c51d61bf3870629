"""At most N argon2 checks at once per console process (issue 17): a login flood waits for a
slot, and one that waits longer than the bound is told to try again (its attempt is given
back to the throttle). The memory this saves is measured by ``python -m bench login_memory``
(docs/security.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from console import argon2_slots, passwords
from console.argon2_slots import LoginBusy
from db import login_throttle as throttle_sql
from db.engine import engine_for, read
from tests.console.conftest import PASSWORD


class HeldChecks:
    """Replaces argon2 verification by one that blocks until released, counting how many run
    at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def verify(self, _hasher: PasswordHasher, _hash: str, password: str) -> bool:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            assert self.release.wait(timeout=30), "never released"
            return password == PASSWORD
        finally:
            with self._lock:
                self.inside -= 1

    def wait_inside(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.inside < n:
            assert time.monotonic() < deadline, f"{n} checks never started ({self.inside})"
            time.sleep(0.01)  # a poll with a deadline, not a synchronisation sleep


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldChecks]:
    checks = HeldChecks()
    monkeypatch.setattr(PasswordHasher, "verify", lambda self, h, pw: checks.verify(self, h, pw))
    yield checks
    checks.release.set()
    argon2_slots.reset()


def _login_in_thread(url: str, client: str, results: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(passwords.authenticate(engine_for(url), "bob", PASSWORD, client=client))
        except LoginBusy as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_at_most_n_checks_run_at_once(console_db: str, held: HeldChecks) -> None:
    """Before, all 8 ran at once (each one 64 MiB with the production hasher)."""
    argon2_slots.configure(2, wait=30.0)
    results: list[object] = []
    threads = [_login_in_thread(console_db, f"10.0.0.{i}", results) for i in range(8)]
    held.wait_inside(2)
    held.release.set()
    for t in threads:
        t.join(timeout=30)
    assert held.most == 2
    assert results == [{"name": "bob", "role": "analyst"}] * 8


def test_a_login_that_waits_too_long_is_told_to_try_again(
    console_db: str, held: HeldChecks
) -> None:
    argon2_slots.configure(1, wait=0.2)
    results: list[object] = []
    first = _login_in_thread(console_db, "10.0.0.1", results)
    held.wait_inside(1)
    with pytest.raises(LoginBusy, match="try again in a few seconds"):
        passwords.authenticate(engine_for(console_db), "bob", PASSWORD, client="10.0.0.2")
    with read(engine_for(console_db)) as conn:  # the unchecked attempt was given back
        counts = {
            (r["scope"], r["client"]): r["failures"] for r in throttle_sql.rows_of(conn, "bob")
        }
    assert counts[("pair", "10.0.0.2")] == 0
    held.release.set()
    first.join(timeout=30)
    assert results == [{"name": "bob", "role": "analyst"}]


def test_the_slots_default_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from db.settings import get_settings

    monkeypatch.setenv("QUEUE_CONSOLE_PASSWORD_CHECKS", "3")
    monkeypatch.setenv("QUEUE_CONSOLE_PASSWORD_CHECK_WAIT", "1.5")
    get_settings.cache_clear()
    argon2_slots.reset()
    try:
        slots = argon2_slots.slots()
        assert (slots.limit, slots.wait) == (3, 1.5)
    finally:
        get_settings.cache_clear()
        argon2_slots.reset()
