"""The driver conformance suite (River's ``riverdrivertest`` is the model): one test body per
``db.driver.Driver`` method and capability, run once per driver against a real database (a
SQLite file and PostgreSQL, through the ``ledger_url`` fixture). A capability flag is checked
against what the database does, not only against its documented value: where a flag is true
the faster path must work, where it is false the fallback must give the same result.

The last tests go through the public ledger API (insert, dispatch, lease read and claim,
complete, a refused transition) and assert the same observable results on both databases.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, literal, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from db import queries
from db.clock import db_clock
from db.driver import Driver, driver_for, driver_named
from db.engine import engine_for, read, transaction, write
from db.ledger import admin, attempts, core, maintainer, producer
from db.locks import try_xact_lock, xact_lock
from db.models import Job, QueueControl
from db.notify import Listener
from db.states import JobStatus
from db.types import db_now, json_array_length, utc_hour, utc_minute

S = JobStatus
jobs = Job.__table__
controls = QueueControl.__table__

#: every capability flag of ``Driver``, and its documented value per database
CAPABILITIES = {
    "notifies": {"postgresql": True, "sqlite": False},
    "advisory_locks": {"postgresql": True, "sqlite": False},
    "prepared_hot_path": {"postgresql": True, "sqlite": False},
    "supports_copy": {"postgresql": True, "sqlite": False},
    "array_sql": {"postgresql": True, "sqlite": False},
    "dependents_released_by_trigger": {"postgresql": True, "sqlite": False},
    "statement_timeout": {"postgresql": True, "sqlite": False},
    "limited_union_branches": {"postgresql": True, "sqlite": False},
    "id_prefix_search": {"postgresql": True, "sqlite": False},
    "sql_rollup": {"postgresql": True, "sqlite": False},
    "server_process": {"postgresql": True, "sqlite": False},
}


@pytest.fixture
def engine(ledger_url: str) -> Engine:
    return engine_for(ledger_url)


@pytest.fixture
def driver(engine: Engine) -> Driver:
    return driver_for(engine)


def _job(*, priority: int = 0, data: dict[str, Any] | None = None, **kw: Any) -> producer.NewJob:
    data = {"n": 1} if data is None else data
    return producer.NewJob("conf.t", "conf", priority, data, 3, **kw)


def _insert(engine: Engine, *new: producer.NewJob) -> list[uuid.UUID]:
    with transaction(engine) as conn:
        return producer.insert_jobs(conn, list(new))


def _status(engine: Engine, job_id: uuid.UUID) -> str | None:
    with read(engine) as conn:
        return core.status_of(conn, job_id)


# --- resolution and capability flags ---------------------------------------------------------


def test_driver_is_resolved_once_per_dialect(engine: Engine, driver: Driver) -> None:
    assert driver.name == engine.dialect.name
    with read(engine) as conn:
        assert driver_for(conn) is driver
    assert driver_named(engine.dialect.name) is driver
    with pytest.raises(ValueError, match="no ledger driver"):
        driver_named("oracle")


def test_capability_flags_are_as_documented(driver: Driver) -> None:
    flags = {name: getattr(driver, name) for name in CAPABILITIES}
    assert flags == {name: values[driver.name] for name, values in CAPABILITIES.items()}
    assert all(isinstance(value, bool) for value in flags.values())


# --- insert with conflicts ---------------------------------------------------------------


def test_insert_on_conflict_do_nothing_and_do_update(engine: Engine, driver: Driver) -> None:
    row = {"queue_name": "conf", "paused": True, "reason": "first", "updated_at": db_now()}
    with write(engine) as conn:
        inserted = conn.execute(driver.insert(controls).values(**row).returning(controls.c.reason))
        assert inserted.scalars().all() == ["first"]
    with write(engine) as conn:  # the same key again: nothing inserted, nothing returned
        again = driver.insert(controls).values(**{**row, "reason": "second"})
        returned = conn.execute(
            again.on_conflict_do_nothing(index_elements=[controls.c.queue_name]).returning(
                controls.c.reason
            )
        )
        assert returned.first() is None
    with read(engine) as conn:
        assert conn.execute(select(controls.c.reason)).scalars().all() == ["first"]
    with write(engine) as conn:  # do_update takes the excluded row's values
        upsert = driver.insert(controls).values(**{**row, "paused": False, "reason": "third"})
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[controls.c.queue_name],
                set_={"paused": upsert.excluded.paused, "reason": upsert.excluded.reason},
            )
        )
    with read(engine) as conn:
        rows = conn.execute(select(controls.c.paused, controls.c.reason)).all()
    assert [tuple(r) for r in rows] == [(False, "third")]
    with pytest.raises(IntegrityError), write(engine) as conn:  # no ON CONFLICT: refused
        conn.execute(driver.insert(controls).values(**row))


# --- the clock ---------------------------------------------------------------------------


def test_clock_is_aware_utc_and_close_to_the_client_clock(engine: Engine, driver: Driver) -> None:
    with read(engine) as conn:
        before = datetime.now(UTC)
        now = driver.clock(conn)
        after = datetime.now(UTC)
        assert db_clock(conn).tzinfo is not None
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before.timestamp() - 1 <= now.timestamp() <= after.timestamp() + 1


# --- advisory locks ------------------------------------------------------------------------


@pytest.fixture
def two_transactions(engine: Engine) -> Iterator[tuple[Connection, Connection]]:
    """Two connections, each in a transaction of its own. On SQLite both are read
    transactions: two write transactions cannot be open at once (``BEGIN IMMEDIATE``)."""
    options = {"sqlite_begin": "DEFERRED"} if engine.dialect.name == "sqlite" else {}
    with (
        engine.connect().execution_options(**options) as one,
        engine.connect().execution_options(**options) as other,
    ):
        one.begin()
        other.begin()
        yield one, other


def test_try_xact_lock_excludes_another_transaction(
    driver: Driver, two_transactions: tuple[Connection, Connection]
) -> None:
    one, other = two_transactions
    key = uuid.uuid4().int % 2**31
    assert driver.try_xact_lock(one, key)
    assert driver.try_xact_lock(one, key)  # re-entrant in the holding transaction
    # PostgreSQL refuses the second holder; SQLite grants every lock (its BEGIN IMMEDIATE
    # serializes writers already), as ``advisory_locks`` says
    assert driver.try_xact_lock(other, key) is not driver.advisory_locks
    one.commit()  # a transaction-scoped lock ends with the transaction
    assert driver.try_xact_lock(other, key)
    assert try_xact_lock(other, f"conf-{key}")  # db.locks, by name


def test_xact_lock_waits_for_the_holder(
    driver: Driver, two_transactions: tuple[Connection, Connection]
) -> None:
    one, other = two_transactions
    key = uuid.uuid4().int % 2**31
    driver.xact_lock(one, key)
    taken = threading.Event()

    def take() -> None:
        driver.xact_lock(other, key)
        taken.set()

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    assert taken.wait(0.5) is not driver.advisory_locks  # waits only where locks exist
    one.commit()
    assert taken.wait(5)
    waiter.join(5)
    xact_lock(other, "conf")  # db.locks, by name: the holder of every other key is gone


# --- pick once, text search, estimates ------------------------------------------------------


def test_in_picked_updates_exactly_the_picked_rows(engine: Engine, driver: Driver) -> None:
    ids = _insert(engine, *(_job(priority=p) for p in range(5)))
    picked = (
        select(jobs.c.id)
        .where(jobs.c.status == S.QUEUED.value)
        .order_by(jobs.c.priority.desc())
        .limit(2)
    )
    with transaction(engine) as conn:
        changed = conn.execute(
            update(jobs)
            .where(driver.in_picked(jobs.c.id, picked))
            .values(status=S.DISPATCHED.value)
            .returning(jobs.c.id)
        )
        assert set(changed.scalars()) == {ids[4], ids[3]}
        assert core.ids_from(conn, picked) is not None  # the ledger's helper, same driver


def test_text_contains_matches_json_text_in_any_case(engine: Engine, driver: Driver) -> None:
    hello, percent, other = _insert(
        engine,
        _job(data={"greeting": "Hello World"}),
        _job(data={"rate": "100% off_now"}),
        _job(data={"greeting": "bye"}),
    )

    def matching(pattern: str) -> set[uuid.UUID]:
        with read(engine) as conn:
            rows = conn.execute(select(jobs.c.id).where(driver.text_contains(jobs.c.data, pattern)))
            return set(rows.scalars())

    assert matching("%hello world%") == {hello}
    assert matching("%HELLO%") == {hello}
    assert matching("%greeting%") == {hello, other}  # the JSON text, keys included
    assert matching("%100\\%%") == {percent}  # a backslash escapes LIKE's wildcards
    assert matching("%f\\_n%") == {percent}
    assert matching("%0\\_%") == set()
    assert other not in matching("%o w%")


def test_id_prefix_search_as_documented(engine: Engine, driver: Driver) -> None:
    (job_id,) = _insert(engine, _job(data={"x": 1}))
    with read(engine) as conn:
        found = queries.get_jobs(conn, search=str(job_id)[:8])
    assert ([r["id"] for r in found] == [job_id]) is driver.id_prefix_search


def test_value_estimates(engine: Engine, driver: Driver) -> None:
    _insert(engine, *(_job() for _ in range(20)))
    with write(engine) as conn:
        conn.execute(text("ANALYZE queue_jobs" if driver.name == "postgresql" else "ANALYZE"))
    with read(engine) as conn:
        estimates = driver.value_estimates(conn, "queue_jobs", "status")
        assert queries.status_estimates(conn) == estimates
    if driver.name == "postgresql":
        assert estimates == {S.QUEUED.value: 20}
    else:
        assert estimates == {}


# --- capabilities against what the database does --------------------------------------------


def test_notifies(ledger_url: str, engine: Engine, driver: Driver) -> None:
    if not driver.notifies:
        return  # nothing to listen to: the maintainer polls
    listener = Listener(ledger_url)
    try:
        assert listener.wait(0.05) is None  # connected and listening
        _insert(engine, _job())
        assert listener.wait(5) is not None
    finally:
        listener.close()


def test_statement_timeout(engine: Engine, driver: Driver) -> None:
    if not driver.statement_timeout:
        return  # a payload search is one exact statement
    with read(engine) as conn:
        conn.execute(select(func.set_config("statement_timeout", "50", False)))
        try:
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(2)"))
        finally:
            conn.exec_driver_sql("RESET statement_timeout")


def test_dependents_released_by_trigger(engine: Engine, driver: Driver) -> None:
    parent = _job()
    child = _job(depends_on=(parent.id,))
    with transaction(engine) as conn:
        producer.insert_graph(conn, [parent, child])
    assert _status(engine, child.id) == S.WAITING.value
    with transaction(engine) as conn:  # a bare UPDATE, outside the ledger's functions
        conn.execute(
            update(jobs)
            .where(jobs.c.id == parent.id)
            .values(status=S.COMPLETED.value, finished_at=db_now(), completed_at=db_now())
        )
    released = _status(engine, child.id) == S.QUEUED.value
    assert released is driver.dependents_released_by_trigger


def test_hot_statement_is_prepared_where_documented(engine: Engine, driver: Driver) -> None:
    statement = core.HotStatement(select(literal(41) + 1))
    with read(engine) as conn:
        assert statement.execute(conn, {}).scalar_one() == 42
        assert statement.execute(conn, {}).scalar_one() == 42  # from the compiled form
        compiled_for_this = (
            statement._compiled is not None and statement._compiled[0] is conn.dialect
        )
    assert compiled_for_this is driver.prepared_hot_path


def test_bulk_insert_copy_or_multirow_gives_the_same_rows(engine: Engine, driver: Driver) -> None:
    later = datetime(2100, 1, 1, tzinfo=UTC)
    new = [_job(data={"i": i}, scheduled_at=later if i == 2 else None) for i in range(3)]
    assert _insert(engine, *new) == [j.id for j in new]  # COPY where supports_copy
    with read(engine) as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.data)).all()
    got = {r.id: (r.status, r.data) for r in rows}
    assert got == {
        new[0].id: (S.QUEUED.value, {"i": 0}),
        new[1].id: (S.QUEUED.value, {"i": 1}),
        new[2].id: (S.SCHEDULED.value, {"i": 2}),
    }


def test_newest_jobs_read_per_status_or_sorted_give_the_same_page(engine: Engine) -> None:
    ids = _insert(engine, *(_job(data={"i": i}) for i in range(4)))
    with transaction(engine) as conn:
        conn.execute(update(jobs).where(jobs.c.id == ids[1]).values(status=S.SCHEDULED.value))
    with read(engine) as conn:
        everything = queries.get_jobs(conn, limit=10)  # per status where limited unions exist
        by_type = queries.get_jobs(conn, type="conf.t", limit=10)  # always the plain statement
        second_page = queries.get_jobs(conn, limit=2, offset=2)
    assert [r["id"] for r in everything] == [r["id"] for r in by_type]
    assert sorted(r["id"] for r in everything) == sorted(ids)
    assert [r["id"] for r in second_page] == [r["id"] for r in everything][2:4]


def test_sql_rollup_computes_what_python_computes(engine: Engine, driver: Driver) -> None:
    from metrics.rollup import compute_postgresql, compute_python, floor_minute, rollup_range

    with read(engine) as conn:
        now = db_clock(conn)
    minute = floor_minute(now) - timedelta(minutes=3)
    ids = _insert(engine, *(_job(data={"i": i}) for i in range(4)))
    with transaction(engine) as conn:
        for i, job_id in enumerate(ids):
            failed = i == 3
            errors = [{"kind": "error", "at": (minute + timedelta(seconds=20)).isoformat()}]
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=(S.FAILED if failed else S.COMPLETED).value,
                    attempt=1,
                    scheduled_at=minute,
                    started_at=minute + timedelta(seconds=10),
                    finished_at=minute + timedelta(seconds=11 + i),
                    completed_at=None if failed else minute + timedelta(seconds=11 + i),
                    errors=errors if failed else [],
                )
            )
    ws, we = minute - timedelta(minutes=1), minute + timedelta(minutes=2)
    with read(engine) as conn:
        by_python = compute_python(conn, ws, we, now)
        if driver.sql_rollup:
            by_sql = compute_postgresql(conn, ws, we, now)
            assert set(by_sql) == set(by_python)
            for key, py in by_python.items():
                sql = by_sql[key]
                for name in ("job_count", "completed_count", "failed_count", "error_count"):
                    assert getattr(sql, name) == getattr(py, name), (key, name)
                assert sql.processing_hist == py.processing_hist, key
        else:  # the SQL aggregation is PostgreSQL's (percentile_cont, FILTER, jsonb): refused
            with pytest.raises(DBAPIError):
                compute_postgresql(conn, ws, we, now)
    per_queue = by_python[("conf", None, minute)]
    assert (per_queue.job_count, per_queue.failed_count, per_queue.error_count) == (4, 1, 1)
    # the rollup takes the algorithm the flag names, and writes with ``Driver.insert``
    assert rollup_range(engine, start=ws, end=we, now=now).queue_rows >= 1
    with read(engine) as conn:
        written = conn.execute(
            text("SELECT job_count, error_count FROM queue_metrics WHERE queue_name = 'conf'")
        ).all()
    assert [tuple(r) for r in written if r[0]] == [(4, 1)]


def test_server_process(engine: Engine, driver: Driver) -> None:
    """A statement's work is done by a server process (this process waits, using no CPU) or
    by this process (the embedded file: its CPU time grows with the statement's)."""
    count = text(
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000)"
        " SELECT count(*) FROM c"
    )
    with read(engine) as conn:
        cpu, wall = time.process_time(), time.perf_counter()
        assert conn.execute(count).scalar_one() == 1_000_000
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert wall > 0.02
    assert (cpu < wall / 10) is driver.server_process, (cpu, wall)


