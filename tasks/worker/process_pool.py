"""``queuectl worker --kind process``: one parent process per worker command owns Redis and
the ledger; its child processes (job processes) only run handlers (the shape of Celery's
prefork pool).

The parent does for its job processes what a thread worker does for its handler threads, and
in batches. Its fetch thread (``tasks.worker.attempt_fetcher``) pops several messages with one
script (each marked taken: the delivery gate of ``tasks.transport.broker``), reads their leases
on a held connection and keeps the attempts ready; its main loop hands each to an idle job process
over a pipe, answers the process's progress and cancel questions, and hands outcomes to the
group commit (``tasks.worker.attempt_writer``). An attempt held ready longer than ``HOLD_SECONDS``
is given back to Redis, where any worker may take it.

What only a process can do:

- **Hard timeouts**: a child whose attempt runs past the job type's ``timeout`` is killed
  (``SIGKILL``); the attempt is recorded failed (``TaskTimeout``) and a new child started.
- **A dying child costs its attempt, not the worker**: a child that exits while running a job
  (a segfault, ``os._exit``, the OOM killer) is seen at once through its pipe; the attempt is
  recorded failed (``WorkerLost``) and counts, so a poison job ends ``failed`` after its
  ``max_attempts`` instead of crash-looping workers.
- **Children die with the parent**: a job process kills itself the moment the worker's end
  of its pipe closes, so a killed worker leaves no handler running; the rescuer then re-runs
  its attempts once its heartbeat is stale.

On the embedded SQLite transport (no delivery marks) the parent claims each attempt with the
guarded UPDATE before a child runs it, as every worker does there.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from db.job_logs import LogLine
from db.ledger import attempts
from tasks.transport.broker import LedgerRedisStorage, PoppedEntry, QueueStorage
from tasks.worker.attempt_fetcher import AttemptFetcher, Ready, read_leases
from tasks.worker.process_child import CancelQuery, Done, Progress, Run, child_main

if TYPE_CHECKING:  # the runtime imports this module
    from tasks.worker.runtime import AttemptChannel, WorkerRuntime

log = logging.getLogger(__name__)

#: an attempt read ahead and not handed to a child within this is given back to Redis
HOLD_SECONDS = 0.5
#: a lease read older than this is read again before a child runs the attempt, so a cancel
#: or pause that landed meanwhile is seen
FRESH_SECONDS = 0.05
#: how long the main loop sleeps at most between looks at timeouts and stop requests
TICK_SECONDS = 0.1
#: while recent jobs ran shorter than this on average, each job process gets its next attempt
#: while it still runs one (it starts it the moment it sends the outcome, without waiting for
#: the parent): at most one attempt waits per job process, for about one short job's time,
#: and never behind an attempt with a timeout (whose process may be killed)
PIPELINE_SECONDS = 0.05


@dataclass
class _Running:
    claimed: attempts.Claimed
    started: float  # time.monotonic() when the child was handed the attempt
    deadline: float | None
    channel: AttemptChannel  # progress writes, cancel reads


@dataclass
class _Slot:
    index: int
    process: BaseProcess
    conn: Connection
    spawned_at: float
    running: _Running | None = None
    #: sent to the job process behind ``running`` and not started yet (pipelining)
    queued: Ready | None = None


class ProcessPool:
    """The parent of a process worker: pops, reads leases, hands attempts to children and
    records what they did."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        storage: QueueStorage,
        concurrency: int,
        job_modules: list[str],
        shutdown_timeout: float,
    ) -> None:
        self.runtime = runtime
        self.storage = storage
        self.concurrency = concurrency
        self.job_modules = list(job_modules)
        self.shutdown_timeout = shutdown_timeout
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["tasks.worker.process_child", *self.job_modules])
        self._slots: list[_Slot] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._redis = storage if isinstance(storage, LedgerRedisStorage) else None
        self.fetcher = AttemptFetcher(runtime, storage, concurrency, self._wake_w)
        self._mean_run = 0.0

    # --- children ---------------------------------------------------------------------------

    def _spawn(self, index: int) -> _Slot:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main,
            args=(child_conn, self.job_modules),
            name=f"job-process-{index}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Slot(index, process, parent_conn, time.monotonic())

    def _respawn(self, slot: _Slot) -> None:
        slot.conn.close()
        slot.process.join(1)
        if time.monotonic() - slot.spawned_at < 1.0:  # dying at start: do not spin
            log.error("job process %d exited within 1 s of its start", slot.index)
            time.sleep(1.0)
        if not self.stopping.is_set():
            self._slots[slot.index] = self._spawn(slot.index)

    def _exit_text(self, slot: _Slot) -> str:
        slot.process.join(1)
        code = slot.process.exitcode
        if code is None:
            return "its process stopped answering"
        if code < 0:
            try:
                return f"its process was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"its process was killed by signal {-code}"
        return f"its process exited with code {code}"

    # --- the main loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT/SIGHUP; then finish or hand back what runs."""
        self._install_signal_handlers()
        self._slots = [self._spawn(i) for i in range(self.concurrency)]
        self.fetcher.start()
        try:
            while not self.stopping.is_set():
                self._step()
        finally:
            self._shut_down()

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _idle(self) -> list[_Slot]:
        return [s for s in self._slots if s.running is None]

    def _step(self) -> None:
        self._kill_overdue()
        self._assign()
        busy = [s.conn for s in self._slots if s.running is not None]
        for ready in wait([*busy, self._wake_r], self._wait_timeout()):
            if ready is self._wake_r:
                self._drain_wake()
                continue
            slot = self._slot_of(ready)
            if slot is not None:  # None: replaced by a new child in this same pass
                self._serve(slot)

    def _slot_of(self, conn: object) -> _Slot | None:
        return next((s for s in self._slots if s.conn is conn), None)

    def _wait_timeout(self) -> float:
        timeout = TICK_SECONDS
        deadlines = [
            s.running.deadline
            for s in self._slots
            if s.running is not None and s.running.deadline is not None
        ]
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - time.monotonic()))
        return timeout

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # --- handing attempts to children -------------------------------------------------------

    def _assign(self) -> None:
        """Hand ready attempts to idle job processes; tell the fetch thread what is needed.

        One attempt per job process at a time: an attempt sent behind a running one would be
        pinned to that process, and wait out a long job while another process is idle."""
        idle = self._idle()
        if idle:
            for slot, ready in zip(idle, self._fresh(self.fetcher.take(len(idle))), strict=False):
                self._start(slot, ready)
        behind = self._behind()
        if behind:
            taken = self._fresh(self.fetcher.take(len(behind)))
            for slot, ready in zip(behind, taken, strict=False):
                self._send(slot, ready, queued=True)
        self._give_back_old()
        idle_now = len(self._idle())
        self.fetcher.update(idle_now, idle_now + len(self._behind()), self._mean_run)

    def _behind(self) -> list[_Slot]:
        """Job processes that may take an attempt behind the one they run (pipelining)."""
        if self._mean_run >= PIPELINE_SECONDS or self.stopping.is_set():
            return []
        return [
            s
            for s in self._slots
            if s.running is not None and s.running.deadline is None and s.queued is None
        ]

    def _fresh(self, taken: list[Ready]) -> list[Ready]:
        """Read again the leases of attempts whose read is old (a cancel or pause may have
        landed meanwhile), on the held connection."""
        limit = time.monotonic() - FRESH_SECONDS
        stale = [r for r in taken if r.read_at < limit and r.entry is not None]
        if not stale:
            return taken
        found = read_leases(self.runtime, [(r.claimed.id, r.claimed.lease) for r in stale])
        now = time.monotonic()
        fresh, refused = [], []
        for r in taken:
            if r in stale:
                claimed = found.get((r.claimed.id, r.claimed.lease))
                if claimed is None:
                    refused.append((r.claimed.id, r.claimed.lease))
                    continue
                if claimed.cancel_requested:
                    self.runtime._cancelled_before_start(claimed)
                    continue
                r.claimed, r.read_at = claimed, now
            fresh.append(r)
        if refused:
            self.runtime._release(refused)
        return fresh

    def _give_back_old(self) -> None:
        self._give_back([r.entry for r in self.fetcher.take_old(time.monotonic() - HOLD_SECONDS)])

    def _start(self, slot: _Slot, ready: Ready) -> None:
        """Send an attempt to an idle job process: it starts it now."""
        self._send(slot, ready, queued=False)

    def _send(self, slot: _Slot, ready: Ready, *, queued: bool) -> None:
        """Send an attempt to a job process: an idle one starts it now; a busy one
        (``queued``) when it has sent the outcome of the one it runs."""
        claimed = ready.claimed
        run = Run(
            job_id=claimed.id,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            type=claimed.type,
            queue=claimed.queue,
            data=claimed.data,
            worker_id=self.runtime.worker_id,
        )
        try:
            slot.conn.send(run)
        except (BrokenPipeError, OSError):  # the job process is gone: this one never started
            self.fetcher.put_back([ready])
            self._lost(slot, self._exit_text(slot))
            return
        if queued:
            slot.queued = ready
        else:
            self._began(slot, ready)

    def _began(self, slot: _Slot, ready: Ready) -> None:
        """The job process starts ``ready`` now."""
        from tasks.worker.runtime import AttemptChannel

        claimed = ready.claimed
        started = time.monotonic()
        rt = self.runtime
        if rt.writer is not None and rt.reads_leases:
            rt.writer.started(claimed.id, claimed.lease, rt.worker_id, started)
        timeout = claimed.timeout_seconds
        slot.running = _Running(
            claimed,
            started,
            None if timeout is None else started + timeout,
            AttemptChannel(rt, claimed),
        )

    # --- what children say ------------------------------------------------------------------

    def _serve(self, slot: _Slot) -> None:
        running = slot.running
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            self._lost(slot, self._exit_text(slot))
            return
        if running is None:  # nothing was asked of it
            log.warning("job process %d sent %r while idle", slot.index, type(message).__name__)
            return
        if isinstance(message, LogLine):
            if self.runtime.log_writer is not None:
                self.runtime.log_writer.put(message)
        elif isinstance(message, Progress):
            running.channel.progress(message.fraction, message.message)
        elif isinstance(message, CancelQuery):
            try:
                slot.conn.send(running.channel.cancel_requested())
            except (BrokenPipeError, OSError):
                self._lost(slot, self._exit_text(slot))
        elif isinstance(message, Done):
            slot.running = None
            self._finish(running, message)
            queued, slot.queued = slot.queued, None
            if queued is not None:  # the job process started it as it sent this outcome
                self._began(slot, queued)

    def _finish(self, running: _Running, done: Done) -> None:
        rt = self.runtime
        claimed = running.claimed
        if done.progress is not None:
            running.channel.progress(*done.progress)
        rt._flush_progress(running.channel)
        ran = time.monotonic() - running.started
        self._mean_run = 0.8 * self._mean_run + 0.2 * ran
        if done.error is None:
            rt._count(failed=False)
            assert rt.writer is not None
            rt.writer.completed(
                claimed.id, claimed.lease, rt.worker_id, running.started, done.result
            )
            return
        if not (done.cancelled and rt._record_cancelled(claimed, running.started)):
            rt._record_failure_text(claimed, done.error, done.traceback, running.started)
        if rt.writer is not None:
            rt.writer.forget(claimed.id, claimed.lease)

    def _lost(self, slot: _Slot, how: str) -> None:
        """The child died: its attempt (if any) failed and counts; a new child takes its place."""
        running, slot.running = slot.running, None
        self._unqueue(slot)
        if running is not None:
            log.error("job %s attempt %d: %s", running.claimed.id, running.claimed.attempt, how)
            self._fail_running(running, f"WorkerLost: {how} while running the job")
        else:
            log.warning("job process %d: %s", slot.index, how)
        self._respawn(slot)

    def _unqueue(self, slot: _Slot) -> None:
        """The attempt waiting behind a job process that died or was killed never started:
        it goes back to the ready attempts, for another job process."""
        queued, slot.queued = slot.queued, None
        if queued is not None:
            self.fetcher.put_back([queued])

    def _after_kill(self, slot: _Slot) -> None:
        """Settle the attempt sent behind the one of a job process this worker killed. If
        the process sent the outcome of the one before (read here, after its death), it may
        have started this one: it is left ``dispatched`` with its delivery mark, so the
        reconciler counts the attempt and sends the job again under a new lease (never a
        second start of this delivery). Otherwise it never started and goes back to the ready
        attempts."""
        queued, slot.queued = slot.queued, None
        if queued is None:
            return
        slot.process.join(1)
        finished = False
        with contextlib.suppress(EOFError, OSError):
            while slot.conn.poll(0):
                finished = finished or isinstance(slot.conn.recv(), Done)
        if finished:
            log.warning(
                "job %s: its job process was killed just as it may have started it; the"
                " reconciler counts the attempt",
                queued.claimed.id,
            )
            return
        self.fetcher.put_back([queued])

    def _fail_running(self, running: _Running, error: str) -> None:
        rt = self.runtime
        rt._flush_progress(running.channel)
        rt._record_failure_text(running.claimed, error, None, running.started)
        if rt.writer is not None:
            rt.writer.forget(running.claimed.id, running.claimed.lease)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots):
            running = slot.running
            if running is None or running.deadline is None or running.deadline > now:
                continue
            slot.process.kill()
            slot.running = None
            self._after_kill(slot)
            timeout = running.claimed.timeout_seconds
            log.warning(
                "job %s attempt %d ran past its timeout of %ss: its process was killed",
                running.claimed.id,
                running.claimed.attempt,
                f"{timeout:g}" if timeout is not None else "?",
            )
            self._fail_running(
                running,
                f"TaskTimeout: the attempt ran longer than its timeout ({timeout:g}s); "
                "its process was killed",
            )
            self._respawn(slot)

    # --- shutdown ---------------------------------------------------------------------------

    def _shut_down(self) -> None:
        """Stop taking work, give back what no job process started, let running attempts
        finish within the shutdown timeout, then kill what still runs (it is handed back)."""
        self._give_back([r.entry for r in self.fetcher.stop()])
        deadline = time.monotonic() + self.shutdown_timeout
        while any(s.running is not None for s in self._slots):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            busy = [s.conn for s in self._slots if s.running is not None]
            for ready in wait(busy, min(left, TICK_SECONDS)):
                slot = self._slot_of(ready)
                if slot is not None:
                    self._serve_at_shutdown(slot)
            self._kill_overdue()
        for slot in self._slots:
            if slot.running is not None:
                log.warning(
                    "job %s: still running at shutdown, handed back", slot.running.claimed.id
                )
                slot.process.kill()
                self._after_kill(slot)
            slot.conn.close()
        # attempts put back meanwhile (a send found its job process gone): never started
        self._give_back([r.entry for r in self.fetcher.take(len(self.fetcher.ready))])
        for slot in self._slots:
            slot.process.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def _give_back(self, entries: list[PoppedEntry | None]) -> None:
        """Put popped, never-started messages back in Redis, unmarked."""
        held = [e for e in entries if e is not None]
        if held and self._redis is not None:
            try:
                self._redis.give_back(held)
            except Exception as exc:  # the reconciler sends them again after its grace period
                log.warning("could not give back %d message(s): %s", len(held), exc)

    def _serve_at_shutdown(self, slot: _Slot) -> None:
        try:
            self._serve(slot)
        except Exception:
            log.exception("job process %d: error while shutting down", slot.index)
