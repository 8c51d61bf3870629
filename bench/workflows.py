"""Workflows on PostgreSQL + Redis: a 1,000-job fan-in, a 1,000-step chain, and what the
release trigger costs the finish of jobs that have no dependents.

    python -m bench workflows [--width 1000] [--steps 1000] [--workers 4] [--runs 3]
                              [--throughput-jobs 0] [--throughput-rounds 4]

- fan-in: ``chord`` of ``--width`` no-op parents and one callback, submitted in one call
  while a maintainer and a worker (``--workers`` threads) run. Measured: the submit, the
  drain of the parents (first parent done -> last), and the release delay: last parent's
  ``finished_at`` -> callback released (its ``scheduled_at``, set at release) and -> started.
  Beside it, the same number of no-op jobs without dependencies, drained by the same
  processes (the baseline).
- chain: ``chain`` of ``--steps`` no-op steps. Measured: the submit, and first step's start
  -> last step's finish, per step (each step waits for the one before: finish commit,
  release in the trigger, NOTIFY, dispatch, pop).
- cascade: a ``--steps`` chain (no worker) whose first step fails for good: the time of
  that ``fail_attempt`` (the trigger cancels the other steps in it), of the ``retry_job``
  that revives them, and of a ``cancel_job`` of the first step that cancels them again.
- finish cost: ``complete_many`` of 500 dispatched jobs without dependents (the attempt
  writer's group commit) with the release trigger enabled and disabled, alternating, in one
  database; no worker, so only the statement is timed (median of ``--finish-rounds``).
- throughput (with ``--throughput-jobs N``): ``bench throughput``'s drain of N no-op jobs
  without dependencies, with the release trigger enabled and disabled (alternating which
  goes first), and plain Huey, ``--throughput-rounds`` rounds; medians and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update

from bench import harness, throughput
from db.engine import create_ledger_engine, read, transaction, write
from db.ledger import attempts, core
from db.models import Job
from db.settings import get_settings
from tasks import api, workflows

jobs = Job.__table__


def _rows(engine: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    with read(engine) as conn:
        stmt = select(
            jobs.c.id,
            jobs.c.status,
            jobs.c.scheduled_at,
            jobs.c.started_at,
            jobs.c.finished_at,
        ).where(jobs.c.id.in_(ids))
        return {r.id: r for r in conn.execute(stmt)}


def _ms(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() * 1000


def _left(engine: Any, ids: list[uuid.UUID]) -> int:
    with read(engine) as conn:
        stmt = select(func.count()).where(jobs.c.id.in_(ids), jobs.c.status != "completed")
        return int(conn.execute(stmt).scalar_one())


def run_graphs(width: int, steps: int, workers: int) -> dict[str, float]:
    with harness.fresh_system("benchwf") as (url, env):
        engine = create_ledger_engine(url)
        out: dict[str, float] = {}
        with harness.Procs(env) as procs:
            procs.queuectl("maintainer")
            procs.queuectl("worker", "--concurrency", str(workers))
            warm = api.submit_job("bench.noop", {})
            harness.wait_until(lambda: _left(engine, [warm]) == 0, "the warm-up job")

            # baseline: the same number of jobs without dependencies
            t0 = time.monotonic()
            plain = api.submit_jobs([{"type": "bench.noop", "data": {}}] * width)
            out["plain_submit_ms"] = (time.monotonic() - t0) * 1000
            harness.wait_until(lambda: _left(engine, plain) == 0, "the plain jobs", 600)
            rows = _rows(engine, plain)
            first = min(r.started_at for r in rows.values())
            last = max(r.finished_at for r in rows.values())
            out["plain_drain_ms"] = _ms(first, last)

            # fan-in
            t0 = time.monotonic()
            chord = workflows.chord([("bench.noop", {})] * width, ("bench.noop", {}))
            out["fanin_submit_ms"] = (time.monotonic() - t0) * 1000
            everything = [*chord.group, chord.callback]
            harness.wait_until(lambda: _left(engine, everything) == 0, "the fan-in", 600)
            rows = _rows(engine, everything)
            parents = [rows[p] for p in chord.group]
            callback = rows[chord.callback]
            first = min(r.started_at for r in parents)
            last = max(r.finished_at for r in parents)
            out["fanin_parents_drain_ms"] = _ms(first, last)
            out["fanin_release_ms"] = _ms(last, callback.scheduled_at)
            out["fanin_callback_start_ms"] = _ms(last, callback.started_at)

            # chain
            t0 = time.monotonic()
            chained = workflows.chain(*[("bench.noop", {})] * steps)
            out["chain_submit_ms"] = (time.monotonic() - t0) * 1000
            harness.wait_until(lambda: _left(engine, chained[-1:]) == 0, "the chain", 900)
            rows = _rows(engine, chained)
            total = _ms(rows[chained[0]].started_at, rows[chained[-1]].finished_at)
            out["chain_total_ms"] = total
            out["chain_per_step_ms"] = total / steps
            gaps = [
                _ms(rows[a].finished_at, rows[b].started_at) for a, b in itertools.pairwise(chained)
            ]
            out["chain_step_gap_p50_ms"] = harness.percentile(gaps, 0.5)
            out["chain_step_gap_p95_ms"] = harness.percentile(gaps, 0.95)
        engine.dispose()
        return out


def run_cascade(steps: int) -> dict[str, float]:
    with harness.fresh_ledger() as url:
        os.environ.update(harness.ledger_env(url, "benchwfcasc"))
        get_settings.cache_clear()
        engine = create_ledger_engine(url)
        ids = workflows.chain(*[("bench.noop", {})] * steps)
        with write(engine) as conn:
            claimed = attempts.claim(conn, ids[0], None)
        assert claimed is not None
        entry = core.error_entry(1, "boom", traceback=None, worker=None, kind="error")
        t0 = time.perf_counter()
        with write(engine) as conn:
            attempts.fail_attempt(conn, ids[0], claimed.lease, entry, 0.0)
        fail_ms = (time.perf_counter() - t0) * 1000
        assert api.dependents_cancelled(ids[0]) == steps - 1
        t0 = time.perf_counter()
        assert api.retry_job(ids[0]) == steps - 1
        revive_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        api.cancel_job(ids[0])
        cancel_ms = (time.perf_counter() - t0) * 1000
        assert api.get_job(ids[-1])["status"] == "cancelled"
        engine.dispose()
    return {
        "cascade_fail_ms": fail_ms,
        "cascade_revive_ms": revive_ms,
        "cascade_cancel_ms": cancel_ms,
    }


_TOGGLE = "ALTER TABLE queue_jobs {} TRIGGER queue_jobs_release_dependents"


def run_finish_cost(rounds: int, batch: int = 500) -> dict[str, float]:
    """complete_many of ``batch`` dispatched jobs without dependents, trigger on vs off."""
    with harness.fresh_ledger() as url:
        os.environ.update(harness.ledger_env(url, "benchwffin"))
        get_settings.cache_clear()
        engine = create_ledger_engine(url)
        timings: dict[bool, list[float]] = {True: [], False: []}
        for i in range(rounds * 2 + 2):  # the first two rounds warm the caches up
            enabled = i % 2 == 0
            with transaction(engine) as conn:
                conn.execute(text(_TOGGLE.format("ENABLE" if enabled else "DISABLE")))
            ids = api.submit_jobs([{"type": "bench.noop", "data": {}}] * batch)
            with write(engine) as conn:  # as a dispatch leaves them: lease 1
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(ids))
                    .values(status="dispatched", attempt=1, lease=1)
                )
            outcomes = [attempts.Outcome(i, 1, None) for i in ids]
            t0 = time.perf_counter()
            with write(engine) as conn:
                done = attempts.complete_many(conn, outcomes)
            if i >= 2:
                timings[enabled].append((time.perf_counter() - t0) * 1000)
            assert len(done) == batch
        with transaction(engine) as conn:
            conn.execute(text(_TOGGLE.format("ENABLE")))
        engine.dispose()
    on, off = statistics.median(timings[True]), statistics.median(timings[False])
    return {
        "finish_batch": batch,
        "finish_trigger_on_ms": on,
        "finish_trigger_off_ms": off,
        "finish_on_over_off": on / off,
    }


def run_throughput(jobs_n: int, rounds: int, workers: int) -> dict[str, float]:
    """Drain rates of jobs without dependencies: trigger on, trigger off, plain Huey."""
    fresh = harness.fresh_ledger
    trigger = {"on": True}

    @contextlib.contextmanager
    def ledger_with_trigger() -> Any:
        with fresh() as url:
            if not trigger["on"]:
                engine = create_ledger_engine(url)
                with transaction(engine) as conn:
                    conn.execute(text(_TOGGLE.format("DISABLE")))
                engine.dispose()
            yield url

    rates: dict[str, list[float]] = {"on": [], "off": [], "plain": []}
    harness.fresh_ledger = ledger_with_trigger  # type: ignore[assignment]
    try:
        for r in range(rounds):
            rates["plain"].append(throughput.run_plain(jobs_n, workers, "thread"))
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                trigger["on"] = mode == "on"
                rates[mode].append(throughput.run_ours(jobs_n, workers, "thread"))
            print(
                f"throughput round {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
            )
    finally:
        harness.fresh_ledger = fresh  # type: ignore[assignment]
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "throughput_jobs": jobs_n,
        "throughput_trigger_on": med["on"],
        "throughput_trigger_off": med["off"],
        "throughput_plain": med["plain"],
        "throughput_on_over_off": med["on"] / med["off"],
        "throughput_on_over_plain": med["on"] / med["plain"],
        "throughput_off_over_plain": med["off"] / med["plain"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench workflows")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--finish-rounds", type=int, default=40)
    parser.add_argument("--throughput-jobs", type=int, default=0, help="0: not measured")
    parser.add_argument("--throughput-rounds", type=int, default=4)
    args = parser.parse_args(argv)
    runs = []
    for run in range(args.runs):
        runs.append(run_graphs(args.width, args.steps, args.workers))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()))
    figures: dict[str, Any] = {
        "benchmark": "workflows",
        "width": args.width,
        "steps": args.steps,
        "workers": args.workers,
        "runs": args.runs,
    }
    for key in runs[0]:
        figures[key] = round(statistics.median(r[key] for r in runs), 2)
    figures.update({k: round(v, 1) for k, v in run_cascade(args.steps).items()})
    figures.update({k: round(v, 3) for k, v in run_finish_cost(args.finish_rounds).items()})
    if args.throughput_jobs:
        measured = run_throughput(args.throughput_jobs, args.throughput_rounds, args.workers)
        figures.update({k: round(v, 3) for k, v in measured.items()})
    harness.report(figures)
    return 0
