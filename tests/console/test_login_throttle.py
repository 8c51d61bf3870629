"""Login throttling (issue 17): attempts are reserved in the ledger before the password is
verified, per client address, per user and per (user, client); the delay grows with each
attempt and ends by itself, so a stranger cannot lock the rightful user out from another
address; ``queuectl user unlock`` clears it; refused logins reach the audit log at most once
per user, client and minute, with a count."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from console import client_address, commands, login_throttle, passwords
from console.login_throttle import LIMITS, Limit, LoginThrottled
from db import audit
from db import login_throttle as throttle_sql
from db.engine import engine_for, read
from tests.console.conftest import PASSWORD

ALICE = {"name": "alice", "role": "admin"}
STRANGER = "198.51.100.66"
HOME = "192.0.2.7"
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> str:
    """The console ledger on each database (alice: admin, bob: analyst)."""
    name = "console_db" if request.param == "sqlite" else "console_pg"
    return str(request.getfixturevalue(name))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every argon2 verification made (thread-safe)."""
    calls: list[str] = []
    lock = threading.Lock()
    original = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str, password: str) -> bool:
        with lock:
            calls.append(password)
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    yield calls


def _guess(url: str, client: str, at: datetime, password: str = "wrong guess!!") -> float | None:
    """One login of alice; the delay it was refused with, or None when it was checked."""
    try:
        passwords.authenticate(engine_for(url), "alice", password, client=client, now=at)
    except LoginThrottled as exc:
        return exc.retry_after
    return None


