"""Riding out a ledger (PostgreSQL) or Redis that is down, restarting or still starting up.

A process that needs a server waits for it instead of exiting: :func:`wait_until_reachable`
tries a probe with backoff (0.5 s doubling to 5 s) until it succeeds, logs one warning per
outage (``ledger unreachable, waiting: …``) and one info line when the server answers again
(``ledger is back after 3.2s``), and gives up at once when its stop event is set
(:func:`stop_on_signals`: SIGTERM, SIGINT or SIGHUP). :class:`Outage` is the same one-line
bookkeeping for threads that keep retrying on their own (a worker's queue reads).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import psycopg
import redis
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5  # seconds before the second try
MAX_DELAY = 5.0  # the delay doubles up to this
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ledger_unreachable(exc: BaseException) -> bool:
    """An error that waiting for the ledger may cure: no connection (refused, cut by a restart,
    the server starting up or shutting down), as opposed to a failing statement. The same
    rule as a worker's retries (``WorkerRuntime._with_db_retry``)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (
            isinstance(exc, OperationalError) and "no such" not in str(exc.orig)
        )  # SQLite reports a missing table/column (schema mismatch) as operational
    return isinstance(exc, DisconnectionError | psycopg.OperationalError)


def redis_unreachable(exc: BaseException) -> bool:
    """An error that waiting for Redis may cure (refused, reset, timed out, loading)."""
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)


def one_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy's run over several lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Outage:
    """One warning when ``name`` stops answering, one info line when it answers again,
    however many threads and tries see it in between."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger = log,
        *,
        down: str = "%s unreachable, waiting: %s",
        still: str = "%s still unreachable: %s",
        back: str = "%s is back after %.1fs",
    ) -> None:
        self.name = name
        self.logger = logger
        # formatted with the name and the error's first line (``still``: at DEBUG, each
        # further failure) or the outage's seconds (``back``)
        self._down_message = down
        self._still_message = still
        self._back_message = back
        self._lock = threading.Lock()
        self._since: float | None = None  # time.monotonic() of the first failure

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> bool:
        """A try failed with ``exc``; True (and logged) when it starts an outage."""
        with self._lock:
            started = self._since is None
            if started:
                self._since = time.monotonic()
        if not started:
            self.logger.debug(self._still_message, self.name, one_line(exc))
            return False
        self.logger.warning(self._down_message, self.name, one_line(exc))
        return True

    def answered(self) -> None:
        """A try succeeded: ends the outage, if there is one."""
        if self._since is None:  # the common case: one attribute read
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self.logger.info(self._back_message, self.name, time.monotonic() - since)


def wait_until_reachable(
    probe: Callable[[], object],
    name: str,
    *,
    unreachable: Callable[[BaseException], bool],
    stop: threading.Event | None = None,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
    logger: logging.Logger = log,
) -> bool:
    """Call ``probe`` until it returns, then return True. While it raises an error that
    ``unreachable`` accepts, try again after ``first_delay`` doubling to ``max_delay``
    seconds: one warning for the outage, one info line when it is over. Return False as soon
    as ``stop`` is set (before or while waiting). Any other error is raised."""
    outage = Outage(name, logger)
    stop = stop if stop is not None else threading.Event()
    delay = first_delay
    while not stop.is_set():
        try:
            probe()
        except Exception as exc:
            if not unreachable(exc):
                raise
            outage.failed(exc)
            if stop.wait(delay):
                break
            delay = min(delay * 2, max_delay)
            continue
        outage.answered()
        return True
    logger.info("stopped while waiting for %s", name)
    return False


@contextmanager
def stop_on_signals(
    stop: threading.Event | None = None, signals: tuple[signal.Signals, ...] = STOP_SIGNALS
) -> Iterator[threading.Event]:
    """An event that ``signals`` set while inside the block; the previous handlers are back
    afterwards. Outside the main thread no handler can be installed: the event is only
    returned."""
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        # Event.set() takes the event's lock, which the interrupted main thread may hold
        # inside stop.wait(): set it from another thread
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def wait_for_servers(
    ledger_probe: Callable[[], object],
    redis_client: redis.Redis | None,
    stop: threading.Event | None = None,
) -> bool:
    """Wait for Redis (when the transport is Redis: ``redis_client``), then for the ledger
    (``ledger_probe`` succeeds). False if ``stop`` was set first."""
    if redis_client is not None and not wait_until_reachable(
        redis_client.ping, "Redis", unreachable=redis_unreachable, stop=stop
    ):
        return False
    return wait_until_reachable(ledger_probe, "ledger", unreachable=ledger_unreachable, stop=stop)