def test_unindexed_keeps_the_planner_off_an_index(engine: Engine, driver: Driver) -> None:
    ids = _insert(engine, _job(), _job())
    plain = select(jobs.c.id).where(jobs.c.queue == "conf")
    steered = select(jobs.c.id).where(driver.unindexed(jobs.c.queue) == "conf")
    with read(engine) as conn:
        assert set(conn.execute(steered).scalars()) == set(conn.execute(plain).scalars())
        assert set(conn.execute(steered).scalars()) == set(ids)

        def sql(stmt: Any) -> str:
            return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))

        if driver.name == "sqlite":  # told: the term is searched by no index, the table scanned

            def plan(stmt: Any) -> str:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql(stmt)}").all()
                return " / ".join(str(r[-1]) for r in rows)

            assert "(queue=?" in plan(plain)
            assert "(queue=" not in plan(steered) and "SCAN queue_jobs" in plan(steered)
        else:  # a planner with statistics is left alone: the very same statement
            assert sql(steered) == sql(plain)


# --- constructs of db.types that compile per database -----------------------------------------


def test_json_array_length(engine: Engine) -> None:
    none, two = _insert(engine, _job(), _job())
    with transaction(engine) as conn:
        conn.execute(update(jobs).where(jobs.c.id == two).values(errors=[{"a": 1}, {"b": 2}]))
    with read(engine) as conn:
        rows = conn.execute(select(jobs.c.id, json_array_length(jobs.c.errors))).all()
        assert {r[0]: r[1] for r in rows} == {none: 0, two: 2}
        nonempty = select(jobs.c.id).where(json_array_length(jobs.c.errors) > 0)
        assert conn.execute(nonempty).scalars().all() == [two]


