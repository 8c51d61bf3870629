"""Maintenance loops run by ``queuectl maintainer``: one module per loop, each with a config
and a ``run_once()`` that does one pass and returns how many jobs it touched."""

from __future__ import annotations

from typing import Protocol


class MaintenanceLoop(Protocol):
    name: str
    interval: float  # seconds between passes

    def run_once(self) -> int: ...
