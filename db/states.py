"""The job state machine: states and the one transition table every ledger UPDATE is guarded by."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus

ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus)
TERMINAL: frozenset[JobStatus] = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
WAITING: frozenset[JobStatus] = frozenset({S.SCHEDULED, S.QUEUED, S.DISPATCHED, S.RETRYING})
#: states in which an attempt holds a lease: its writes are fenced on ``lease``
LEASED: frozenset[JobStatus] = frozenset({S.DISPATCHED, S.RUNNING})


class Transition(StrEnum):
    """Every way a job can change state; names match the functions in ``db.ledger``."""

    DISPATCH = "dispatch"  # dispatcher takes the attempt (a new lease), pushes the id to Redis
    # (a producer may also insert a due job already dispatched: ledger.insert_dispatched)
    RECONCILE = "reconcile"  # message lost in Redis, nobody started it: the attempt is given back
    STAGE = "stage"  # due time reached
    CLAIM = "claim"  # a worker starts an attempt before running it (process workers)
    START = "start"  # a worker records, after the fact, that it started the leased attempt
    COMPLETE = "complete"
    RETRY_LATER = "retry_later"  # attempt failed, attempts left
    FAIL = "fail"  # attempt failed, attempts used up
    CANCEL = "cancel"  # cancelled before it started
    FINISH_CANCELLED = "finish_cancelled"  # running job whose cancel was requested stopped
    RETRY = "retry"  # admin re-runs a failed or cancelled job
    RESCUE = "rescue"  # running job of a dead worker (to retrying / failed / cancelled)
    HAND_BACK = "hand_back"  # worker shutting down returns a job (cancelled if asked)


#: transition -> (states it may start from, states it may end in)
TRANSITIONS: dict[Transition, tuple[frozenset[JobStatus], frozenset[JobStatus]]] = {
    Transition.DISPATCH: (frozenset({S.QUEUED}), frozenset({S.DISPATCHED})),
    Transition.RECONCILE: (frozenset({S.DISPATCHED}), frozenset({S.QUEUED})),
    Transition.STAGE: (frozenset({S.SCHEDULED, S.RETRYING}), frozenset({S.QUEUED})),
    Transition.CLAIM: (frozenset({S.QUEUED, S.DISPATCHED}), frozenset({S.RUNNING})),
    Transition.START: (frozenset({S.DISPATCHED}), frozenset({S.RUNNING})),
    # the outcome of a leased attempt may be written before its start record (short jobs:
    # one write records both); the lease fence makes sure it is that attempt's outcome
    Transition.COMPLETE: (LEASED, frozenset({S.COMPLETED})),
    Transition.RETRY_LATER: (LEASED, frozenset({S.RETRYING})),
    Transition.FAIL: (LEASED, frozenset({S.FAILED})),
    Transition.CANCEL: (
        frozenset({S.SCHEDULED, S.QUEUED, S.DISPATCHED, S.RETRYING}),
        frozenset({S.CANCELLED}),
    ),
    Transition.FINISH_CANCELLED: (LEASED, frozenset({S.CANCELLED})),
    Transition.RETRY: (frozenset({S.FAILED, S.CANCELLED}), frozenset({S.QUEUED})),
    Transition.RESCUE: (
        frozenset({S.RUNNING}),
        frozenset({S.RETRYING, S.FAILED, S.CANCELLED}),
    ),
    Transition.HAND_BACK: (frozenset({S.RUNNING}), frozenset({S.QUEUED, S.CANCELLED})),
}


def sources(transition: Transition) -> list[str]:
    """The states a transition may start from, sorted (stable SQL, stable plans)."""
    return sorted(s.value for s in TRANSITIONS[transition][0])


def can(transition: Transition, status: str) -> bool:
    return JobStatus(status) in TRANSITIONS[transition][0]
