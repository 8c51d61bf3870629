from __future__ import annotations

import pytest

from db.states import (
    BLOCKED,
    DELAYED,
    FINISHED,
    IN_FLIGHT,
    LEASED,
    LIVE,
    READY,
    TERMINAL,
    TRANSITIONS,
    WAITING,
    JobStatus,
    Transition,
    can,
    in_order,
    sorted_values,
    sql_list,
)


def test_terminal_states_have_no_way_out_except_admin_retry() -> None:
    for transition, (sources, _targets) in TRANSITIONS.items():
        if transition is Transition.RETRY:
            assert sources == {JobStatus.FAILED, JobStatus.CANCELLED}
            continue
        if transition is Transition.REVIVE:  # a retried dependency revives what it cancelled
            assert sources == {JobStatus.CANCELLED}
            continue
        assert not sources & TERMINAL, transition


def test_completed_can_never_change() -> None:
    assert not any(can(t, "completed") for t in Transition)


def test_claim_accepts_queued_and_dispatched_only() -> None:
    assert {s for s in JobStatus if can(Transition.CLAIM, s)} == {
        JobStatus.QUEUED,
        JobStatus.DISPATCHED,
    }


def test_every_state_is_reachable() -> None:
    reachable = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.WAITING}  # submit
    for _ in range(len(JobStatus)):
        for sources, targets in TRANSITIONS.values():
            if sources & reachable:
                reachable |= targets
    assert reachable == set(JobStatus)


def test_named_sets_of_states() -> None:
    assert set(JobStatus) == LIVE | TERMINAL and not LIVE & TERMINAL
    assert READY | DELAYED == WAITING and not READY & DELAYED
    assert not BLOCKED & WAITING  # waiting for dependencies is not queue depth
    assert TRANSITIONS[Transition.STAGE][0] == DELAYED
    assert WAITING | {JobStatus.RUNNING} | BLOCKED == LIVE and not WAITING & BLOCKED
    assert LIVE - {JobStatus.SCHEDULED, JobStatus.WAITING} == IN_FLIGHT
    assert LEASED <= LIVE and FINISHED < TERMINAL


def test_status_lists_for_sql_are_sorted_and_only_statuses() -> None:
    assert sorted_values(TERMINAL) == ("cancelled", "completed", "failed")
    assert sorted_values(["running", JobStatus.RUNNING, "queued"]) == ("queued", "running")
    assert sql_list(TERMINAL) == "'cancelled', 'completed', 'failed'"
    assert sql_list([JobStatus.QUEUED]) == "'queued'"
    with pytest.raises(ValueError):
        sql_list(["queued') OR (1=1"])
    assert in_order(LIVE) == (
        "waiting",
        "scheduled",
        "queued",
        "dispatched",
        "running",
        "retrying",
    )


def test_a_waiting_job_is_released_cancelled_or_revived_only() -> None:
    waiting = JobStatus.WAITING
    moves = {t for t, (src, _) in TRANSITIONS.items() if waiting in src}
    assert moves == {Transition.RELEASE, Transition.DEPENDENCY_FAILED, Transition.CANCEL}
    assert TRANSITIONS[Transition.RELEASE][1] == {JobStatus.QUEUED, JobStatus.SCHEDULED}
    assert TRANSITIONS[Transition.REVIVE] == ({JobStatus.CANCELLED}, {waiting})
