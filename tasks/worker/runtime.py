"""``queuectl worker``: a Huey consumer whose one task runs ledger jobs.

Each message carries a job id and the lease the dispatcher took for this delivery. A thread
worker reads the leased attempt (one primary-key SELECT, no write: a stale message, a
cancelled job or a paused queue reads nothing and the message is dropped), runs the handler,
and hands the start record and the outcome to a per-process group commit
(``tasks.worker.attempt_writer``); a process worker claims the attempt with one guarded UPDATE
before running it. Every write of an attempt is fenced on its lease. Retries, backoff and
cancellation live in the ledger; Huey's own retries stay 0. A heartbeat thread keeps
``queue_workers`` fresh so the maintainer can rescue the jobs of a worker that died.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from huey.consumer import Consumer, Scheduler, Worker, WorkerRecycle
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from db import workers as worker_sql
from db.driver import driver_for
from db.engine import HeldConnections, create_ledger_engine, read, write
from db.ledger import attempts, core
from db.settings import Settings
from tasks import registry
from tasks.payload import cap_result
from tasks.service_wait import (
    STOP_SIGNALS,
    Outage,
    one_line,
    redis_unreachable,
    stop_on_signals,
    wait_for_servers,
)
from tasks.transport.broker import (
    LedgerRedisStorage,
    QueueStorage,
    make_huey,
    storage_of,
)
from tasks.worker import job_logs
from tasks.worker.attempt_writer import AttemptWriter
from tasks.worker.job_logs import AttemptLog, JobLogWriter, ThreadAttempts
from tasks.worker.prefetch import PrefetchConfig, Prefetcher
from tasks.worker.process_pool import ProcessPool

log = logging.getLogger(__name__)
T = TypeVar("T")


PROGRESS_INTERVAL = 1.0  # seconds between progress writes of one job
CANCEL_CHECK_INTERVAL = 0.25  # seconds between cancel look-ups of one job


class AttemptChannel:
    """The ledger side of one running attempt: throttled progress writes, cancel look-ups."""

    def __init__(self, runtime: WorkerRuntime, claimed: attempts.Claimed) -> None:
        self.runtime = runtime
        self.claimed = claimed
        self._last_write = 0.0
        self._pending: tuple[float, str | None] | None = None
        self._last_check = 0.0
        self._cancelled = False

    def progress(self, fraction: float, message: str | None) -> None:
        self._pending = (fraction, message)
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL:
            try:
                self.flush()
            except DBAPIError as exc:  # best effort: the latest value is written at the end
                self._pending = (fraction, message)
                log.warning("job %s: progress not saved yet: %s", self.claimed.id, exc)

    def flush(self) -> None:
        if self._pending is None:
            return
        fraction, message = self._pending
        self._pending = None
        self._last_write = time.monotonic()
        with write(self.runtime.engine) as conn:
            attempts.set_progress(conn, self.claimed.id, self.claimed.lease, fraction, message)

    def cancel_requested(self) -> bool:
        if not self._cancelled and time.monotonic() - self._last_check >= CANCEL_CHECK_INTERVAL:
            self._last_check = time.monotonic()
            try:
                with read(self.runtime.engine) as conn:
                    self._cancelled = attempts.cancel_requested(conn, self.claimed.id)
            except DBAPIError as exc:  # a database blip must not fail the attempt
                log.warning("job %s: cancel check failed: %s", self.claimed.id, exc)
        return self._cancelled


class LeaseReads:
    """A thread worker's lease reads, each on the connection its thread holds
    (:class:`db.engine.HeldConnections`: PostgreSQL, autocommit, prepared)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connections = HeldConnections(engine)

    def leased(self, job_id: uuid.UUID, lease: int) -> attempts.Claimed | None:
        return self.connections.run(
            lambda conn: attempts.leased_dbapi(conn, self.engine.dialect, job_id, lease)
        )

    def warm(self) -> None:
        """Open the calling thread's connection and prepare its lease read (a read of no
        job), so that the thread's first job does not wait for them. Best effort: a ledger
        that is down now is reached, with retries, by the first lease read."""
        try:
            self.leased(uuid.UUID(int=0), 0)
        except DBAPIError as exc:
            log.debug("lease connection not opened ahead: %s", one_line(exc))

    def leased_many(
        self, messages: list[tuple[uuid.UUID, int]]
    ) -> dict[tuple[uuid.UUID, int], attempts.Claimed]:
        """:meth:`leased` of several messages (a fetch or read-ahead of a batch): the
        attempts that may run, by message. One prepared primary-key SELECT each, not one
        SELECT for all: with ``id = ANY(...)`` PostgreSQL spent 0.1 ms more CPU per job
        (measured: process workers 0.38 -> 0.27 ms of PostgreSQL per job, 4 % faster). The
        SELECTs of a batch go in one round trip (psycopg's pipeline mode)."""
        dialect = self.engine.dialect

        def read_all(conn: Any) -> dict[tuple[uuid.UUID, int], attempts.Claimed]:
            if len(messages) == 1:
                [(job_id, lease)] = messages
                claimed = attempts.leased_dbapi(conn, dialect, job_id, lease)
                return {} if claimed is None else {(job_id, lease): claimed}
            with conn.pipeline():
                cursors = [
                    attempts.leased_cursor_dbapi(conn, dialect, job_id, lease)
                    for job_id, lease in messages
                ]
            found = {}
            for message, cursor in zip(messages, cursors, strict=True):
                claimed = attempts.claimed_from(cursor.fetchone())
                if claimed is not None:
                    found[message] = claimed
            return found

        return self.connections.run(read_all)


