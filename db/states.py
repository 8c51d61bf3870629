"""The job state machine: states and the one transition table every ledger UPDATE is guarded by."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class JobStatus(StrEnum):
    #: held back until its dependencies end (``depends_on``); not due, not queue depth
    WAITING = "waiting"
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
#: waiting for a worker or a due time (not the status ``waiting``: that one is :data:`BLOCKED`)
WAITING: frozenset[JobStatus] = frozenset({S.SCHEDULED, S.QUEUED, S.DISPATCHED, S.RETRYING})
#: held back by dependencies (status ``waiting``): never due, never counted in queue depth
BLOCKED: frozenset[JobStatus] = frozenset({S.WAITING})
#: states in which an attempt holds a lease: its writes are fenced on ``lease``
LEASED: frozenset[JobStatus] = frozenset({S.DISPATCHED, S.RUNNING})
#: not finished: every state but the terminal ones
LIVE: frozenset[JobStatus] = frozenset(JobStatus) - TERMINAL
#: finished by a handler's outcome (the finishes counted as throughput; ``cancelled`` is not)
FINISHED: frozenset[JobStatus] = frozenset({S.COMPLETED, S.FAILED})
#: waiting and due: counted in a queue's depth whatever their ``scheduled_at``
READY: frozenset[JobStatus] = frozenset({S.QUEUED, S.DISPATCHED})
#: waiting for their due time (``scheduled_at``); counted in a queue's depth once due
DELAYED: frozenset[JobStatus] = frozenset({S.SCHEDULED, S.RETRYING})
#: live jobs that have been due at least once (all live states but ``scheduled`` and
#: ``waiting``): the ones that can carry the errors of earlier attempts
IN_FLIGHT: frozenset[JobStatus] = LIVE - {S.SCHEDULED, S.WAITING}


class Transition(StrEnum):
    """Every way a job can change state; names match the functions in ``db.ledger``."""

    DISPATCH = "dispatch"  # dispatcher takes the attempt (a new lease), pushes the id to Redis
    # (a producer may also insert a due job already dispatched:
    # db.ledger.producer.insert_batch_dbapi with a window)
    # message lost in Redis, no worker took it: the attempt is given back (cancelled instead
    # if a cancel was requested)
    RECONCILE = "reconcile"
    STAGE = "stage"  # due time reached
    CLAIM = "claim"  # a worker starts an attempt before running it (process workers)
    START = "start"  # a worker records, after the fact, that it started the leased attempt
    COMPLETE = "complete"
    RETRY_LATER = "retry_later"  # attempt failed, attempts left
    FAIL = "fail"  # attempt failed, attempts used up
    CANCEL = "cancel"  # cancelled before it started
    FINISH_CANCELLED = "finish_cancelled"  # running job whose cancel was requested stopped
    RETRY = "retry"  # admin re-runs a failed or cancelled job
    # attempt of a dead worker: running with a stale heartbeat (rescuer), or taken from Redis
    # and never recorded as started (reconciler); to retrying / failed / cancelled
    RESCUE = "rescue"
    HAND_BACK = "hand_back"  # worker shutting down returns a job (cancelled if asked)
    # workflows (docs/architecture.md, "Dependencies"): performed in the statement that ends a
    # dependency (PostgreSQL: the ``queue_jobs_release_dependents`` trigger; SQLite:
    # ``ledger.release_dependents`` in the same transaction)
    RELEASE = "release"  # every dependency ended as required: due now or at its time
    DEPENDENCY_FAILED = "dependency_failed"  # a dependency failed or was cancelled
    REVIVE = "revive"  # a dependency that cancelled it is retried: waiting again


#: transition -> (states it may start from, states it may end in)
TRANSITIONS: dict[Transition, tuple[frozenset[JobStatus], frozenset[JobStatus]]] = {
    Transition.DISPATCH: (frozenset({S.QUEUED}), frozenset({S.DISPATCHED})),
    Transition.RECONCILE: (frozenset({S.DISPATCHED}), frozenset({S.QUEUED, S.CANCELLED})),
    Transition.STAGE: (frozenset({S.SCHEDULED, S.RETRYING}), frozenset({S.QUEUED})),
    Transition.CLAIM: (frozenset({S.QUEUED, S.DISPATCHED}), frozenset({S.RUNNING})),
    Transition.START: (frozenset({S.DISPATCHED}), frozenset({S.RUNNING})),
    # the outcome of a leased attempt may be written before its start record (short jobs:
    # one write records both); the lease fence makes sure it is that attempt's outcome
    Transition.COMPLETE: (LEASED, frozenset({S.COMPLETED})),
    Transition.RETRY_LATER: (LEASED, frozenset({S.RETRYING})),
    Transition.FAIL: (LEASED, frozenset({S.FAILED})),
    Transition.CANCEL: (
        frozenset({S.WAITING, S.SCHEDULED, S.QUEUED, S.DISPATCHED, S.RETRYING}),
        frozenset({S.CANCELLED}),
    ),
    Transition.FINISH_CANCELLED: (LEASED, frozenset({S.CANCELLED})),
    Transition.RETRY: (frozenset({S.FAILED, S.CANCELLED}), frozenset({S.QUEUED})),
    Transition.RESCUE: (
        LEASED,
        frozenset({S.RETRYING, S.FAILED, S.CANCELLED}),
    ),
    Transition.HAND_BACK: (frozenset({S.RUNNING}), frozenset({S.QUEUED, S.CANCELLED})),
    Transition.RELEASE: (frozenset({S.WAITING}), frozenset({S.QUEUED, S.SCHEDULED})),
    Transition.DEPENDENCY_FAILED: (frozenset({S.WAITING}), frozenset({S.CANCELLED})),
    Transition.REVIVE: (frozenset({S.CANCELLED}), frozenset({S.WAITING})),
}


def sources(transition: Transition) -> list[str]:
    """The states a transition may start from, sorted (stable SQL, stable plans)."""
    return sorted(s.value for s in TRANSITIONS[transition][0])


def can(transition: Transition, status: str) -> bool:
    return JobStatus(status) in TRANSITIONS[transition][0]


def sorted_values(statuses: Iterable[str]) -> tuple[str, ...]:
    """The values of ``statuses`` (members or their strings), sorted and deduplicated: what
    an ``IN`` list binds, stable from run to run (a frozenset's order is not). Raises
    ``ValueError`` for a string that is not a status."""
    return tuple(sorted({JobStatus(s).value for s in statuses}))


def in_order(statuses: Iterable[str]) -> tuple[str, ...]:
    """The values of ``statuses`` in the order of :class:`JobStatus` (for display: labels,
    filters, messages)."""
    chosen = {JobStatus(s) for s in statuses}
    return tuple(s.value for s in JobStatus if s in chosen)


def sql_list(statuses: Iterable[str]) -> str:
    """``'a', 'b'``: the sorted statuses as inline SQL literals, for constant statements built
    at import (a partial index ``WHERE status = 'queued'`` needs the literal in the statement
    for a generic plan to use it; a bind parameter cannot prove the predicate). Only ever
    rendered from :class:`JobStatus` values (anything else raises ``ValueError``), never from
    input."""
    return ", ".join(f"'{v}'" for v in sorted_values(statuses))
