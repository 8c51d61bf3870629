"""Stager: ``scheduled`` and ``retrying`` jobs whose time has come become ``queued``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from db.engine import read, transaction
from db.ledger import maintainer
from db.locks import try_xact_lock


@dataclass(frozen=True)
class StagerConfig:
    interval: float = 0.5
    batch: int = 5000


class Stager:
    name = "stager"

    def __init__(self, engine: Engine, config: StagerConfig) -> None:
        self.engine = engine
        self.config = config
        self.interval = config.interval

    def run_once(self) -> int:
        # one autocommit read when nothing is due (most passes), instead of a transaction
        # and its lock: an idle pass went from 0.8 to 0.2 ms of CPU
        with read(self.engine) as conn:
            if not maintainer.any_due(conn):
                return 0
        with transaction(self.engine) as conn:
            if not try_xact_lock(conn, self.name):
                return 0
            return maintainer.stage_due(conn, self.config.batch)
