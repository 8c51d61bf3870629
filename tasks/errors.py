"""Exceptions of the job API. Each says what was wrong; a call that raises wrote nothing."""

from __future__ import annotations


class QueueError(Exception):
    """Base class of every error the job API raises on bad input."""


class UnknownJobType(QueueError, LookupError):
    """No job type of that name is registered (check QUEUE_JOB_MODULES)."""


class InvalidJobData(QueueError, ValueError):
    """The job's data is not a JSON object, fails the type's schema, or breaks a limit."""


class PayloadTooLarge(InvalidJobData):
    """The job's data is larger than the limit (256 KiB of UTF-8 JSON)."""


class InvalidPriority(QueueError, ValueError):
    """Priority is not an integer in the documented range."""


class InvalidSchedule(QueueError, ValueError):
    """The schedule is a naive datetime, negative, of an unsupported type, or outside the
    allowed window (``tasks.api.SCHEDULE_MAX_PAST`` / ``SCHEDULE_MAX_AHEAD``)."""


class InvalidArgument(QueueError, ValueError):
    """Another argument (queue name, max_attempts, idempotency key, ...) is invalid."""


class UnknownQueue(QueueError, LookupError):
    """The queue is not declared (by a registered job type's queue or QUEUE_QUEUES)."""


class IdempotencyConflict(QueueError):
    """The idempotency key belongs to a live job of another type or with other data."""


class JobNotFound(QueueError, LookupError):
    """No job has that id."""


class InvalidTransition(QueueError):
    """The job's current state does not allow the request (e.g. cancel a completed job)."""


class UnknownDependency(QueueError, LookupError):
    """A job named in ``depends_on`` does not exist (nothing was written)."""


class InvalidDependency(QueueError, ValueError):
    """A ``depends_on`` entry is malformed, or refers to the item itself or to a later item
    of the same ``submit_jobs`` call (so a workflow can never contain a cycle)."""
