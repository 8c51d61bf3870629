"""The embedded default: no DATABASE_URL, no REDIS_URL -> SQLite ledger + SqliteHuey under
QUEUE_DATA_DIR. `queuectl up` serves it; a submitted job completes within 5 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.acceptance.conftest import ROOT, wait_for


def test_queuectl_up_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "QUEUE_JOB_MODULES")
    }
    env.update({"QUEUE_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)})
    cli = [sys.executable, "-m", "queuectl.cli"]
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [*cli, "up", "--no-console"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
            )

        wait_for(lambda: (tmp_path / "var" / "ledger.db").exists(), 30, "the ledger file")
        wait_for(lambda: run("stats").returncode == 0, 30, "the migrated ledger")
        submitted = run("submit", "demo.echo", "--data", '{"x": 1}')
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        assert uuid.UUID(job_id)

        def status() -> str:
            return json.loads(run("show", job_id, "--json").stdout)["status"]

        wait_for(lambda: status() == "completed", 5, "the job to complete within 5 s")
        assert json.loads(run("show", job_id, "--json").stdout)["result"] == {"x": 1}
        assert (tmp_path / "var" / "huey.db").exists()
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=40) == 0, (tmp_path / "up.log").read_text()
