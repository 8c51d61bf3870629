"""At most N argon2 computations at once per console process.

Each argon2id verification (or hash) of the default profile takes about 64 MiB for its
duration, and ``argon2-cffi`` releases the GIL while it runs, so a login flood used to grow
the console by 64 MiB per concurrent login. A login takes a slot first; when none frees up
within ``wait`` seconds it is refused with "try again" (``LoginBusy``) instead of queueing
without bound. Settings: ``QUEUE_CONSOLE_PASSWORD_CHECKS`` (N, default 2) and
``QUEUE_CONSOLE_PASSWORD_CHECK_WAIT`` (seconds, default 5).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from console.login_throttle import LoginRefused
from console.settings import get_console_settings


class LoginBusy(LoginRefused):
    """Every argon2 slot stayed taken for the whole wait."""

    def __init__(self) -> None:
        super().__init__("The console is busy checking other logins: try again in a few seconds.")


class Slots:
    def __init__(self, limit: int, wait: float) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.wait = wait
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block; raises ``LoginBusy`` after ``wait`` seconds."""
        if not self._semaphore.acquire(timeout=self.wait):
            raise LoginBusy()
        try:
            yield
        finally:
            self._semaphore.release()


_lock = threading.Lock()
_slots: Slots | None = None


def slots() -> Slots:
    """The process's slots, sized from the settings at first use."""
    global _slots
    with _lock:
        if _slots is None:
            settings = get_console_settings()
            _slots = Slots(
                settings.queue_console_password_checks,
                settings.queue_console_password_check_wait,
            )
        return _slots


def configure(limit: int, wait: float) -> Slots:
    """Replace the process's slots (tests and the memory benchmark)."""
    global _slots
    with _lock:
        _slots = Slots(limit, wait)
        return _slots


def reset() -> None:
    """Size the slots from the settings again at next use."""
    global _slots
    with _lock:
        _slots = None