def test_concurrent_guesses_are_reserved_before_any_check(
    ledger: str, verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 guesses at once against a limit of 5: at most 5 passwords are verified (before,
    the throttle counted refusals after verifying, so all 12 were checked)."""
    monkeypatch.setitem(LIMITS, "pair", Limit(free=5, base=600.0, cap=900.0))
    engine = engine_for(ledger)
    start = threading.Barrier(12)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess() -> None:
        start.wait(timeout=30)
        try:
            result = passwords.authenticate(engine, "alice", "wrong guess!!", client=STRANGER)
            outcome = "refused" if result is None else "accepted"
        except LoginThrottled:
            outcome = "throttled"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["refused"] * 5 + ["throttled"] * 7
    assert len(verifications) == 5


def test_the_delay_grows_with_each_attempt_and_ends_by_itself(ledger: str) -> None:
    pair = LIMITS["pair"]
    at = T0
    for _ in range(pair.free):
        assert _guess(ledger, STRANGER, at) is None  # checked and refused
    expected = pair.base
    for _ in range(4):  # each attempt after the free ones waits twice as long
        assert _guess(ledger, STRANGER, at) == pytest.approx(expected)
        at += timedelta(seconds=expected)
        assert _guess(ledger, STRANGER, at) is None
        expected *= 2
    # no hard lock: once the delay is over, the right password logs in
    at += timedelta(seconds=expected)
    user = passwords.authenticate(engine_for(ledger), "alice", PASSWORD, client=STRANGER, now=at)
    assert user == ALICE


def test_a_stranger_cannot_lock_the_user_out_from_another_address(ledger: str) -> None:
    """Before, 5 wrong passwords from anywhere locked the username for 15 minutes."""
    at, checked = T0, 0
    while checked < 16:  # a stranger guesses as fast as the throttle lets them (~47 min)
        wait = _guess(ledger, STRANGER, at)
        if wait is None:
            checked += 1
        else:
            at += timedelta(seconds=wait)
    assert _guess(ledger, STRANGER, at) == LIMITS["pair"].cap  # the stranger is delayed
    with read(engine_for(ledger)) as conn:
        counts = {r["scope"]: r["failures"] for r in throttle_sql.rows_of(conn, "alice")}
    assert counts == {"pair": 16, "user": LIMITS["pair"].free}  # one address adds at most 5
    user = passwords.authenticate(engine_for(ledger), "alice", PASSWORD, client=HOME, now=at)
    assert user == ALICE  # at once, from the user's own address (never logged in from before)


def test_guessing_from_many_addresses_is_delayed_except_for_a_trusted_client(
    ledger: str,
) -> None:
    engine = engine_for(ledger)
    assert passwords.authenticate(engine, "alice", PASSWORD, client=HOME, now=T0) == ALICE
    user_limit = LIMITS["user"]
    at = T0 + timedelta(minutes=1)
    for i in range(user_limit.free):  # one guess from each of many addresses
        assert _guess(ledger, f"10.9.{i // 250}.{i % 250}", at) is None
    assert _guess(ledger, "10.99.0.1", at) == pytest.approx(user_limit.base)
    # the address alice logged in from before is not delayed by the others' guesses
    assert passwords.authenticate(engine, "alice", PASSWORD, client=HOME, now=at) == ALICE


def test_spraying_many_users_from_one_address_is_delayed(ledger: str) -> None:
    engine = engine_for(ledger)
    client_limit = LIMITS["client"]
    for i in range(client_limit.free):
        assert passwords.authenticate(engine, f"user{i}", "x", client=STRANGER, now=T0) is None
    with pytest.raises(LoginThrottled):
        passwords.authenticate(engine, "bob", PASSWORD, client=STRANGER, now=T0)
    assert passwords.authenticate(engine, "bob", PASSWORD, client=HOME, now=T0) is not None


def test_user_unlock_clears_the_delay_at_once(ledger: str, settings_env: dict[str, str]) -> None:
    at = datetime.now(UTC)
    for _ in range(LIMITS["pair"].free):
        _guess(ledger, STRANGER, at)
    assert _guess(ledger, STRANGER, at) is not None
    result = CliRunner().invoke(commands.user_app, ["unlock", "alice"])
    assert result.exit_code == 0, result.output
    assert "user alice unlocked (2 login counter(s) cleared)" in result.output
    user = passwords.authenticate(engine_for(ledger), "alice", PASSWORD, client=STRANGER, now=at)
    assert user == ALICE


def test_refused_logins_are_audited_once_per_user_client_and_minute(ledger: str) -> None:
    """Before, every refusal was one audit row (~7 rows/s from one thread)."""
    engine = engine_for(ledger)
    for second in range(0, 50, 10):  # 5 refusals within a minute
        _guess(ledger, STRANGER, T0 + timedelta(seconds=second))
    assert _guess(ledger, STRANGER, T0 + timedelta(seconds=41)) is not None  # throttled
    _guess(ledger, HOME, T0 + timedelta(seconds=55))  # another client: its own entry
    _guess(ledger, STRANGER, T0 + timedelta(minutes=10))  # a later minute: a new entry
    with read(engine) as conn:
        rows = audit.entries(conn, username="alice", action="login", outcome="denied")
    got = sorted((r["target"], r["details"]["count"], r["details"]["throttled"]) for r in rows)
    assert got == [(HOME, 1, 0), (STRANGER, 1, 0), (STRANGER, 6, 1)]


def test_the_login_form_throttles_by_the_browser_address(
    console_db: str, make_app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AppTest cannot seed ``st.context.ip_address`` (its client is a mock, and loopback
    reads as None), so the address lookup is replaced here; ``from_request`` is tested below."""
    monkeypatch.setattr(client_address, "current", lambda: STRANGER)
    at = make_app(None).run()
    for _ in range(LIMITS["pair"].free):
        at.text_input(key="login_user").input("alice")
        at.text_input(key="login_password").input("wrong guess!!")
        at = at.button[0].click().run()
        assert at.error[0].value == "Invalid username or password"
    at.text_input(key="login_user").input("alice")
    at.text_input(key="login_password").input(PASSWORD)
    at = at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value.startswith("Too many failed logins: try again in")
    assert "user" not in at.session_state
    with read(engine_for(console_db)) as conn:
        [pair] = [r for r in throttle_sql.rows_of(conn, "alice") if r["scope"] == "pair"]
    assert pair["client"] == STRANGER and pair["failures"] == LIMITS["pair"].free


def test_the_client_address_comes_from_the_connection_or_a_trusted_proxy_header() -> None:
    assert client_address.from_request("203.0.113.5", {}, None) == "203.0.113.5"
    assert client_address.from_request(None, {}, None) == passwords.LOCAL_CLIENT
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.5"}  # the client wrote the first one
    assert client_address.from_request("10.0.0.2", headers, None) == "10.0.0.2"
    assert client_address.from_request("10.0.0.2", headers, "X-Forwarded-For") == "203.0.113.5"
    assert client_address.from_request("10.0.0.2", {}, "X-Forwarded-For") == "10.0.0.2"


def test_counts_are_forgotten_after_an_idle_hour(ledger: str) -> None:
    for _ in range(LIMITS["pair"].free):
        _guess(ledger, STRANGER, T0)
    assert _guess(ledger, STRANGER, T0) is not None
    later = T0 + login_throttle.FORGET
    assert _guess(ledger, STRANGER, later) is None
    with read(engine_for(ledger)) as conn:
        [pair] = [r for r in throttle_sql.rows_of(conn, "alice") if r["scope"] == "pair"]
    assert pair["failures"] == 1
