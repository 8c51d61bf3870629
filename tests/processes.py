"""Real `queuectl` worker and maintainer subprocesses, and polling with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def processes_for(
    settings_env: dict[str, str], monkeypatch: Any, log_dir: Path, **services: str
) -> Processes:
    """Processes that run the test job types with ``settings_env`` and ``services``
    (``DATABASE_URL=…, REDIS_URL=…``; none: the embedded default); this test process's
    environment and settings point at the same services."""
    from db.settings import get_settings

    env = {**settings_env, **services, "QUEUE_JOB_MODULES": "tests.jobs_for_tests"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return Processes(env, log_dir)


class Processes:
    """Starts ``queuectl`` subprocesses with the test environment; stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{args[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl.cli", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def worker(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return self.start("worker", *args, **kw)

    def maintainer(self, **kw: Any) -> subprocess.Popen[bytes]:
        return self.start("maintainer", **kw)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuectl.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )
