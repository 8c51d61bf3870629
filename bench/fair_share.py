"""Fair share (``@job(partition_by=...)``) on PostgreSQL + Redis: what partitions cost the
drain, and what they cost one dispatcher pass.

    python -m bench fair_share [--jobs 10000] [--partitions 1,10,1000] [--kinds thread]
                               [--threads 4] [--processes 2] [--runs 1] [--fair-window 20]
                               [--no-analyze] [--backlog 100000] [--backlog-partitions 1000]
                               [--passes 100]

- drain (real processes: one maintainer, one worker ``--kind thread --concurrency
  <threads>``, or ``--kind process --concurrency <processes>`` with ``--kinds process`` or
  ``thread,process``; no drain with ``--jobs 0``): ``--jobs`` no-op jobs waiting before the
  processes start, drained from the first job done to the last (``bench throughput``'s
  measure), in a fresh ledger each, ``ANALYZE queue_jobs`` after the submit (the statistics
  of a ledger in use; not with ``--no-analyze``):

  - ``none``: ``bench.noop`` with only ``bench.jobs`` loaded (no partitioned type exists:
    the dispatcher's wake-up path ``run_queues``, the plain dispatch statement);
  - ``registered``: ``bench.noop`` again, with ``bench.fair_share_jobs`` loaded too (a
    partitioned type exists but has no jobs: every pass is ``run_once``, which asks for its
    partitions and dispatches the others with the general statement);
  - ``P=<n>``: ``bench.fair_noop`` (``partition_by="school_id"``), the jobs spread evenly
    over n partitions (job i in partition i mod n), for each n of ``--partitions``.

  Ratios: each against ``none`` (``registered`` / ``none`` is the cost for types without
  partitions).
- pass cost (in this process, no worker): ``--backlog`` queued ``bench.fair_noop`` jobs
  across ``--backlog-partitions`` partitions (bulk submitted); ``--passes`` timed
  ``Dispatcher.run_once()`` of a new dispatcher (after 3 untimed ones), Redis emptied
  before each, so every pass fills an empty window; per pass: ms (median, p95), jobs
  dispatched, ms per job, and the median ms of each statement of the pass. Then the same
  with an unpartitioned backlog of the same size (``bench.noop``), with the partitioned
  type registered and without it (each case in its own ledger). Each backlog is timed
  ``fresh`` (right after the submit, no planner statistics yet), then ``analyzed`` (after
  ``ANALYZE queue_jobs``; the fresh passes' dispatched rows are still there). And
  ``db.partitions.queued_partitions`` alone on the analyzed partitioned backlog: 100 keys
  from the first, 100 from the middle, 100 wrapping round the end, all of them.

The last line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from sqlalchemy import Engine

from bench import fair_share_jobs, harness
from db import partitions
from db.engine import create_ledger_engine, read
from db.ledger import maintainer
from db.settings import get_settings
from tasks import api, registry
from tasks.maintenance.dispatcher import Dispatcher, DispatcherConfig
from tasks.transport.broker import make_huey, storage_of

PLAIN_TYPE = "bench.noop"
FAIR_TYPE = "bench.fair_noop"
PLAIN_MODULES = "bench.jobs"
FAIR_MODULES = "bench.jobs,bench.fair_share_jobs"
PASS_CASES = [
    f"{state}_{backlog}"
    for state in ("fresh", "analyzed")
    for backlog in ("partitioned", "unpartitioned_registered", "unpartitioned_none")
]
PLURAL = {"thread": "threads", "process": "processes"}
QUEUE = registry.DEFAULT_QUEUE


def _key(i: int, partitions_n: int) -> str:
    return f"s{i % partitions_n:05d}"


def submit(count: int, partitions_n: int | None) -> None:
    """``count`` no-op jobs in bulk submits of 5,000: ``bench.noop`` (``partitions_n`` None)
    or ``bench.fair_noop`` with job i in partition ``i mod partitions_n``."""
    for start in range(0, count, 5000):
        stop = min(count, start + 5000)
        if partitions_n is None:
            items = [{"type": PLAIN_TYPE, "data": {}}] * (stop - start)
        else:
            items = [
                {"type": FAIR_TYPE, "data": {fair_share_jobs.FIELD: _key(i, partitions_n)}}
                for i in range(start, stop)
            ]
        api.submit_jobs(items)


@contextmanager
def system(modules: str, fair_window: int) -> Iterator[tuple[str, dict[str, str]]]:
    """``harness.fresh_system`` with these job modules and fair window, here and in the
    processes."""
    with harness.fresh_system("benchfair") as (url, env):
        env = {**env, "QUEUE_JOB_MODULES": modules, "QUEUE_FAIR_WINDOW": str(fair_window)}
        os.environ.update(env)
        get_settings.cache_clear()
        yield url, env


def analyze_jobs(engine: Engine) -> None:
    """``ANALYZE queue_jobs``: the planner's statistics of a ledger in use (a fresh table
    has none; autovacuum analyzes it within a minute or so)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE queue_jobs")
        conn.commit()


