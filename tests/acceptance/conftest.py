"""End-to-end tests use the `processes` fixture from tests/conftest.py."""

from __future__ import annotations

from tests.processes import ROOT, Processes, wait_for

__all__ = ["ROOT", "Processes", "wait_for"]
