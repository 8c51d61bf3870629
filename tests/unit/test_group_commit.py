"""Group commit (``tasks.transport.group_commit``) with real threads: who writes, what goes
together, who gets which error."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from tasks.transport.group_commit import GroupCommit
from tests.processes import wait_for


class Recorder:
    """A ``write_batch`` that records each batch; a batch may be held until ``release``."""

    def __init__(self, *, hold_first: int = 0, fail_on: object = None) -> None:
        self.batches: list[list[object]] = []
        self.threads: list[str] = []
        self.written: set[object] = set()
        self.gate = threading.Event()
        self.in_write = 0
        self.max_in_write = 0
        self._hold = hold_first
        self._fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, batch: list[object]) -> None:
        with self._lock:
            self.batches.append(list(batch))
            self.threads.append(threading.current_thread().name)
            hold = len(self.batches) <= self._hold
            self.in_write += 1
            self.max_in_write = max(self.max_in_write, self.in_write)
        try:
            if hold:
                assert self.gate.wait(10), "the test never released the held batch"
            if self._fail_on in batch:
                raise RuntimeError(f"batch with {self._fail_on} failed")
            self.written.update(batch)
        finally:
            with self._lock:
                self.in_write -= 1


def _caller(
    group: GroupCommit[object], item: object, outcomes: dict[object, object], rec: Recorder
) -> threading.Thread:
    def run() -> None:
        try:
            group.run(item)
        except RuntimeError as exc:
            outcomes[item] = exc
        else:  # back only once the item is written
            outcomes[item] = "written" if item in rec.written else "returned too early"

    thread = threading.Thread(target=run, name=f"caller-{item}")
    thread.start()
    return thread


def _queue_up(
    group: GroupCommit[object], items: list[object], start: Callable[[object], threading.Thread]
) -> list[threading.Thread]:
    """Start one caller per item, each waiting in line before the next starts (known order)."""
    threads = []
    for n, item in enumerate(items, start=1):
        threads.append(start(item))
        wait_for(lambda n=n: group.waiting == n, 5, f"{n} callers waiting", interval=0.005)
    return threads


def _behind_a_held_batch(
    group: GroupCommit[object], rec: Recorder, outcomes: dict[object, object], items: list[object]
) -> list[threading.Thread]:
    """Caller 0 writes a batch that ``rec`` holds; then ``items`` queue up behind it, in order.
    Returns every caller's thread (release with ``rec.gate.set()``)."""
    first = _caller(group, 0, outcomes, rec)
    wait_for(lambda: rec.batches, 5, "the first batch to start")
    return [first, *_queue_up(group, items, lambda i: _caller(group, i, outcomes, rec))]


def test_a_lone_caller_writes_its_item_itself_at_once() -> None:
    rec = Recorder()
    group = GroupCommit(rec)
    group.run("a")
    group.run("b")
    me = threading.current_thread().name
    assert rec.batches == [["a"], ["b"]]
    assert rec.threads == [me, me]  # no hand-off to another thread


def test_callers_that_arrive_during_a_write_go_together_in_arrival_order() -> None:
    rec = Recorder(hold_first=1)
    group = GroupCommit(rec, max_in_flight=1)
    outcomes: dict[object, object] = {}
    threads = _behind_a_held_batch(group, rec, outcomes, [1, 2, 3, 4])
    rec.gate.set()
    for t in threads:
        t.join(10)
    assert rec.batches == [[0], [1, 2, 3, 4]]  # one statement for the four that waited
    assert rec.threads[1] == "caller-1"  # the first in line leads the next batch
    assert outcomes == dict.fromkeys(range(5), "written")
    assert (group.batches, group.items, group.waiting) == (2, 5, 0)


def test_a_batch_takes_at_most_max_batch_items() -> None:
    rec = Recorder(hold_first=1)
    group = GroupCommit(rec, max_batch=3, max_in_flight=1)
    outcomes: dict[object, object] = {}
    threads = _behind_a_held_batch(group, rec, outcomes, [1, 2, 3, 4, 5])
    rec.gate.set()
    for t in threads:
        t.join(10)
    assert rec.batches == [[0], [1, 2, 3], [4, 5]]
    assert outcomes == dict.fromkeys(range(6), "written")


def test_a_failed_batch_fails_each_of_its_callers_and_no_other() -> None:
    rec = Recorder(hold_first=1, fail_on=2)
    group = GroupCommit(rec, max_in_flight=1)
    outcomes: dict[object, object] = {}
    threads = _behind_a_held_batch(group, rec, outcomes, [1, 2, 3])
    rec.gate.set()
    for t in threads:
        t.join(10)
    assert outcomes[0] == "written"
    for item in (1, 2, 3):  # one statement: all of the batch failed, each caller is told
        assert isinstance(outcomes[item], RuntimeError)
        assert item not in rec.written
    group.run(9)  # the group goes on after a failure
    assert 9 in rec.written and group.waiting == 0


def test_at_most_max_in_flight_batches_are_written_at_once() -> None:
    rec = Recorder(hold_first=2)
    group = GroupCommit(rec, max_in_flight=2)
    outcomes: dict[object, object] = {}
    leaders = [_caller(group, i, outcomes, rec) for i in (0, 1)]
    wait_for(lambda: len(rec.batches) == 2, 5, "two batches in flight")
    waiting = _queue_up(group, [2, 3], lambda i: _caller(group, i, outcomes, rec))
    assert rec.in_write == 2  # the third and fourth callers wait instead of writing
    rec.gate.set()
    for t in [*leaders, *waiting]:
        t.join(10)
    assert rec.max_in_write == 2
    assert sorted(item for batch in rec.batches for item in batch) == [0, 1, 2, 3]
    assert outcomes == dict.fromkeys(range(4), "written")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(lambda batch: None, max_in_flight=0)


def test_a_forked_child_starts_with_an_idle_group() -> None:
    """A child forked while the parent's batch is being written must not wait for it."""
    rec = Recorder(hold_first=1)
    group = GroupCommit(rec, max_in_flight=1)
    outcomes: dict[object, object] = {}
    threads = _behind_a_held_batch(group, rec, outcomes, [1])
    pid = os.fork()
    if pid == 0:  # child: the held batch and the waiting caller are the parent's
        code = 1
        try:
            done = threading.Event()
            threading.Thread(target=lambda: (group.run("child"), done.set()), daemon=True).start()
            code = 0 if done.wait(5) and group.waiting == 0 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    rec.gate.set()
    for t in threads:
        t.join(10)
    assert os.WEXITSTATUS(status) == 0, "the child waited for its parent's batch"
    assert outcomes == dict.fromkeys(range(2), "written") and "child" not in rec.written
