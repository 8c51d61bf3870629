"""LISTEN for new jobs on PostgreSQL (the migration's trigger NOTIFYs on every insert)."""

from __future__ import annotations

import contextlib
import logging
import math
import select
import time

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "queue_jobs_inserted"
RECONNECT_SECONDS = 1.0  # while the connection is down, try to reconnect this often


class Listener:
    """Wakes the dispatcher when jobs are inserted; reconnects by itself after errors."""

    def __init__(self, sqlalchemy_url: str) -> None:
        url = make_url(sqlalchemy_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: psycopg.Connection | None = None
        self._down_since: float | None = None  # time.monotonic() of the failure, while down
        self._retry_at = 0.0

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            self._conn.execute(f"LISTEN {CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> set[str] | None:
        """Block up to ``timeout`` seconds. None if no notification arrived; else the queues
        that got due jobs, as far as the notification names them (empty: look at all).
        While the connection is down: polls (sleeps ``timeout``), reconnects at most every
        ``RECONNECT_SECONDS``, and logs the outage once and its end once."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            time.sleep(timeout)
            return None
        try:
            conn = self._connect()
            if self._down_since is not None:
                log.info(
                    "LISTEN connection is back after %.1fs", time.monotonic() - self._down_since
                )
                self._down_since = None
            # wait on the socket here (once, rounded up to a millisecond), not with
            # ``notifies(timeout=...)``: psycopg polls with the time left truncated to whole
            # milliseconds, so it spun (``poll`` with 0) through the last millisecond of
            # every wait (200 system calls a second of an idle maintainer, most of its CPU)
            poller = select.poll()  # no FD_SETSIZE limit, unlike select.select
            poller.register(conn.fileno(), select.POLLIN)
            if not poller.poll(math.ceil(timeout * 1000)):
                return None
            return self._queues_of(list(conn.notifies(timeout=0)))
        except psycopg.Error as exc:
            if self._down_since is None:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                log.warning("LISTEN connection failed (%s); polling until it is back", first)
                self._down_since = time.monotonic()
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
            self.close()
            time.sleep(timeout)
            return None

    @staticmethod
    def _queues_of(notes: list[psycopg.Notify]) -> set[str] | None:
        """The queues every notification now pending names; empty when one names none (look
        at all); None when the socket woke for something else."""
        if not notes:
            return None
        queues: set[str] = set()
        for note in notes:
            named = {q for q in note.payload.split(",") if q}
            if not named:
                return set()
            queues |= named
        return queues

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