def autoanalyzed(engine: Engine) -> bool:
    """Has autovacuum analyzed ``queue_jobs`` yet?"""
    with read(engine) as conn:
        stmt = "SELECT last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'queue_jobs'"
        return conn.exec_driver_sql(stmt).scalar_one() is not None


def drain(
    case: str,
    jobs: int,
    partitions_n: int | None,
    kind: str,
    size: int,
    fair_window: int,
    analyze: bool,
) -> float:
    modules = PLAIN_MODULES if case == "none" else FAIR_MODULES
    with system(modules, fair_window) as (url, env):
        submit(jobs, partitions_n)
        engine = create_ledger_engine(url)
        if analyze:
            analyze_jobs(engine)
        rate = harness.drain_ours(engine, env, jobs, size, kind)
        engine.dispose()
        return rate


# --- pass cost ---------------------------------------------------------------------------


class Probe:
    """Wall time of the statements a dispatcher pass runs, per pass (functions patched
    where the dispatcher looks them up: module attributes and its storage)."""

    PARTS: dict[str, tuple[Any, str]] = {
        "plan": (maintainer, "dispatch_plan"),
        "queued_partitions": (partitions, "queued_partitions"),
        "best_queued": (partitions, "best_queued"),
        "round_robin": (partitions, "round_robin"),
        "dispatch_ids": (maintainer, "dispatch_ids"),
        "general_dispatch": (maintainer, "dispatch"),
        "active_counts": (maintainer, "active_counts"),
        "starts_since": (maintainer, "starts_since"),
    }

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _timed(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.ms[name] += (time.perf_counter() - t0) * 1000
                self.calls[name] += 1

        return timed

    @contextmanager
    def installed(self, dispatcher: Dispatcher) -> Iterator[None]:
        with ExitStack() as stack:
            for name, (owner, attr) in self.PARTS.items():
                real = getattr(owner, attr)
                stack.enter_context(mock.patch.object(owner, attr, self._timed(name, real)))
            storage = dispatcher.storage
            for attr in ("size_of", "push"):
                real = getattr(storage, attr)
                timed = self._timed(f"redis_{attr}", real)
                stack.enter_context(mock.patch.object(storage, attr, timed))
            yield

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        ms, calls = dict(self.ms), dict(self.calls)
        self.ms.clear()
        self.calls.clear()
        return ms, calls


def time_passes(url: str, passes: int, warmup: int = 3) -> dict[str, Any]:
    """``passes`` timed ``run_once()`` of a new dispatcher, Redis emptied before each."""
    settings = get_settings()
    engine = create_ledger_engine(url)
    storage = storage_of(make_huey(settings))
    config = DispatcherConfig(
        settings.queue_dispatch_window,
        settings.queue_poll_seconds,
        fair_window=settings.queue_fair_window,
    )
    dispatcher = Dispatcher(engine, storage, config)
    probe = Probe()
    totals: list[float] = []
    sent: list[int] = []
    parts: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[int]] = defaultdict(list)
    with probe.installed(dispatcher):
        for i in range(warmup + passes):
            harness.flush_redis()
            probe.take()
            t0 = time.perf_counter()
            n = dispatcher.run_once()
            total = (time.perf_counter() - t0) * 1000
            ms, counted = probe.take()
            if i < warmup:
                continue
            totals.append(total)
            sent.append(n)
            for name in [*Probe.PARTS, "redis_size_of", "redis_push"]:
                parts[name].append(ms.get(name, 0.0))
                calls[name].append(counted.get(name, 0))
            parts["other"].append(total - sum(ms.values()))
    engine.dispose()
    out: dict[str, Any] = {
        "pass_ms_p50": round(harness.percentile(totals, 0.5), 2),
        "pass_ms_p95": round(harness.percentile(totals, 0.95), 2),
        "jobs_per_pass": round(harness.median([float(s) for s in sent]), 1),
        "ms_per_job": round(sum(totals) / max(1, sum(sent)), 3),
        "parts_ms_p50": {
            k: round(harness.median(v), 3) for k, v in parts.items() if any(x > 0 for x in v)
        },
        "calls_per_pass": {
            k: harness.median([float(c) for c in v]) for k, v in calls.items() if any(v)
        },
    }
    return out


