"""``queuectl maintainer``: runs the maintenance loops; woken by LISTEN/NOTIFY on PostgreSQL,
polling on SQLite. Any number may run at once (advisory locks + guarded writes)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from db.driver import driver_for
from db.engine import engine_for, read
from db.notify import Listener
from db.settings import Settings
from tasks import registry
from tasks.alerts.settings import get_alert_settings
from tasks.maintenance import MaintenanceLoop
from tasks.maintenance.alerts import AlertEvaluator, alerts_config
from tasks.maintenance.dispatcher import Dispatcher, DispatcherConfig
from tasks.maintenance.heartbeat import HeartbeatConfig, MaintainerHeartbeat
from tasks.maintenance.periodic import PeriodicConfig, PeriodicEnqueuer
from tasks.maintenance.reconciler import Reconciler, ReconcilerConfig
from tasks.maintenance.rescuer import Rescuer, RescuerConfig
from tasks.maintenance.stager import Stager, StagerConfig
from tasks.service_wait import (
    Outage,
    ledger_unreachable,
    redis_unreachable,
    wait_for_servers,
)
from tasks.transport.broker import LedgerRedisStorage, make_huey, storage_of

log = logging.getLogger(__name__)

BACKLOG_PAUSE = 0.005  # seconds between window checks while the window is the limit


class Maintainer:
    def __init__(self, settings: Settings) -> None:
        registry.load_job_modules(settings.job_modules)
        self.settings = settings
        self.engine = engine_for(settings.ledger_url)
        storage = storage_of(make_huey(settings))
        self.redis = storage.conn if isinstance(storage, LedgerRedisStorage) else None
        poll = settings.queue_poll_seconds
        self.dispatcher = Dispatcher(
            self.engine,
            storage,
            DispatcherConfig(
                settings.queue_dispatch_window, poll, fair_window=settings.queue_fair_window
            ),
        )
        self.heartbeat = MaintainerHeartbeat(
            self.engine, HeartbeatConfig(interval=settings.queue_heartbeat_seconds)
        )
        stale = settings.queue_stale_seconds
        grace = settings.queue_reconcile_grace_seconds
        self.loops: list[MaintenanceLoop] = [
            Stager(self.engine, StagerConfig(interval=poll)),
            self.dispatcher,
            Reconciler(
                self.engine,
                storage,
                ReconcilerConfig(interval=2.0, grace_seconds=grace),
            ),
            Rescuer(
                self.engine,
                RescuerConfig(interval=1.0, stale_seconds=stale, deadline_grace_seconds=stale),
            ),
            PeriodicEnqueuer(self.engine, PeriodicConfig(interval=poll)),
            AlertEvaluator(
                self.engine, alerts_config(get_alert_settings(), settings.queue_stale_seconds)
            ),
            self.heartbeat,
        ]
        self._next_run = dict.fromkeys((loop.name for loop in self.loops), 0.0)
        #: a loop that cannot reach the ledger or Redis says so once, and once when it can
        self._outages = {
            loop.name: Outage(
                loop.name,
                log,
                down="%s pass failed, will retry: %s",
                still="%s pass failed again: %s",
                back="%s pass succeeded again after %.1fs",
            )
            for loop in self.loops
        }
        self.listener = Listener(settings.ledger_url) if driver_for(self.engine).notifies else None

    def _pass(self, loop: MaintenanceLoop) -> int:
        self._next_run[loop.name] = time.monotonic() + loop.interval
        return self._logged(loop.name, loop.run_once)

    def _logged(self, name: str, run: Callable[[], int]) -> int:
        """``run()``; a failure is logged and the pass counts as having done nothing. A
        server that cannot be reached is logged once per outage of the loop, in one line."""
        outage = self._outages[name]
        try:
            done = run()
        except Exception as exc:
            if ledger_unreachable(exc) or redis_unreachable(exc):
                outage.failed(exc)
            elif isinstance(exc, SQLAlchemyError):
                log.warning("%s pass failed, will retry: %s", name, exc)
            else:
                log.exception("%s pass failed, will retry", name)
            return 0
        outage.answered()
        return done

    def _run_due(self, *, force_dispatch: bool, queues: set[str] | None = None) -> None:
        """Run every loop that is due. Woken by new jobs, the dispatcher goes first (latency),
        for just the queues the notification names when it names them; jobs the stager makes
        due are dispatched in the same round."""
        if force_dispatch and queues:
            self._logged(self.dispatcher.name, lambda: self.dispatcher.run_queues(queues))
        elif force_dispatch:
            self._pass(self.dispatcher)
        now = time.monotonic()
        staged = 0
        for loop in self.loops:
            if loop is self.dispatcher:
                due = self._next_run[loop.name] <= now or staged > 0
                if due and not (force_dispatch and staged == 0):
                    self._pass(loop)
                continue
            if self._next_run[loop.name] <= now:
                done = self._pass(loop)
                if loop.name == "stager":
                    staged = done

    def _refill_due(self) -> bool:
        try:
            return self.dispatcher.needs_refill()
        except Exception as exc:  # Redis down: the dispatcher's own pass reports it
            log.debug("window check failed: %s", exc)
            return True

    def _ping_ledger(self) -> None:
        with read(self.engine) as conn:
            conn.execute(text("SELECT 1"))

    def run(self, stop: threading.Event) -> None:
        # started while the ledger or Redis is down or starting up: wait for them
        if not wait_for_servers(self._ping_ledger, self.redis, stop):
            log.info("maintainer stopped")
            return
        log.info(
            "maintainer started (ledger: %s, transport: %s)",
            self.engine.dialect.name,
            "redis" if self.settings.redis_url else "sqlite",
        )
        woken = True
        queues: set[str] | None = None  # named by the notification that woke us
        while not stop.is_set():
            self._run_due(force_dispatch=woken, queues=queues)
            queues = None
            if self.dispatcher.backlog:  # a pass when new jobs arrive or the window drained
                if self.listener is not None:
                    queues = self.listener.wait(BACKLOG_PAUSE)
                    woken = queues is not None
                else:
                    stop.wait(BACKLOG_PAUSE)
                    woken = False
                woken = woken or self._refill_due()
                continue
            timeout = max(0.0, min(self._next_run.values()) - time.monotonic(), BACKLOG_PAUSE)
            if self.listener is not None:
                queues = self.listener.wait(min(timeout, 1.0))
                woken = queues is not None
            else:
                stop.wait(timeout)
                woken = True
        if self.listener is not None:
            self.listener.close()
        try:
            self.heartbeat.stopped()
        except Exception as exc:  # the ledger is down: the stale heartbeat says it instead
            log.debug("could not record the stop: %s", exc)
        log.info("maintainer stopped")