class WorkerRuntime:
    """Runs one attempt of a job; shared by every worker thread of the process."""

    def __init__(self, settings: Settings, engine: Engine, worker_id: uuid.UUID) -> None:
        self.settings = settings
        self.engine = engine
        self.worker_id = worker_id
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.processed = 0
        self.failed = 0
        self.writer: AttemptWriter | None = None  # thread workers: group commit
        self.held: LeaseReads | None = None  # thread workers on PostgreSQL
        self.prefetcher: Prefetcher | None = None  # thread workers on PostgreSQL and Redis
        #: the transport's delivery gate (Redis marks each pop taken): a thread worker then
        #: reads its lease and records the start later; without it (SQLite transport, or
        #: process workers), every attempt is claimed in the ledger before it runs
        self.storage: QueueStorage | None = None
        self.reads_leases = False
        #: per-job logs (``tasks.worker.job_logs``): the writer, and each handler thread's attempt
        self.log_writer: JobLogWriter | None = None
        self.attempts = ThreadAttempts()

    def _with_db_retry(self, what: str, fn: Callable[[], T]) -> T:
        """Retry a ledger write through a database outage; give up only when stopping (the
        rescuer then re-runs the attempt once this worker's heartbeat is stale)."""
        delay = 0.1
        while True:
            try:
                return fn()
            except DBAPIError as exc:
                transient = exc.connection_invalidated or (
                    isinstance(exc, OperationalError) and "no such" not in str(exc.orig)
                )  # SQLite reports a missing table/column (schema mismatch) as operational
                if not transient or self.stopping.is_set():
                    raise
                log.warning(
                    "%s: database unavailable (%s); retrying in %.1fs", what, one_line(exc), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _count(self, *, failed: bool) -> None:
        with self._lock:
            self.processed += 1
            if failed:
                self.failed += 1

    def _begin(self, job_id: uuid.UUID, lease: int, *, retried: bool) -> attempts.Claimed | None:
        """The attempt this message may run, or None (stale, duplicate, cancelled, paused)."""
        if self.reads_leases:  # the pop marked the delivery taken: read the lease, no write
            if self.held is None:
                with read(self.engine) as conn:
                    return attempts.leased(conn, job_id, lease)
            if self.prefetcher is not None and not retried:
                claimed = self.prefetcher.leased(job_id, lease)
                if claimed is not None:
                    return claimed
            return self.held.leased(job_id, lease)
        with write(self.engine) as conn:  # claim before running
            claimed = attempts.claim(conn, job_id, self.worker_id, lease)
            if claimed is None and retried:  # did the lost reply carry our claim?
                claimed = attempts.claimed_by(conn, job_id, self.worker_id)
        if claimed is not None:
            self._release([(claimed.id, claimed.lease)])  # the ledger now refuses copies
        return claimed

    def _release(self, deliveries: list[tuple[uuid.UUID, int]]) -> None:
        """Forget delivery marks the ledger has made redundant (best effort: they expire)."""
        if self.storage is None or not self.storage.marks_deliveries:
            return
        try:
            self.storage.release(deliveries)
        except Exception as exc:
            log.debug("delivery marks not released (they expire): %s", exc)

    def _cancelled_before_start(self, claimed: attempts.Claimed) -> None:
        """A cancel was requested before this worker started the attempt: end it
        ``cancelled`` without running the handler."""

        def do_cancel() -> bool:
            with write(self.engine) as conn:
                return attempts.finish_cancelled(conn, claimed.id, claimed.lease)

        if self._with_db_retry("cancel", do_cancel):
            log.info("job %s: cancelled before it started", claimed.id)
            self._count(failed=False)
        self._release([(claimed.id, claimed.lease)])

    def run(self, job_id_text: str, lease: int) -> None:
        job_id = uuid.UUID(job_id_text)
        tries = 0

        def begin() -> attempts.Claimed | None:
            nonlocal tries
            tries += 1
            return self._begin(job_id, lease, retried=tries > 1)

        claimed = self._with_db_retry("claim", begin)
        if claimed is None:
            log.debug("job %s: nothing to run (stale message, cancelled, paused)", job_id)
            # the ledger refused this delivery: no worker holds it (the reconciler must not
            # take it for a worker's death)
            self._release([(job_id, lease)])
            return
        if claimed.cancel_requested:
            self._cancelled_before_start(claimed)
            return
        started = time.monotonic()
        if self.writer is not None and self.reads_leases:
            self.writer.started(claimed.id, claimed.lease, self.worker_id, started)
        channel = AttemptChannel(self, claimed)
        ctx = registry.JobContext(
            job_id=claimed.id,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            type=claimed.type,
            queue=claimed.queue,
            worker_id=self.worker_id,
            _cancel_probe=channel.cancel_requested,
            _progress_sink=channel.progress,
        )
        if self.log_writer is not None:
            self.attempts.begin(AttemptLog(claimed.id, claimed.attempt, self.log_writer.put))
        try:
            result = registry.run_handler(claimed.type, claimed.data, ctx)
        except BaseException as exc:  # every failure is recorded
            self.attempts.end()
            if isinstance(exc, KeyboardInterrupt):
                raise  # the worker is being interrupted: hand-back takes care of the job
            self._flush_progress(channel)
            self._ran(started)
            if not (
                isinstance(exc, registry.JobCancelled) and self._record_cancelled(claimed, started)
            ):
                self._record_failure(claimed, exc, started)
            if self.writer is not None:
                self.writer.forget(claimed.id, claimed.lease)
            return
        self.attempts.end()
        self._flush_progress(channel)
        self._ran(started)
        stored = cap_result(result)
        self._count(failed=False)
        if self.writer is not None:  # thread workers: group commit
            self.writer.completed(claimed.id, claimed.lease, self.worker_id, started, stored)
            return

        def do_complete() -> bool:
            with write(self.engine) as conn:
                return attempts.complete(conn, claimed.id, claimed.lease, stored)

        if not self._with_db_retry("complete", do_complete):
            log.warning(
                "job %s attempt %d finished but was fenced off (rescued meanwhile)",
                claimed.id,
                claimed.attempt,
            )

    def _ran(self, started: float) -> None:
        """Tell the prefetch thread how long a job ran (it reads ahead only for short ones)."""
        if self.prefetcher is not None:
            self.prefetcher.ran(time.monotonic() - started)

    def _started_ago(self, started: float) -> dict[str, Any]:
        """What an outcome written by the handler thread records about the start: a thread
        worker's start record may still be pending (process workers claimed beforehand)."""
        if not self.reads_leases:
            return {}
        return {"worker_id": self.worker_id, "started_ago": time.monotonic() - started}

    def _flush_progress(self, channel: AttemptChannel) -> None:
        try:
            channel.flush()
        except DBAPIError as exc:  # progress is best effort; the outcome write is not
            log.warning("job %s: progress not saved: %s", channel.claimed.id, exc)

    def _record_cancelled(self, claimed: attempts.Claimed, started: float) -> bool:
        def do_cancel() -> bool:
            with write(self.engine) as conn:
                return attempts.finish_cancelled(
                    conn, claimed.id, claimed.lease, **self._started_ago(started)
                )

        if not self._with_db_retry("cancel", do_cancel):
            return False  # JobCancelled raised without a cancel request: a plain failure
        log.info("job %s attempt %d stopped on a cancel request", claimed.id, claimed.attempt)
        self._count(failed=False)
        return True

    def _record_failure(
        self, claimed: attempts.Claimed, exc: BaseException, started: float
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        text = "".join(traceback.format_exception(exc))
        self._record_failure_text(claimed, error, text, started)

    def _record_failure_text(
        self, claimed: attempts.Claimed, error: str, traceback_text: str | None, started: float
    ) -> None:
        """Record a failed attempt (retried with backoff while attempts are left)."""
        delay = registry.retry_delay(claimed.type, claimed.attempt)
        entry = core.error_entry(
            claimed.attempt,
            error,
            traceback=traceback_text,
            worker=str(self.worker_id),
            kind="error",
        )

        def do_fail() -> str | None:
            with write(self.engine) as conn:
                return attempts.fail_attempt(
                    conn, claimed.id, claimed.lease, entry, delay, **self._started_ago(started)
                )

        status = self._with_db_retry("fail", do_fail)
        log.info("job %s attempt %d failed (%s) -> %s", claimed.id, claimed.attempt, error, status)
        self._count(failed=True)


_RUNTIME: WorkerRuntime | None = None


def run_job(job_id: str, lease: int) -> None:
    """The single Huey task: run the attempt of ledger job ``job_id`` leased as ``lease``."""
    assert _RUNTIME is not None, "worker runtime not initialised"
    _RUNTIME.run(job_id, lease)


class Heartbeat(threading.Thread):
    """Registers the worker and refreshes ``last_heartbeat`` every few seconds."""

    def __init__(self, runtime: WorkerRuntime, register: Callable[[], None]) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.runtime = runtime
        self.register = register
        self.stop_event = threading.Event()

    def beat(self) -> None:
        rt = self.runtime
        with write(rt.engine) as conn:
            alive = worker_sql.heartbeat(conn, rt.worker_id, rt.processed, rt.failed)
        if not alive:
            self.register()

    def run(self) -> None:
        interval = self.runtime.settings.queue_heartbeat_seconds
        while not self.stop_event.wait(interval):
            try:
                self.beat()
            except Exception as exc:  # keep beating through database outages
                log.warning("heartbeat failed: %s", one_line(exc))


#: the loggers Huey's consumer loops log to (``BaseProcess.create_logger``), kept for our copies
_WORKER_LOG = logging.getLogger("huey.consumer.Worker")
_SCHEDULER_LOG = logging.getLogger("huey.consumer.Scheduler")
#: how often the consumer looks for dead handler threads to replace (Huey's default)
HEALTH_CHECK_SECONDS = 10.0
#: how often a graceful stop looks whether the handler threads have finished
SHUTDOWN_POLL_SECONDS = 0.1


class QueueReader(Worker):
    """Huey's worker loop (``Worker.loop``, through its public attributes), except that a
    read failing because Redis is unreachable (stopped, restarting) is one warning per outage
    for all the handlers of the process, and one line when Redis answers again, instead of a
    traceback per read. Huey's backoff (up to the consumer's ``max_delay``) paces the tries."""

    redis_outage: Outage

    def loop(self, now: Any = None) -> None:
        try:
            task = self.huey.dequeue()
        except Exception as exc:
            if redis_unreachable(exc):
                self.redis_outage.failed(exc)
            else:
                _WORKER_LOG.exception("Error reading from queue")
            self.sleep()
            return
        self.redis_outage.answered()
        if task is None:
            if not self.huey.storage.blocking:
                self.sleep()
            return
        self.delay = self.default_delay
        self.task_count += 1
        try:
            self.huey.execute(task, now)
        except Exception:
            _WORKER_LOG.exception("Unhandled error during execution of task %s.", task.id)
        if self.max_tasks and self.task_count >= self.max_tasks:
            raise WorkerRecycle()


class ScheduleReader(Scheduler):
    """Huey's scheduler loop (every ``interval`` seconds it moves due ETA messages to the
    queue; ledger messages carry no ETA, so there are none), with a Redis outage logged once,
    shared with the handlers, instead of a traceback a second. Periodic tasks are off (the
    maintainer owns periodic jobs)."""

    redis_outage: Outage

    def __init__(self, huey: Any, stop_flag: Any, interval: int, periodic: bool) -> None:
        if periodic:
            raise ValueError("periodic jobs are the maintainer's: run the consumer periodic=False")
        super().__init__(huey, stop_flag, interval, periodic)
        self.next_run = time.monotonic()

    def loop(self, now: Any = None) -> None:
        current = self.next_run
        self.next_run += self.interval
        if self.next_run < time.monotonic():  # fell behind: skip an iteration, as Huey does
            self.next_run = time.monotonic()
            return
        try:
            due = self.huey.read_schedule(now)
        except Exception as exc:
            if redis_unreachable(exc):
                self.redis_outage.failed(exc)
            else:
                _SCHEDULER_LOG.exception("Error reading schedule.")
            due = []
        else:
            self.redis_outage.answered()
        for task in due:
            try:
                self.huey.enqueue(task)
            except Exception:
                _SCHEDULER_LOG.exception("Error enqueueing %s.", task)
        self.sleep_for_interval(current, self.interval)


class LedgerConsumer(Consumer):
    """Huey's consumer with SIGTERM, SIGINT and SIGHUP all graceful (finish, then hand back;
    a second signal cuts the wait short) and a Redis outage logged once
    (:class:`QueueReader`, :class:`ScheduleReader`).

    Built on Huey's public consumer API: ``start``, ``check_worker_health``, ``stop_flag``,
    ``worker_threads``, ``shutdown_timeout`` and ``notify_interrupted_tasks`` in :meth:`run`
    (Huey's own ``run`` maps SIGINT to an immediate stop and SIGHUP to a restart),
    ``worker_class``/``scheduler_class``, and the
    ``_create_worker``/``_create_scheduler`` hooks that Huey's ``Consumer`` names as the place
    for "more sophisticated overrides"."""

    worker_class = QueueReader
    scheduler_class = ScheduleReader

    def __init__(self, huey: Any, **kwargs: Any) -> None:
        self.redis_outage = Outage("Redis", log)  # before Huey's __init__ creates the workers
        super().__init__(huey, **kwargs)

    def _create_worker(self) -> Worker:
        worker = super()._create_worker()
        worker.redis_outage = self.redis_outage
        return worker

    def _create_scheduler(self) -> Scheduler:
        scheduler = super()._create_scheduler()
        scheduler.redis_outage = self.redis_outage
        return scheduler

    def run(self) -> None:
        """Start the handlers and the scheduler, replace dead handlers every
        ``HEALTH_CHECK_SECONDS`` until a stop signal, then stop gracefully: running jobs
        finish within ``shutdown_timeout``; a second signal ends the wait at once (the caller
        then hands back what did not finish).

        The signals only set events that this thread waits on. Before, the second signal
        raised ``KeyboardInterrupt`` wherever the main thread happened to be (Huey's way),
        which can land between a lock's acquire and the block that releases it; a CI run once
        saw a worker stay in its graceful wait after the second SIGTERM until a third (the
        cause was not pinned down: it did not happen again in 26 runs, under load or not)."""
        self.start()  # installs Huey's signal handlers: ours replace them below
        received: list[int] = []
        signalled = threading.Event()
        hurry = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signum)
            if signalled.is_set():  # a second signal: stop waiting for the running jobs
                hurry.set()
            signalled.set()

        for sig in STOP_SIGNALS:
            signal.signal(sig, on_signal)
        while not signalled.wait(HEALTH_CHECK_SECONDS):
            self.check_worker_health()
        log.info("received %s: stopping gracefully", signal.Signals(received[0]).name)
        self.stop_flag.set()  # the handlers take no more jobs
        if not self._wait_for_handlers(hurry):
            log.warning("stopping now: jobs still running are handed back")
        self.huey.notify_interrupted_tasks()

    def _wait_for_handlers(self, hurry: threading.Event) -> bool:
        """Wait until every handler thread has finished its job, ``shutdown_timeout`` has
        passed, or ``hurry`` is set; True when they all finished."""
        timeout = math.inf if self.shutdown_timeout is None else self.shutdown_timeout
        deadline = time.monotonic() + timeout
        while any(thread.is_alive() for _, thread in self.worker_threads):
            left = deadline - time.monotonic()
            if hurry.is_set() or left <= 0:
                return False
            hurry.wait(min(left, SHUTDOWN_POLL_SECONDS))
        return True


def run_worker(
    settings: Settings,
    queues: list[str],
    concurrency: int,
    kind: str = "thread",
) -> None:
    """Run a worker until SIGTERM/SIGINT; then hand back whatever did not finish."""
    global _RUNTIME
    registry.load_job_modules(settings.job_modules)
    # The hot path checks no connection out with a ping (one round trip per write saved):
    # a connection cut by a database restart fails its statement as "invalidated", and
    # every worker write is retried (WorkerRuntime._with_db_retry) on a fresh connection.
    engine = create_ledger_engine(
        settings.ledger_url,
        pool_pre_ping=False,
        pool_size=concurrency + 2,
        max_overflow=concurrency + 2,  # handler threads hold one connection each for reads
    )
    worker_id = uuid.uuid4()
    runtime = WorkerRuntime(settings, engine, worker_id)
    _RUNTIME = runtime

    huey = make_huey(settings, queues)
    storage = storage_of(huey)
    runtime.storage = storage
    # one start per delivery: a worker on a transport that marks each pop taken reads its
    # lease; on any other it claims the attempt in the ledger (docs/architecture.md)
    runtime.reads_leases = storage.marks_deliveries
    # start records and outcomes are group-committed (thread and process workers alike)
    runtime.writer = AttemptWriter(engine, release=runtime._release)
    runtime.writer.start()
    runtime.log_writer = JobLogWriter(engine)
    runtime.log_writer.start()
    if kind == "thread":  # job processes capture their own lines (tasks.worker.process_child)
        job_logs.capture(runtime.attempts.current)
    if driver_for(engine).prepared_hot_path and runtime.reads_leases:
        runtime.held = LeaseReads(engine)
        if kind == "thread":  # each handler thread opens its connection as it starts
            huey.on_startup("open_lease_connection")(runtime.held.warm)
    if (
        kind == "thread"
        and settings.queue_prefetch > 0
        and isinstance(storage, LedgerRedisStorage)
        and runtime.held is not None
    ):
        runtime.prefetcher = Prefetcher(
            storage.pop,
            storage.pop_ready,
            storage.give_back,
            runtime.held.leased_many,
            # very short jobs: a handler with nothing ready pops a batch for the others
            PrefetchConfig(
                depth=settings.queue_prefetch,
                handlers=concurrency,
                max_batch=settings.queue_pop_batch,
            ),
            release=runtime._release,
        )
        storage.take = runtime.prefetcher.take
        runtime.prefetcher.start()
    task = huey.task(name="run_job")(run_job)
    # Huey names a task by its module: the serializer refuses (ForgedMessage) any other name
    # than RUN_JOB_TASK, so a move of run_job that forgot the constant fails here, at start
    huey.serialize_task(task.s(str(uuid.UUID(int=0)), 1))

    hostname = socket.gethostname()

    def register() -> None:
        with write(engine) as conn:
            worker_sql.register(
                conn,
                worker_id=worker_id,
                name=f"{hostname}:{os.getpid()}",
                hostname=hostname,
                pid=os.getpid(),
                queues=queues,
                concurrency=concurrency,
                worker_kind=kind,
            )

    # Redis, then the ledger (registering is the probe): a worker started while either is
    # down or starting up waits for it; SIGTERM/SIGINT while waiting stops it at once
    redis_client = huey.storage.conn if isinstance(huey.storage, LedgerRedisStorage) else None
    tries = 0

    def register_at_start() -> None:
        nonlocal tries
        tries += 1
        try:
            register()
        except IntegrityError:  # the row has a fresh id: a try whose reply was lost wrote it
            if tries == 1:
                raise

    with stop_on_signals() as stop:
        ready = wait_for_servers(register_at_start, redis_client, stop)
    if not ready:  # stopped before it registered: nothing to hand back
        if runtime.prefetcher is not None:
            runtime.prefetcher.stop()
        if runtime.writer is not None:
            runtime.writer.close()
        runtime.log_writer.close()
        return
    heartbeat = Heartbeat(runtime, register)
    heartbeat.start()
    log.info("worker %s on queues %s with %d %s(s)", worker_id, queues, concurrency, kind)
    if kind == "process":  # a parent that batches for child processes (tasks.worker.process_pool)
        pool = ProcessPool(
            runtime, storage, concurrency, settings.job_modules, settings.queue_shutdown_timeout
        )
        loop: Callable[[], None] = pool.run
    else:
        loop = LedgerConsumer(
            huey,
            workers=concurrency,
            periodic=False,  # the maintainer owns periodic jobs
            worker_type=kind,
            initial_delay=0.05,
            max_delay=0.5,
            shutdown_timeout=settings.queue_shutdown_timeout,
            check_worker_health=True,
        ).run
    try:
        loop()
    finally:
        if runtime.prefetcher is not None:
            runtime.prefetcher.stop()  # what no handler took goes back to Redis
        if runtime.writer is not None:
            runtime.writer.close()  # before the hand-back: finished jobs stay finished
        runtime.log_writer.close()
        runtime.stopping.set()
        heartbeat.stop_event.set()
        _shut_down(engine, worker_id)


def _shut_down(engine: Engine, worker_id: uuid.UUID) -> None:
    """Hand back jobs still marked running by this worker and mark it stopped."""
    for attempt in range(5):
        try:
            with write(engine) as conn:
                n = attempts.hand_back_all(conn, worker_id)
                worker_sql.set_status(conn, worker_id, "stopped")
            if n:
                log.warning("handed back %d unfinished job(s)", n)
            return
        except DBAPIError as exc:
            log.warning("shutdown write failed (%s), try %d of 5", exc, attempt + 1)
            time.sleep(0.5)
    log.error("could not hand back jobs; the rescuer will retry them when the heartbeat is stale")