def time_queued_partitions(url: str, partitions_n: int, repeat: int = 50) -> dict[str, Any]:
    """``queued_partitions`` alone: 100 keys from the first, from the middle, wrapping round
    the end (two statements), and every key (limit = number of partitions)."""
    engine = create_ledger_engine(url)
    cases = {
        "first_100": ("", 100),
        "middle_100": (_key(partitions_n // 2, partitions_n), 100),
        "wrap_100": (_key(partitions_n - 50, partitions_n), 100),
        f"all_{partitions_n}": ("", partitions_n),
    }
    out: dict[str, Any] = {}
    with read(engine) as conn:
        for name, (after, limit) in cases.items():
            times = []
            for i in range(repeat + 3):
                t0 = time.perf_counter()
                keys = partitions.queued_partitions(
                    conn, QUEUE, FAIR_TYPE, after=after, limit=limit
                )
                if i >= 3:
                    times.append((time.perf_counter() - t0) * 1000)
            assert len(keys) == min(limit, partitions_n), (name, len(keys))
            out[name] = {
                "ms_p50": round(harness.percentile(times, 0.5), 3),
                "ms_p95": round(harness.percentile(times, 0.95), 3),
                "keys": len(keys),
            }
    engine.dispose()
    return out


@contextmanager
def fair_type_unregistered() -> Iterator[None]:
    """The registry without ``bench.fair_noop`` (as a process that never loaded it)."""
    saved = registry._REGISTRY.pop(FAIR_TYPE)
    try:
        yield
    finally:
        registry._REGISTRY[FAIR_TYPE] = saved


def pass_costs(backlog: int, partitions_n: int, passes: int, fair_window: int) -> dict[str, Any]:
    """Pass costs on a partitioned and on an unpartitioned backlog (that one with the
    partitioned type registered and without it), each in its own ledger, first ``fresh``
    (right after the bulk submit: no planner statistics, as after a burst into a new table)
    and then ``analyzed`` (after ``ANALYZE queue_jobs``)."""
    out: dict[str, Any] = {}
    fresh_autoanalyzed = False
    for case in ("partitioned", "unpartitioned_registered", "unpartitioned_none"):
        with system(FAIR_MODULES, fair_window) as (url, _), ExitStack() as stack:
            if case == "unpartitioned_none":
                stack.enter_context(fair_type_unregistered())
            t0 = time.monotonic()
            submit(backlog, partitions_n if case == "partitioned" else None)
            print(f"  {case}: {backlog} jobs submitted in {time.monotonic() - t0:.1f} s")
            engine = create_ledger_engine(url)
            out[f"fresh_{case}"] = time_passes(url, passes)
            fresh_autoanalyzed = fresh_autoanalyzed or autoanalyzed(engine)
            analyze_jobs(engine)
            if case == "partitioned":
                out["queued_partitions"] = time_queued_partitions(url, partitions_n)
            out[f"analyzed_{case}"] = time_passes(url, passes)
            engine.dispose()
    out["fresh_autoanalyzed"] = fresh_autoanalyzed
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fair_share")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain; 0: none")
    parser.add_argument("--partitions", default="1,10,1000", help="partition counts of drains")
    parser.add_argument("--kinds", default="thread", help="thread, process or thread,process")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="drains of each case")
    parser.add_argument("--fair-window", type=int, default=20, help="QUEUE_FAIR_WINDOW")
    parser.add_argument("--backlog", type=int, default=100_000, help="0: no pass cost")
    parser.add_argument("--backlog-partitions", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="drain from a fresh table (no ANALYZE after the submit)",
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in PLURAL for k in kinds):
        parser.error("--kinds takes thread, process or thread,process")
    counts = [int(p) for p in args.partitions.split(",") if p]
    size = {"thread": args.threads, "process": args.processes}
    cases: list[tuple[str, int | None]] = [("none", None), ("registered", None)]
    cases += [(f"P={n}", n) for n in counts]

    figures: dict[str, Any] = {
        "benchmark": "fair_share",
        "jobs": args.jobs,
        "fair_window": args.fair_window,
        "threads": args.threads,
        "processes": args.processes,
        "analyzed": not args.no_analyze,
    }
    for kind in kinds if args.jobs else []:
        rates: dict[str, list[float]] = defaultdict(list)
        for run in range(args.runs):
            for case, n in cases if run % 2 == 0 else cases[::-1]:
                rate = drain(
                    case, args.jobs, n, kind, size[kind], args.fair_window, not args.no_analyze
                )
                rates[case].append(rate)
                print(f"{size[kind]} {PLURAL[kind]}, {case}: {rate:.0f} jobs/s")
        base = harness.median(rates["none"])
        name = PLURAL[kind]
        for case, _ in cases:
            med = harness.median(rates[case])
            figures[f"{name}_{case}_jobs_per_s"] = round(med, 1)
            if case != "none":
                figures[f"{name}_{case}_over_none"] = round(med / base, 3)
            if args.runs > 1:
                figures[f"{name}_{case}_runs"] = [round(x, 1) for x in rates[case]]

    if args.backlog:
        print(f"pass cost: {args.backlog} queued jobs, {args.backlog_partitions} partitions")
        costs = pass_costs(args.backlog, args.backlog_partitions, args.passes, args.fair_window)
        for case in PASS_CASES:
            c = costs[case]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in c["parts_ms_p50"].items())
            print(
                f"  {case}: pass p50 {c['pass_ms_p50']:.2f} ms, p95 {c['pass_ms_p95']:.2f} ms, "
                f"{c['jobs_per_pass']:.0f} jobs/pass, {c['ms_per_job']:.3f} ms/job; "
                f"median ms by part: {parts}"
            )
        for case, q in costs["queued_partitions"].items():
            print(f"  queued_partitions {case}: p50 {q['ms_p50']:.2f} ms, p95 {q['ms_p95']:.2f} ms")
        figures["backlog"] = args.backlog
        figures["backlog_partitions"] = args.backlog_partitions
        figures["passes"] = args.passes
        figures["pass_cost"] = costs
    harness.report(figures)
    return 0
