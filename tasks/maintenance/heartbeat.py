"""Heartbeat: the maintainer's own sign of life in ``queue_maintainers``, so the console can
tell that the loops run (and warn when no maintainer's heartbeat is fresh)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine

from db import maintainers
from db.engine import transaction


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: float = 2.0


class MaintainerHeartbeat:
    name = "heartbeat"

    def __init__(self, engine: Engine, config: HeartbeatConfig) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval
        self.id = uuid.uuid4()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()

    def run_once(self) -> int:
        with transaction(self.engine) as conn:
            maintainers.heartbeat(conn, self.id, self.hostname, self.pid)
        return 0

    def stopped(self) -> None:
        """Say this maintainer stopped (best effort: a stale heartbeat says it too)."""
        with transaction(self.engine) as conn:
            maintainers.stopped(conn, self.id)
