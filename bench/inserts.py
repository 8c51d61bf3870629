"""The forms of the insert statement, and where COPY overtakes it (``db/ledger/producer.py``).

python -m bench inserts [--rounds 8] [--calls 1000] [--sizes 5,20,50,100,1000]

- ``one_row_us``: microseconds per one-job insert on one autocommit connection (as a lone
  ``submit_job`` writes it), for keyless forms of the insert (``producer._FORMS``): one job
  as scalar parameters, the same with the direct-dispatch check (each job sent to one of
  1,000 idle queues), and the array form given one job; medians of ``--rounds`` rounds of
  ``--calls`` calls, the forms alternating within each round.
- ``statement_jobs_per_s`` / ``copy_jobs_per_s``: jobs/s that ``insert_jobs`` writes in
  transactions of each of ``--sizes`` jobs without keys, with the insert statement and with
  COPY (``COPY_FROM`` set below and above the size), alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench import harness
from db.engine import create_ledger_engine, driver_write, hot_path_engine_for
from db.ledger import producer
from db.ledger.producer import NewJob


def _job(i: int = 0, queue: str = "default") -> NewJob:
    return NewJob(type="bench.noop", queue=queue, priority=0, data={"i": i}, max_attempts=3)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench inserts")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--sizes", default="5,20,50,100,1000")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",") if n]
    with harness.fresh_ledger() as url:
        one_row = _one_row_forms(url, args.rounds, args.calls)
        statement, copy = _copy_crossover(url, sizes, args.rounds)
    harness.report(
        {
            "benchmark": "inserts",
            "one_row_us": one_row,
            "statement_jobs_per_s": statement,
            "copy_jobs_per_s": copy,
            "copy_from": producer.COPY_FROM,
        }
    )
    return 0


def _one_row_forms(url: str, rounds: int, calls: int) -> dict[str, float]:
    engine = hot_path_engine_for(url)
    forms: dict[str, Callable[[Any, NewJob], Any]] = {
        "insert_one": lambda conn, new: _run(
            conn, engine, producer._FORMS[(False, False, False)], [new], 0
        ),
        # sent to idle queues (a thousand, each with room in its window of 200): every job
        # is inserted dispatched, as in ``bench submit``'s direct runs
        "send_one": lambda conn, new: _run(
            conn,
            engine,
            producer._FORMS[(False, False, True)],
            [replace(new, queue=f"q{new.data['i'] % 1000}")],
            200,
        ),
        "insert_many_of_one": lambda conn, new: _run(
            conn, engine, producer._FORMS[(False, True, False)], [new, new][:1], 0, arrays=True
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in forms}
    with driver_write(engine) as conn:
        for form in forms.values():  # prepare each form; plans settle
            for _ in range(20):
                form(conn, _job())
        for r in range(rounds):
            order = list(forms) if r % 2 == 0 else list(reversed(forms))
            for name in order:
                new_jobs = [_job(i) for i in range(calls)]
                start = time.perf_counter()
                for new in new_jobs:
                    forms[name](conn, new)
                times[name].append((time.perf_counter() - start) / calls * 1e6)
    engine.dispose()
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def _run(
    conn: Any,
    engine: Any,
    form: producer.HotStatement,
    new_jobs: list[NewJob],
    window: int,
    *,
    arrays: bool = False,
) -> Any:
    """``form`` for ``new_jobs`` with the parameters ``_run_insert`` builds (as arrays when
    ``arrays``, even for one job)."""
    if arrays:
        _, params = producer._run_insert([*new_jobs, *new_jobs], window)
        params = {name: value[: len(new_jobs)] for name, value in params.items()}
    else:
        _, params = producer._run_insert(new_jobs, window)
    return form.execute_dbapi(conn, engine.dialect, params)


def _copy_crossover(
    url: str, sizes: list[int], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    engine = create_ledger_engine(url)
    rates: dict[str, dict[int, list[float]]] = {"statement": {}, "copy": {}}
    copy_from = producer.COPY_FROM
    try:
        for size in sizes:
            batches = max(10, 3000 // size)
            for r in range(max(2, rounds // 2)):
                order = ("statement", "copy") if r % 2 == 0 else ("copy", "statement")
                for how in order:
                    producer.COPY_FROM = size + 1 if how == "statement" else size
                    work = [[_job(i) for i in range(size)] for _ in range(batches)]
                    start = time.perf_counter()
                    for new_jobs in work:
                        with engine.begin() as conn:
                            producer.insert_jobs(conn, new_jobs)
                    elapsed = time.perf_counter() - start
                    rates[how].setdefault(size, []).append(size * batches / elapsed)
    finally:
        producer.COPY_FROM = copy_from
        engine.dispose()
    statement, copy = (
        {str(size): round(statistics.median(r)) for size, r in rates[how].items()}
        for how in ("statement", "copy")
    )
    return statement, copy
