"""End-to-end tests use the `processes` fixture from tests/conftest.py, and `embedded` below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, Processes, processes_for, wait_for

__all__ = ["ROOT", "Processes", "wait_for"]


@pytest.fixture
def embedded(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Processes]:
    """Processes on the embedded default (SQLite ledger, SQLite transport: no delivery
    marks, workers claim each attempt in the ledger), migrated."""
    procs = processes_for(settings_env, monkeypatch, tmp_path)
    try:
        assert procs.cli("migrate").returncode == 0
        yield procs
    finally:
        procs.stop_all()
