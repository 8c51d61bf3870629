"""``queuectl up``: migrate, then run the maintainer, one worker and the console as child
processes; restart a child that dies; on Ctrl-C or SIGTERM stop them all gracefully."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from db.engine import engine_for
from db.migrate import upgrade
from db.settings import Settings
from tasks.service_wait import ledger_unreachable, stop_on_signals, wait_until_reachable

log = logging.getLogger(__name__)
CONSOLE_APP = Path(__file__).resolve().parent.parent / "console" / "app.py"


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv)
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def children(settings: Settings, concurrency: int, with_console: bool) -> list[Child]:
    cli = [sys.executable, "-m", "queuectl.cli"]
    out = [
        Child("maintainer", [*cli, "maintainer"]),
        Child("worker", [*cli, "worker", "--concurrency", str(concurrency)]),
    ]
    if with_console and CONSOLE_APP.exists():
        out.append(Child("console", [*cli, "console"]))
    return out


def run_all(settings: Settings, *, concurrency: int, with_console: bool) -> None:
    # a ledger that is down or starting up is waited for (migrating is the probe); Ctrl-C or
    # SIGTERM meanwhile stops at once
    engine = engine_for(settings.ledger_url)
    with stop_on_signals() as stop:
        migrated = wait_until_reachable(
            lambda: upgrade(engine), "ledger", unreachable=ledger_unreachable, stop=stop
        )
    if not migrated:
        return
    if with_console:
        from console.commands import ensure_admin

        password = ensure_admin(engine_for(settings.ledger_url))
        if password:
            print(
                f"Console user 'admin' created; password (shown once): {password}",
                file=sys.stderr,
                flush=True,
            )
    mode = "embedded (SQLite)" if not settings.database_url else "PostgreSQL"
    log.info("ledger migrated; %s ledger at %s", mode, _safe_url(settings.ledger_url))
    procs = children(settings, concurrency, with_console)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for child in procs:
        child.start()
    while not stop.wait(0.5):
        for child in procs:
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            log.warning("%s exited with %s; restarting", child.name, code)
            if time.monotonic() - child.started < 2:
                time.sleep(2)  # do not spin on a child that cannot start
            child.restarts += 1
            child.start()
    log.info("stopping %s", ", ".join(c.name for c in procs))
    for child in procs:
        if child.proc and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.queue_shutdown_timeout + 10
    for child in procs:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s did not stop in time; killing it", child.name)
            child.proc.kill()
    log.info("all stopped")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
