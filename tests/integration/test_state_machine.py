"""The ledger's transitions against ``db.states.TRANSITIONS``, driven by hypothesis.

A ``RuleBasedStateMachine`` calls the real functions of ``db.ledger`` on a handful of jobs in a
real database (SQLite and PostgreSQL, through the ``ledger_url`` fixture), with current and
stale leases, from every state the jobs happen to be in. After every call it reads every job
back and checks:

- each status change is a move (from, to) of the transition(s) the called function performs,
  as ``TRANSITIONS`` has them now (the from/to sets are read at run time, so a transition
  table that grows keeps passing; a transition added to ``Transition`` after this test was
  written is allowed to any function, since the test cannot know who performs it);
- a call that the job's state does not allow (status not a source of the transition, a stale
  lease, another job than the one named) either raises ``TransitionError`` or changes nothing,
  and a call that raises changes nothing;
- terminal rows, and only they, have ``finished_at``; ``0 <= attempt <= max_attempts``; a
  job that holds a lease has one; ``lease`` never decreases.

Where the outcome is part of the function's contract (a fenced outcome with the right lease,
``retry``, ``hand_back_all``, ``dispatch``), it also checks that the call did move the job.
Return values are checked only where they are the contract (the fenced outcomes); ``cancel``
and ``requeue_lost`` are checked by their effect only.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, delete, select, update

from db.engine import engine_for, read, write
from db.ledger import admin, attempts, core, maintainer, producer
from db.models import Job, JobDependency, QueueControl
from db.states import LEASED, TERMINAL, TRANSITIONS, JobStatus, Transition

S = JobStatus
T = Transition
jobs = Job.__table__
edges = JobDependency.__table__

QUEUE = "sm"
TYPES = ("sm.a", "sm.b")
WORKERS = (uuid.UUID(int=0xA1), uuid.UUID(int=0xA2))
MAX_JOBS = 5
#: a lease as given: the job's own, or a stale/future one
LEASE_OFFSETS = st.sampled_from([0, 0, -1, 1])
#: the transitions this test knew when it was written; any other is allowed to every call
KNOWN_TRANSITIONS = frozenset(
    {
        "dispatch",
        "reconcile",
        "stage",
        "claim",
        "start",
        "complete",
        "retry_later",
        "fail",
        "cancel",
        "finish_cancelled",
        "retry",
        "rescue",
        "hand_back",
        "release",
        "dependency_failed",
        "revive",
    }
)

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Row:
    """What the checks look at of one job (every column a transition writes)."""

    queue: str
    type: str
    status: str
    attempt: int
    lease: int
    max_attempts: int
    scheduled_at: datetime
    started_at: datetime | None
    dispatched_at: datetime | None
    finished_at: datetime | None
    completed_at: datetime | None
    cancel_requested_at: datetime | None
    worker_id: uuid.UUID | None
    errors: int
    updated_at: datetime


def _transitions(*named: Transition) -> set[Transition]:
    return set(named) | {t for t in Transition if t.value not in KNOWN_TRANSITIONS}


def moves(*named: Transition) -> set[tuple[str, str]]:
    """Every (from, to) the named transitions allow, read from ``TRANSITIONS``."""
    return {
        (a.value, b.value)
        for t in _transitions(*named)
        for a in TRANSITIONS[t][0]
        for b in TRANSITIONS[t][1]
    }


def sources(*named: Transition) -> set[str]:
    return {s.value for t in _transitions(*named) for s in TRANSITIONS[t][0]}


def _optional(name: str, *params: str) -> Callable[..., Any] | None:
    """``db.ledger.admin.<name>`` if it exists with these leading parameters (the ledger is being
    changed: a function that is not there, or not yet as this test calls it, is skipped)."""
    fn = getattr(admin, name, None)
    if fn is None:
        return None
    names = list(inspect.signature(fn).parameters)
    return fn if names[: len(params)] == list(params) else None


REQUEST_CANCEL = _optional("request_cancel", "conn", "job_id")
CANCEL_UNSTARTED = _optional("cancel_unstarted", "conn", "job_id", "lease")


def read_rows(conn: Connection) -> dict[uuid.UUID, Row]:
    cols = [jobs.c[name] for name in Row.__dataclass_fields__ if name != "errors"]
    stmt = select(jobs.c.id, *cols, jobs.c.errors).where(jobs.c.queue == QUEUE)
    out = {}
    for r in conn.execute(stmt):
        values = dict(r._mapping)
        job_id = values.pop("id")
        values["errors"] = len(values["errors"] or [])
        out[job_id] = Row(**values)
    return out


class LedgerMachine(RuleBasedStateMachine):
    """Random calls of the ledger on at most ``MAX_JOBS`` jobs of one queue."""

    url: ClassVar[str]
    #: plain jobs the ``insert_jobs`` rule may add (fewer: more room for dependent jobs)
    plain_max: ClassVar[int] = MAX_JOBS

    def __init__(self) -> None:
        super().__init__()
        self.engine = engine_for(self.url)
        with write(self.engine) as conn:
            conn.execute(delete(Job).where(jobs.c.queue == QUEUE))
            conn.execute(delete(QueueControl).where(QueueControl.queue_name == QUEUE))
            conn.execute(delete(JobDependency))
        self.rows: dict[uuid.UUID, Row] = {}
        #: jobs inserted with dependencies: their own dependencies move them (release,
        #: dependency_failed, revive) whatever the call named
        self.dependent: set[uuid.UUID] = set()
        self.order: list[uuid.UUID] = []  # insertion order: what the draws index
        self.leases: dict[uuid.UUID, int] = {}

    # --- the checks ------------------------------------------------------------------------

    def snapshot(self) -> dict[uuid.UUID, Row]:
        with read(self.engine) as conn:
            return read_rows(conn)

    def step(
        self,
        name: str,
        allowed: Iterable[Transition],
        call: Callable[[Connection], Any],
        *,
        targets: set[uuid.UUID] | None = None,
        fence: dict[uuid.UUID, int] | None = None,
        requests_cancel: bool = False,
    ) -> tuple[Any, dict[uuid.UUID, Row], dict[uuid.UUID, Row]]:
        """Run one ledger call in its own write and check every job's move.

        ``allowed``: the transitions ``call`` performs; ``targets``: the only jobs it may
        touch (None: any); ``fence``: the lease it was given per job (a job whose lease
        differs is not touched); ``requests_cancel``: it may set ``cancel_requested_at`` on
        a job that holds a lease without changing its state (a cancel request is not a
        transition). Returns (result or the TransitionError, rows before, rows after).
        """
        named = tuple(allowed)
        before = self.rows
        try:
            with write(self.engine) as conn:
                result: Any = call(conn)
        except core.TransitionError as exc:
            after = self.snapshot()
            assert after == before, f"{name} raised {exc} and changed rows"
            assert exc.transition in _transitions(*named), (name, exc.transition)
            if exc.status is not None:
                assert exc.status not in sources(exc.transition), (name, str(exc))
            return exc, before, after
        after = self.snapshot()
        assert set(after) == set(before), f"{name} created or deleted jobs"
        allowed_moves = moves(*named)
        allowed_from = sources(*named)
        for job_id, b in before.items():
            a = after[job_id]
            if job_id in self.dependent and (
                (b.status, a.status) in moves(T.RELEASE, T.DEPENDENCY_FAILED, T.REVIVE)
                or b.status == a.status == S.WAITING
            ):
                continue  # a dependency of it ended or ran again: checked by the invariant
            untouched = (targets is not None and job_id not in targets) or (
                fence is not None and job_id in fence and fence[job_id] != b.lease
            )
            if untouched or b.status not in allowed_from:
                expected = b
                if requests_cancel and b.status in LEASED and not untouched:
                    expected = replace(
                        b, cancel_requested_at=a.cancel_requested_at, updated_at=a.updated_at
                    )
                    assert b.cancel_requested_at is None or (
                        a.cancel_requested_at == b.cancel_requested_at
                    ), f"{name}: a second cancel request moved the first one"
                assert a == expected, f"{name} changed job {job_id} it may not:\n{b}\n{a}"
            if a.status != b.status:
                assert (b.status, a.status) in allowed_moves, (
                    f"{name} moved job {job_id} {b.status} -> {a.status}, not a move of "
                    f"{sorted(t.value for t in _transitions(*named))}"
                )
        self.accept(after)
        return result, before, after

    def accept(self, rows: dict[uuid.UUID, Row]) -> None:
        for job_id, row in rows.items():
            assert row.lease >= self.leases.get(job_id, 0), f"lease of {job_id} went down"
            self.leases[job_id] = row.lease
        self.rows = rows

    @invariant()
    def waiting_jobs_wait_for_live_dependencies(self) -> None:
        """A ``waiting`` job counts exactly its live dependencies, at least one; a job that
        cancels on a failed dependency never waits behind one that is failed or
        cancelled."""
        if not self.dependent:
            return
        with read(self.engine) as conn:
            rows = conn.execute(
                select(edges.c.job_id, edges.c.depends_on).where(edges.c.job_id.in_(self.dependent))
            ).all()
            extra = {
                r.id: (r.deps_pending, r.on_dependency_failure)
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.deps_pending, jobs.c.on_dependency_failure).where(
                        jobs.c.id.in_(self.dependent)
                    )
                )
            }
        parents: dict[uuid.UUID, list[uuid.UUID]] = {}
        for child, parent in rows:
            parents.setdefault(child, []).append(parent)
        ended_badly = {S.FAILED.value, S.CANCELLED.value}
        for child in self.dependent:
            if self.rows[child].status != S.WAITING:
                continue
            statuses = [self.rows[p].status for p in parents[child]]
            live = sum(1 for st in statuses if S(st) not in TERMINAL)
            pending, mode = extra[child]
            assert live >= 1 and pending == live, (child, statuses, pending)
            if mode == "cancel":
                assert not ended_badly & set(statuses), (child, statuses)

    @invariant()
    def rows_are_consistent(self) -> None:
        for job_id, row in self.rows.items():
            status = S(row.status)
            assert (row.finished_at is not None) == (status in TERMINAL), (job_id, row)
            assert 0 <= row.attempt <= row.max_attempts, (job_id, row)
            if status in LEASED:
                assert row.lease >= 1 and row.attempt >= 1, (job_id, row)
            if status is S.COMPLETED:
                assert row.completed_at is not None, (job_id, row)

    # --- drawing jobs ------------------------------------------------------------------------

    def pick(self, data: st.DataObject, *preferred: JobStatus) -> uuid.UUID:
        """A job: mostly one in a ``preferred`` state when there is one (so that the allowed
        moves happen often), else any job (so that the refused calls are tried too)."""
        wanted = [i for i in self.order if S(self.rows[i].status) in preferred]
        if wanted and data.draw(st.integers(0, 3), label="prefer") < 3:
            return data.draw(st.sampled_from(wanted), label="job")
        return data.draw(st.sampled_from(self.order), label="job")

    def pick_attempt(self, data: st.DataObject) -> uuid.UUID:
        """A job for an attempt's write: running ones first half of the time (they are rarer
        than dispatched ones), else one holding a lease, else any."""
        running = [i for i in self.order if self.rows[i].status == S.RUNNING]
        if running and data.draw(st.booleans(), label="running first"):
            return data.draw(st.sampled_from(running), label="job")
        return self.pick(data, *LEASED)

    def pick_many(self, data: st.DataObject, *preferred: JobStatus) -> list[tuple[uuid.UUID, int]]:
        """1 to 3 distinct jobs, each with a lease offset."""
        picked: dict[uuid.UUID, int] = {}
        for _ in range(data.draw(st.integers(1, 3), label="how many")):
            picked.setdefault(self.pick(data, *preferred), data.draw(LEASE_OFFSETS, label="off"))
        return list(picked.items())

    # --- jobs ------------------------------------------------------------------------------------

    def _insert(self, n: int, due: str, max_attempts: int, kind: str) -> None:
        now = datetime.now(UTC)
        when = {"now": None, "past": now - timedelta(hours=1), "future": now + timedelta(hours=1)}
        new = [
            producer.NewJob(
                # ids in insertion order: the dispatch order breaks ties on the id, and random
                # ids would make runs differ
                id=uuid.UUID(int=len(self.order) + i + 1),
                type=kind,
                queue=QUEUE,
                priority=5,
                data={"n": i},
                max_attempts=max_attempts,
                scheduled_at=when[due],
            )
            for i in range(n)
        ]
        before = self.rows
        with write(self.engine) as conn:
            ids = producer.insert_jobs(conn, new)
        after = self.snapshot()
        assert set(after) == set(before) | set(ids)
        assert all(after[i] == row for i, row in before.items())
        expected = S.SCHEDULED if due == "future" else S.QUEUED
        for job_id in ids:  # an insert is not a transition: a new job is queued or scheduled
            row = after[job_id]
            assert (row.status, row.attempt, row.lease) == (expected, 0, 0), row
        self.order.extend(ids)
        self.accept(after)

    @initialize(
        n=st.integers(1, 2),
        due=st.sampled_from(["now", "past", "future"]),
        max_attempts=st.sampled_from([2, 1, 3]),
        kind=st.sampled_from(TYPES),
    )
    def first_jobs(self, n: int, due: str, max_attempts: int, kind: str) -> None:
        self._insert(n, due, max_attempts, kind)

    @precondition(lambda self: len(self.rows) < min(MAX_JOBS, self.plain_max))
    @rule(
        n=st.integers(1, 2),
        due=st.sampled_from(["now", "past", "future"]),
        max_attempts=st.sampled_from([2, 1, 3]),
        kind=st.sampled_from(TYPES),
    )
    def insert_jobs(self, n: int, due: str, max_attempts: int, kind: str) -> None:
        self._insert(n, due, max_attempts, kind)

    @precondition(lambda self: len(self.rows) < MAX_JOBS)
    @rule(
        data=st.data(),
        due=st.sampled_from(["now", "future"]),
        mode=st.sampled_from(["cancel", "run"]),
        max_attempts=st.sampled_from([1, 2]),
    )
    def insert_dependent(self, data: st.DataObject, due: str, mode: str, max_attempts: int) -> None:
        """Not a transition: a job that waits for 1 or 2 existing jobs goes in ``waiting``,
        or due when they have all ended as required, or ``cancelled`` when one of them
        failed or was cancelled (``cancel``)."""
        live = [i for i in self.order if S(self.rows[i].status) not in TERMINAL]
        pool = live if live and data.draw(st.integers(0, 3), label="live parents") else self.order
        drawn = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2), label="parents")
        parents = sorted(set(drawn))
        when = None if due == "now" else datetime.now(UTC) + timedelta(hours=1)
        new = producer.NewJob(
            id=uuid.UUID(int=len(self.order) + 1),
            type=TYPES[0],
            queue=QUEUE,
            priority=5,
            data={},
            max_attempts=max_attempts,
            scheduled_at=when,
            depends_on=tuple(parents),
            on_dependency_failure=mode,
        )
        before = self.rows
        with write(self.engine) as conn:
            producer.insert_graph(conn, [new])
        after = self.snapshot()
        assert all(after[i] == row for i, row in before.items())
        statuses = {before[p].status for p in parents}
        row = after[new.id]
        if mode == "cancel" and statuses & {S.FAILED.value, S.CANCELLED.value}:
            expected = S.CANCELLED
        elif statuses - {s.value for s in TERMINAL}:
            expected = S.WAITING
        else:
            expected = S.SCHEDULED if when is not None else S.QUEUED
        assert (row.status, row.attempt, row.lease) == (expected, 0, 0), (statuses, row)
        self.order.append(new.id)
        self.dependent.add(new.id)
        self.accept(after)

    @rule(data=st.data())
    def make_due(self, data: st.DataObject) -> None:
        """Not a ledger call: a waiting job's due time passes (``scheduled_at`` only)."""
        job = self.pick(data, S.SCHEDULED, S.RETRYING)
        past = datetime.now(UTC) - timedelta(hours=1)
        with write(self.engine) as conn:
            conn.execute(update(jobs).where(jobs.c.id == job).values(scheduled_at=past))
        after = self.snapshot()
        assert all(after[i].status == row.status for i, row in self.rows.items())
        self.accept(after)

    # --- the calls ---------------------------------------------------------------------------
    # One rule draws which kind of call to make: hypothesis enables a random subset of the
    # rules in each example (swarm testing), which with a rule per call left most examples
    # unable to take a job all the way (dispatch, start, outcome, retry).

    CALLS = (
        "stage_due",
        "dispatch",
        "reconcile",
        "start",
        "succeed",
        "fail",
        "hand_back_all",
        "cancel",
        "retry",
    )

    @rule(data=st.data(), call=st.sampled_from(CALLS))
    def act(self, data: st.DataObject, call: str) -> None:
        getattr(self, call)(data)

    def stage_due(self, data: st.DataObject) -> None:
        started = datetime.now(UTC)
        _, before, after = self.step("stage_due", [T.STAGE], maintainer.stage_due)
        for job_id, b in before.items():
            # clearly due before the call (the clocks of Python and the database may differ
            # by a little): must be staged
            if b.status in sources(T.STAGE) and b.scheduled_at < started - timedelta(seconds=1):
                assert after[job_id].status == S.QUEUED, (job_id, b, after[job_id])

    def dispatch(self, data: st.DataObject) -> None:
        limit = data.draw(st.integers(1, 3), label="limit")
        mode = data.draw(st.sampled_from(["all", "only", "exclude"]), label="mode")
        kw: dict[str, Any] = {}
        if mode == "only":
            kw["only_type"] = TYPES[0]
        elif mode == "exclude":
            kw["exclude_types"] = [TYPES[0]]
        rows, before, after = self.step(
            "dispatch", [T.DISPATCH], lambda c: maintainer.dispatch(c, QUEUE, limit, **kw)
        )
        assert len(rows) <= limit
        for r in rows:  # each takes its attempt and a new lease, which it returns
            b, a = before[r.id], after[r.id]
            assert (a.status, a.lease, a.attempt) == (S.DISPATCHED, b.lease + 1, b.attempt + 1)
            assert r.lease == a.lease
        if len(rows) < limit:  # everything eligible was taken
            for job_id, a in after.items():
                eligible = (
                    mode == "all"
                    or (mode == "only" and a.type == TYPES[0])
                    or (mode == "exclude" and a.type != TYPES[0])
                )
                assert not (eligible and a.status == S.QUEUED), (job_id, a)

    def reconcile(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(["requeue_lost", "requeue_dispatched"]), label="call")
        if call == "requeue_dispatched":
            self.step(call, [T.RECONCILE], lambda c: maintainer.requeue_dispatched(c, QUEUE))
            return
        job = self.pick(data, S.DISPATCHED)
        lease = self.rows[job].lease + data.draw(LEASE_OFFSETS, label="offset")
        self.step(
            call,
            [T.RECONCILE],
            lambda c: maintainer.requeue_lost(c, [(job, lease)]),
            targets={job},
            fence={job: lease},
        )

    def start(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(["start_many", "claim", "leased"]), label="call")
        worker = data.draw(st.sampled_from(WORKERS), label="worker")
        if call == "start_many":
            self.start_many(data, worker)
        elif call == "claim":
            self.claim(data, worker)
        else:
            self.leased(data)

    def leased(self, data: st.DataObject) -> None:
        job = self.pick(data, S.DISPATCHED)
        offset = data.draw(LEASE_OFFSETS, label="offset")
        lease = self.rows[job].lease + offset
        found, before, _ = self.step(
            "leased", [], lambda c: attempts.leased(c, job, lease), targets=set()
        )
        b = before[job]
        assert (found is not None) == (b.status == S.DISPATCHED and offset == 0), (b, found)

    def start_many(self, data: st.DataObject, worker: uuid.UUID) -> None:
        picks = self.pick_many(data, S.DISPATCHED)
        started = [(job, self.rows[job].lease + off, worker, 0.01) for job, off in picks]
        fence = {job: lease for job, lease, _, _ in started}
        recorded, before, after = self.step(
            "start_many",
            [T.START],
            lambda c: attempts.start_many(c, started),
            targets=set(fence),
            fence=fence,
        )
        expect = {j for j, lease in fence.items() if before[j].status == S.DISPATCHED}
        expect = {j for j in expect if before[j].lease == fence[j]}
        assert recorded == len(expect)
        for job_id in expect:
            assert (after[job_id].status, after[job_id].worker_id) == (S.RUNNING, worker)

    def claim(self, data: st.DataObject, worker: uuid.UUID) -> None:
        job = self.pick(data, S.DISPATCHED, S.QUEUED)
        mode = data.draw(st.sampled_from(["lease", "no lease", "stale"]), label="mode")
        b = self.rows[job]
        lease = {"lease": b.lease, "no lease": None, "stale": b.lease - 1}[mode]
        claimed, _, after = self.step(
            "claim",
            [T.CLAIM],
            lambda c: attempts.claim(c, job, worker, lease),
            targets={job},
            fence=None if lease is None else {job: lease},
        )
        a = after[job]
        if lease is None:
            may = b.status in sources(T.CLAIM)
        else:
            may = b.status == S.DISPATCHED and lease == b.lease
        assert (claimed is not None) == may, (mode, b, claimed)
        if claimed is not None:
            assert (a.status, a.worker_id) == (S.RUNNING, worker)
            assert (claimed.attempt, claimed.lease) == (a.attempt, a.lease)
            if b.status == S.QUEUED:  # a fresh start takes the attempt and a new lease
                assert (a.attempt, a.lease) == (b.attempt + 1, b.lease + 1)
            else:
                assert (a.attempt, a.lease) == (b.attempt, b.lease)

    @staticmethod
    def may_write(b: Row, lease: int) -> bool:
        """Whether an attempt's write with ``lease`` gets through its fence."""
        return b.status in LEASED and b.lease == lease

    def succeed(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(["complete", "complete_many"]), label="call")
        if call == "complete_many":
            self.complete_many(data)
            return
        job = self.pick_attempt(data)
        lease = self.rows[job].lease + data.draw(LEASE_OFFSETS, label="offset")
        worker = data.draw(st.sampled_from((None, *WORKERS)), label="worker")
        started_ago = data.draw(st.sampled_from([None, 0.5]), label="started_ago")
        done, before, after = self.step(
            "complete",
            [T.COMPLETE],
            lambda c: attempts.complete(
                c, job, lease, {"ok": True}, worker_id=worker, started_ago=started_ago
            ),
            targets={job},
            fence={job: lease},
        )
        assert done == self.may_write(before[job], lease)
        if done:
            assert after[job].status == S.COMPLETED

    def complete_many(self, data: st.DataObject) -> None:
        outcomes = [
            attempts.Outcome(id=job, lease=self.rows[job].lease + off, result={"n": 1})
            for job, off in self.pick_many(data, *LEASED)
        ]
        fence = {o.id: o.lease for o in outcomes}
        done, before, after = self.step(
            "complete_many",
            [T.COMPLETE],
            lambda c: attempts.complete_many(c, outcomes),
            targets=set(fence),
            fence=fence,
        )
        assert done == {j for j, lease in fence.items() if self.may_write(before[j], lease)}
        assert all(after[j].status == S.COMPLETED for j in done)

    def fail(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(["fail_attempt", "finish_cancelled"]), label="call")
        job = self.pick_attempt(data)
        b = self.rows[job]
        lease = b.lease + data.draw(LEASE_OFFSETS, label="offset")
        if call == "finish_cancelled":
            done, _, after = self.step(
                call,
                [T.FINISH_CANCELLED],
                lambda c: attempts.finish_cancelled(c, job, lease),
                targets={job},
                fence={job: lease},
            )
            assert done == (self.may_write(b, lease) and b.cancel_requested_at is not None)
            if done:
                assert after[job].status == S.CANCELLED
            return
        delay = data.draw(st.sampled_from([0.0, 3600.0]), label="retry delay")
        entry = core.error_entry(b.attempt, "boom", traceback=None, worker=None, kind="error")
        status, _, after = self.step(
            call,
            [T.RETRY_LATER, T.FAIL, T.RESCUE],
            lambda c: attempts.fail_attempt(c, job, lease, entry, delay),
            targets={job},
            fence={job: lease},
        )
        a = after[job]
        assert (status is not None) == self.may_write(b, lease), (b, status)
        if status is None:
            return
        if b.cancel_requested_at is not None:
            want = S.CANCELLED
        elif b.attempt < b.max_attempts:
            want = S.RETRYING
        else:
            want = S.FAILED
        assert status == a.status == want, (b, a, status)
        assert a.errors == b.errors + 1

    def hand_back_all(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(WORKERS), label="worker")
        _, before, after = self.step(
            "hand_back_all", [T.HAND_BACK], lambda c: attempts.hand_back_all(c, worker)
        )
        for job_id, b in before.items():
            a = after[job_id]
            if b.status == S.RUNNING and b.worker_id == worker:
                want = S.CANCELLED if b.cancel_requested_at is not None else S.QUEUED
                assert a.status == want, (b, a)
            else:
                assert a == b, (b, a)

    # --- admin -----------------------------------------------------------------------------------

    def cancel(self, data: st.DataObject) -> None:
        calls = ["cancel"]
        calls += ["cancel_unstarted"] if CANCEL_UNSTARTED else []
        calls += ["request_cancel"] if REQUEST_CANCEL else []
        call = data.draw(st.sampled_from(calls), label="call")
        if call == "cancel_unstarted" and CANCEL_UNSTARTED is not None:
            job = self.pick(data, *(S(s) for s in sources(T.CANCEL)))
            lease = self.rows[job].lease + data.draw(LEASE_OFFSETS, label="offset")
            self.step(
                call,
                [T.CANCEL],
                lambda c: CANCEL_UNSTARTED(c, job, lease),
                targets={job},
                fence={job: lease},
            )
            return
        if call == "request_cancel" and REQUEST_CANCEL is not None:
            job = self.pick(data, *LEASED)
            self.step(
                call,
                [],
                lambda c: REQUEST_CANCEL(c, job),
                targets={job},
                requests_cancel=True,
            )
            return
        job = self.pick(data, *(S(s) for s in sources(T.CANCEL)), S.RUNNING)
        result, before, after = self.step(
            "cancel",
            [T.CANCEL],
            lambda c: admin.cancel(c, job),
            targets={job},
            requests_cancel=True,
        )
        b, a = before[job], after[job]
        if isinstance(result, core.TransitionError):
            return
        if a.status != b.status:
            assert a.status in {s.value for s in TRANSITIONS[T.CANCEL][1]}, (b, a)
        else:  # not cancelled: only a cancel request on an attempt a worker holds
            assert b.status in LEASED and a.cancel_requested_at is not None, (b, a, result)

    def retry(self, data: st.DataObject) -> None:
        job = self.pick(data, S.FAILED, S.CANCELLED)
        result, before, after = self.step(
            "retry", [T.RETRY], lambda c: admin.retry(c, job), targets={job}
        )
        b, a = before[job], after[job]
        raised = isinstance(result, core.TransitionError)
        assert raised == (b.status not in sources(T.RETRY)), (b, result)
        if not raised:
            assert a.status == S.QUEUED and a.attempt < a.max_attempts, (b, a)
            assert a.cancel_requested_at is None and a.worker_id is None, a


def _run(url: str, **attrs: Any) -> None:
    machine = type("LedgerMachineOn", (LedgerMachine,), {"url": url, **attrs})
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_every_ledger_call_is_a_move_of_the_transition_table(ledger_url: str) -> None:
    _run(ledger_url)


def test_workflows_move_only_along_the_transition_table(ledger_url: str) -> None:
    """Mostly jobs that wait for others: their dependencies end, fail, are cancelled and
    retried under them (release, dependency_failed, revive)."""
    _run(ledger_url, plain_max=2)
