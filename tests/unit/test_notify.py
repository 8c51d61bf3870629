"""What the maintainer's LISTEN connection makes of the notifications pending at a wake-up
(``db.notify.Listener``): every one counts, not only the first."""

from __future__ import annotations

import psycopg

from db.notify import Listener


def note(payload: str) -> psycopg.Notify:
    return psycopg.Notify("queue_jobs_inserted", payload, 1)


def test_the_queues_of_every_pending_notification_are_woken() -> None:
    # two inserts committed while the maintainer was busy: both queues, not the first only
    assert Listener._queues_of([note("default"), note("reports,billing")]) == {
        "default",
        "reports",
        "billing",
    }


def test_a_notification_that_names_no_queue_means_all() -> None:
    assert Listener._queues_of([note("default"), note("")]) == set()


def test_a_wake_up_without_a_notification_is_none() -> None:
    assert Listener._queues_of([]) is None
