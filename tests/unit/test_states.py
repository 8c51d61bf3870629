from __future__ import annotations

from db.states import TERMINAL, TRANSITIONS, JobStatus, Transition, can


def test_terminal_states_have_no_way_out_except_admin_retry() -> None:
    for transition, (sources, _targets) in TRANSITIONS.items():
        if transition is Transition.RETRY:
            assert sources == {JobStatus.FAILED, JobStatus.CANCELLED}
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
    reachable = {JobStatus.QUEUED, JobStatus.SCHEDULED}  # submit
    for _ in range(len(JobStatus)):
        for sources, targets in TRANSITIONS.values():
            if sources & reachable:
                reachable |= targets
    assert reachable == set(JobStatus)