def test_utc_minute_and_hour(engine: Engine) -> None:
    (job_id,) = _insert(engine, _job())
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    minute, hour = datetime(2026, 1, 2, 3, 4, tzinfo=UTC), datetime(2026, 1, 2, 3, tzinfo=UTC)
    with transaction(engine) as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(finished_at=at))
    with read(engine) as conn:
        floors = select(utc_minute(jobs.c.finished_at), utc_hour(jobs.c.finished_at))
        assert tuple(conn.execute(floors).one()) == (minute, hour)
        # equal to a stored minute or hour, in SQL (retention matches a rollup row's minute)
        for floor, value in ((utc_minute, minute), (utc_hour, hour)):
            same = select(jobs.c.id).where(floor(jobs.c.finished_at) == value)
            assert conn.execute(same).scalars().all() == [job_id]


# --- the ledger through its public API: the same observable results -------------------------


def test_insert_dispatch_lease_complete(engine: Engine) -> None:
    first, second = _insert(engine, _job(priority=1), _job(priority=5))
    with transaction(engine) as conn:
        rows = maintainer.dispatch(conn, "conf", 10)
    assert [r.id for r in rows] == [second, first]  # best first
    lease = {r.id: r.lease for r in rows}
    with read(engine) as conn:
        claimed = attempts.leased(conn, second, lease[second])
        assert attempts.leased(conn, second, lease[second] + 1) is None  # a stale message
    assert claimed is not None
    assert (claimed.id, claimed.attempt, claimed.data) == (second, 1, {"n": 1})
    worker = uuid.uuid4()
    with write(engine) as conn:
        assert attempts.start_many(conn, [(second, lease[second], worker, 0.0)]) == 1
        started = attempts.claim(conn, first, worker, lease[first])
    assert started is not None and started.id == first
    with write(engine) as conn:
        assert attempts.complete(conn, first, lease[first], {"ok": 1}, worker_id=worker)
        assert not attempts.complete(conn, first, lease[first] + 1, None)  # fenced off
        recorded = attempts.complete_many(
            conn,
            [
                attempts.Outcome(second, lease[second], {"ok": 2}, worker),
                attempts.Outcome(second, lease[second] - 1, {"stale": True}, worker),
            ],
        )
    assert recorded == {second}
    with read(engine) as conn:
        results = dict(conn.execute(select(jobs.c.id, jobs.c.result)).all())
        statuses = set(conn.execute(select(jobs.c.status)).scalars())
    assert results == {first: {"ok": 1}, second: {"ok": 2}}
    assert statuses == {S.COMPLETED.value}


