"""The delivery gate in Redis, against real PostgreSQL and Redis: each pop marks its
``(job id, lease)`` taken in the same script, copies of a taken delivery are dropped, a
give-back unmarks, and cancel and pause act only on deliveries no worker has taken."""

from __future__ import annotations

import threading
import uuid

from tasks import api
from tasks.transport.broker import LedgerRedisStorage, decode_job_message


def _sent() -> uuid.UUID:
    """A job whose message waits in Redis (its producer sent it: the queue was idle)."""
    job_id = api.submit_job("demo.echo", {"x": 1})
    assert api.get_job(job_id)["status"] == "dispatched"
    return job_id


def _ids(entries: list) -> list[uuid.UUID]:
    return [decode_job_message(e.data)[0] for e in entries]


def test_copies_of_a_taken_delivery_are_dropped_by_every_pop(
    storage: LedgerRedisStorage,
) -> None:
    job_id = _sent()
    message = storage.window("default")[0]
    storage.push("default", [(message, 0)] * 3)  # four copies in all
    first = storage.pop(0.1)
    assert first is not None and _ids([first]) == [job_id]
    assert storage.pop_ready(10) == []  # the copies, dropped inside the script
    assert storage.size_of("default") == 0
    storage.push("default", [(message, 0)])  # a copy arriving later
    assert storage.pop(0.2) is None  # the blocking path drops it as well
    assert storage.delivered([(job_id, 1)]) == {(job_id, 1)}


def test_a_give_back_unmarks_so_the_next_pop_takes_it(storage: LedgerRedisStorage) -> None:
    job_id = _sent()
    popped = storage.pop_ready(1)
    storage.give_back(popped)
    assert storage.delivered([(job_id, 1)]) == set()
    assert _ids(storage.pop_ready(1)) == [job_id]


def test_a_release_forgets_only_the_lease_it_names(storage: LedgerRedisStorage) -> None:
    job_id = _sent()
    storage.pop_ready(1)
    storage.release([(job_id, 2)])  # another delivery: the mark stays
    assert storage.delivered([(job_id, 1)]) == {(job_id, 1)}
    storage.release([(job_id, 1)])
    assert storage.delivered([(job_id, 1)]) == set()


def test_cancel_blocks_an_untaken_delivery_and_only_asks_for_a_taken_one(
    storage: LedgerRedisStorage,
) -> None:
    taken, waiting = _sent(), _sent()
    assert _ids(storage.pop_ready(1)) == [taken]  # a worker took the first
    assert api.cancel_job(waiting) == "cancelled"
    assert api.get_job(waiting)["status"] == "cancelled"
    assert storage.pop_ready(5) == []  # its message is dropped at the pop
    assert api.cancel_job(taken) == "cancel_requested"  # the worker holds it
    job = api.get_job(taken)
    assert (job["status"], job["cancel_requested_at"] is not None) == ("dispatched", True)


def test_pause_takes_back_only_the_deliveries_no_worker_has_taken(
    storage: LedgerRedisStorage,
) -> None:
    taken, waiting = _sent(), _sent()
    assert _ids(storage.pop_ready(1)) == [taken]
    assert api.pause_queue("default") == 1
    assert api.get_job(waiting)["status"] == "queued"
    assert api.get_job(taken)["status"] == "dispatched"  # its worker runs it to its end
    assert storage.pop_ready(5) == []  # the taken-back job's message is dropped
    api.resume_queue("default")


def _tokens(storage: LedgerRedisStorage) -> int:
    return int(storage.conn.llen(storage.bell_for("default")))


def test_a_push_rings_the_doorbell_and_an_empty_pop_clears_it(
    storage: LedgerRedisStorage,
) -> None:
    job_id = _sent()  # its producer pushed the message: one token
    assert _tokens(storage) == 1
    assert _ids(storage.pop_ready(5)) == [job_id]
    assert storage.pop_ready(5) == []  # the queues are empty: no token may wake anyone
    assert _tokens(storage) == 0
    storage.push("default", [(b"x", 0)] * 3)
    assert _tokens(storage) == 3  # one per message


def test_a_waiting_pop_wakes_on_a_push_in_one_round_trip(storage: LedgerRedisStorage) -> None:
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(storage.pop(5.0, ready_first=False)))
    waiter.start()
    job_id = _sent()
    waiter.join(5)
    assert not waiter.is_alive()
    assert got and got[0] is not None and _ids([got[0]]) == [job_id]
    assert storage.delivered([(job_id, 1)]) == {(job_id, 1)}  # marked by the same script


def test_a_message_pushed_without_a_token_is_found_when_the_wait_times_out(
    storage: LedgerRedisStorage,
) -> None:
    job_id = _sent()
    storage.conn.delete(storage.bell_for("default"))  # as if pushed by hand, no token
    assert _ids([storage.pop(0.3, ready_first=False)]) == [job_id]


def test_a_give_back_rings_the_doorbell(storage: LedgerRedisStorage) -> None:
    job_id = _sent()
    popped = storage.pop_ready(1)
    assert storage.pop_ready(1) == [] and _tokens(storage) == 0
    storage.give_back(popped)
    assert _tokens(storage) == 1
    assert _ids([storage.pop(1.0, ready_first=False)]) == [job_id]