def test_refused_transition(engine: Engine) -> None:
    (job_id,) = _insert(engine, _job())
    with write(engine) as conn:
        with pytest.raises(core.TransitionError, match="cannot retry"):
            admin.retry(conn, job_id)  # a queued job cannot be retried
        assert admin.cancel(conn, job_id) == S.CANCELLED.value
        with pytest.raises(core.TransitionError, match="cannot cancel"):
            admin.cancel(conn, job_id)
        with pytest.raises(core.TransitionError, match="does not exist"):
            admin.retry(conn, uuid.uuid4())
    assert _status(engine, job_id) == S.CANCELLED.value


def test_idempotency_key_returns_the_live_job(engine: Engine) -> None:
    (first,) = _insert(engine, _job(idempotency_key="k"))
    again = _job(idempotency_key="k")
    assert _insert(engine, again) == [first]
    with pytest.raises(producer.KeyConflict):
        _insert(engine, _job(idempotency_key="k", data={"n": 2}))


def test_fair_pass_reads_the_same_best_jobs(engine: Engine) -> None:
    from db import partitions

    ids = _insert(
        engine,
        *(_job(partition_key=key, priority=p) for key in ("a", "b") for p in range(3)),
    )
    with read(engine) as conn:
        best = partitions.best_queued(conn, "conf", "conf.t", {"a": 2, "b": 1, "c": 4})
    by_key: dict[str, list[int]] = {}
    for c in sorted(best, key=lambda c: (c.partition_key, -c.priority)):
        by_key.setdefault(c.partition_key, []).append(c.priority)
    assert by_key == {"a": [2, 1], "b": [2]}
    assert {c.id for c in best} <= set(ids)


def test_clock_moves(engine: Engine) -> None:
    with read(engine) as conn:
        first = db_clock(conn)
    time.sleep(0.01)
    with read(engine) as conn:
        assert db_clock(conn) > first
