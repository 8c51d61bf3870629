"""Every console write: role re-checked against the database, done through ``tasks.api``,
and written to ``audit_log`` (who, what, which jobs, when, outcome ok | error | denied).

Views never call the job API's write functions directly; they call ``perform`` or ``bulk``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from console import auth, data
from console.errors import ConsoleError
from db import audit, job_actions, queries
from db.engine import transaction, write
from tasks import api
from tasks.errors import InvalidTransition, JobNotFound, QueueError

log = logging.getLogger(__name__)
T = TypeVar("T")
ADMIN = "admin"


class ActionError(ConsoleError):
    """A console action did not happen; the message is meant for the user."""


class ActionDenied(ActionError):
    """The signed-in user may not do this (audited as ``denied``)."""


class ActionFailed(ActionError):
    """The job API or the database refused (audited as ``error``); ``cause`` is what it
    raised (the Submit page shows the message under the field it is about)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def readable(exc: BaseException) -> str:
    """One line a user can act on, never a traceback."""
    if isinstance(exc, QueueError | ConsoleError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        return f"database error: {first}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _write_audit(
    *,
    username: str,
    role: str,
    action: str,
    outcome: str,
    target: str | None,
    job_ids: Iterable[Any],
    details: dict[str, Any] | None,
    error: str | None = None,
) -> None:
    with write(data.engine()) as conn:
        audit.record(
            conn,
            username=username,
            role=role,
            action=action,
            outcome=outcome,
            target=target,
            job_ids=job_ids,
            details=details,
            error=error,
        )


def authorize(action: str, *, target: str | None = None, job_ids: Iterable[Any] = ()) -> str:
    """Server-side role check done inside every write: the session must belong to a user whose
    role in the database is ``admin`` right now. A refusal is audited as ``denied``.
    Returns the username."""
    user = auth.current_user()
    username = user["name"] if user else "anonymous"
    session_role = user["role"] if user else "none"
    try:
        role = auth.db_role(data.engine(), username) if user else None
    except SQLAlchemyError as exc:
        raise ActionFailed(readable(exc)) from None
    if role == ADMIN:
        return username
    if role is None:
        reason = f"{action} denied: {username} is not an enabled console user"
    else:
        reason = f"{action} denied: it needs the admin role and {username} is {role}"
    try:
        _write_audit(
            username=username,
            role=role or session_role,
            action=action,
            outcome="denied",
            target=target,
            job_ids=list(job_ids),
            details=None,
            error=reason,
        )
    except SQLAlchemyError:
        log.exception("could not audit a denied %s by %s", action, username)
    raise ActionDenied(reason)


def perform(
    action: str,
    fn: Callable[[], T],
    *,
    target: str | None = None,
    job_ids: Iterable[Any] = (),
    details: dict[str, Any] | None = None,
    result_job_ids: Callable[[T], Iterable[Any]] | None = None,
    result_details: Callable[[T], dict[str, Any]] | None = None,
) -> T:
    """Run one admin action: authorize, call ``fn`` (a ``tasks.api`` call), audit the outcome.

    Raises ``ActionDenied`` or ``ActionFailed`` with a readable message.
    """
    ids = [str(j) for j in job_ids]
    username = authorize(action, target=target, job_ids=ids)
    try:
        result = fn()
    except Exception as exc:  # an unexpected error is audited and shown as one line too
        if not isinstance(exc, QueueError | SQLAlchemyError):
            log.exception("console action %s failed", action)
        message = readable(exc)
        _audit_quietly(username, action, "error", target, ids, details, message)
        data.clear_job_caches()
        raise ActionFailed(message, exc) from None
    if result_job_ids is not None:
        ids += [str(j) for j in result_job_ids(result)]
    if result_details is not None:
        details = {**(details or {}), **result_details(result)}
    try:
        _write_audit(
            username=username,
            role=ADMIN,
            action=action,
            outcome="ok",
            target=target,
            job_ids=ids,
            details=details,
        )
    finally:
        data.clear_job_caches()
    return result


def _audit_quietly(
    username: str,
    action: str,
    outcome: str,
    target: str | None,
    ids: list[str],
    details: dict[str, Any] | None,
    error: str | None,
) -> None:
    try:
        _write_audit(
            username=username,
            role=ADMIN,
            action=action,
            outcome=outcome,
            target=target,
            job_ids=ids,
            details=details,
            error=error,
        )
    except SQLAlchemyError:
        log.exception("could not audit %s by %s", action, username)


@dataclass
class BulkResult:
    requested: int
    succeeded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: what the job API answered, counted: for cancel ``cancelled`` (it never started and never
    #: will) and ``cancel_requested`` (a worker holds it); for retry ``retried``
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)


def _retry(job_id: str) -> str:
    api.retry_job(job_id)
    return "retried"


def _one(
    change: Callable[[Any, list[uuid.UUID]], list[uuid.UUID]],
    job_id: str,
    what: str,
    allowed: tuple[str, ...],
    answer: str,
) -> str:
    """Apply a ``db.job_actions`` change to one job; ``InvalidTransition`` (or
    ``JobNotFound``) with the job's status when it does not apply to it now."""
    try:
        jid = uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(f"{job_id!r} is not a job id") from None
    with transaction(data.engine()) as conn:  # a delete takes its edges and log lines along
        if change(conn, [jid]):
            return answer
        status = queries.job_statuses(conn, [jid]).get(jid)
    if status is None:
        raise JobNotFound(f"job {jid} does not exist (deleted meanwhile?)")
    if status in allowed:  # the status allows it: a live job depends on it
        raise InvalidTransition(f"job {jid} cannot be {what}: a live job depends on it")
    raise InvalidTransition(f"job {jid} is {status}: only {', '.join(allowed)} jobs can be {what}")


def _delete(job_id: str) -> str:
    return _one(job_actions.delete_jobs, job_id, "deleted", job_actions.DELETABLE, "deleted")


def _run_now(job_id: str) -> str:
    return _one(job_actions.run_now, job_id, "run now", job_actions.RUNNABLE_NOW, "due_now")


BULK_OPS: dict[str, Callable[[str], str]] = {
    "cancel": api.cancel_job,
    "retry": _retry,
    "delete": _delete,
    "run_now": _run_now,
}


def bulk(
    action: str,
    op: str,
    job_ids: list[str],
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BulkResult:
    """Cancel, retry, delete or run now the jobs ``job_ids`` (exactly these, in this order) one
    by one (cancel and retry through the job API, delete and run now through
    ``db.job_actions``); one audit entry with every id and the count of each answer.

    A job that cannot make the transition any more (it finished meanwhile) is counted as a
    failure with the API's message; the others still happen.
    """
    if op not in BULK_OPS:
        raise ValueError(f"unknown bulk operation {op!r}")
    username = authorize(action, target=target, job_ids=job_ids)
    call = BULK_OPS[op]
    result = BulkResult(requested=len(job_ids))
    try:
        for i, jid in enumerate(job_ids, 1):
            try:
                answer = call(jid)
                result.succeeded += 1
                result.outcomes[answer] = result.outcomes.get(answer, 0) + 1
            except QueueError as exc:
                result.failures.append((jid, str(exc)))
            if progress is not None and (i % 50 == 0 or i == len(job_ids)):
                progress(i, len(job_ids))
    except Exception as exc:
        if not isinstance(exc, SQLAlchemyError):
            log.exception("console bulk action %s failed", action)
        message = readable(exc)
        info = {
            **(details or {}),
            "requested": result.requested,
            "succeeded": result.succeeded,
            "outcomes": dict(result.outcomes),
        }
        _audit_quietly(username, action, "error", target, job_ids, info, message)
        data.clear_job_caches()
        raise ActionFailed(f"{message} (after {result.succeeded} of {len(job_ids)})") from None
    info = {
        **(details or {}),
        "requested": result.requested,
        "succeeded": result.succeeded,
        "outcomes": dict(result.outcomes),
        "failed": result.failed,
        "failures": [{"job_id": j, "error": e} for j, e in result.failures[:20]],
    }
    error = None
    if result.failures:
        error = f"{result.failed} of {result.requested} failed; first: {result.failures[0][1]}"
    try:
        _write_audit(
            username=username,
            role=ADMIN,
            action=action,
            outcome="error" if result.failures else "ok",
            target=target,
            job_ids=job_ids,
            details=info,
            error=error,
        )
    finally:
        data.clear_job_caches()
    return result


# --- the actions the views offer ------------------------------------------------------------


def submit(
    type: str,
    payload: Any,
    *,
    priority: int | None,
    queue: str | None,
    schedule: Any = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Submit now (``schedule`` None) or scheduled; returns the job id (with an idempotency
    key a live job already has: that job's id, nothing new is written)."""
    details = {
        "type": type,
        "priority": priority,
        "queue": queue,
        "schedule": None if schedule is None else str(schedule),
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
    }
    if schedule is None:
        job_id = perform(
            "submit",
            lambda: api.submit_job(
                type,
                payload,
                priority,
                queue=queue,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
            ),
            target=type,
            details=details,
            result_job_ids=lambda jid: [jid],
        )
    else:
        job_id = perform(
            "schedule",
            lambda: api.schedule_job(
                type,
                payload,
                schedule,
                priority,
                queue=queue,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
            ),
            target=type,
            details=details,
            result_job_ids=lambda jid: [jid],
        )
    return str(job_id)


def cancel(job_id: str) -> str:
    """Cancel this one job; returns the job API's answer (``api.CANCEL_MESSAGES`` says it in
    words), which the audit entry records as ``details.outcome``."""
    return perform(
        "cancel",
        lambda: api.cancel_job(job_id),
        target=str(job_id),
        job_ids=[job_id],
        result_details=lambda outcome: {"outcome": outcome},
    )


def retry(job_id: str) -> None:
    perform("retry", lambda: api.retry_job(job_id), target=str(job_id), job_ids=[job_id])


def delete(job_id: str) -> None:
    """Delete this one job (finished, or waiting without a worker holding it)."""
    perform("delete", lambda: _delete(job_id), target=str(job_id), job_ids=[job_id])


def run_now(job_id: str) -> None:
    """Make this scheduled or retrying job due now (the stager queues it at once)."""
    perform("run_now", lambda: _run_now(job_id), target=str(job_id), job_ids=[job_id])


def run_periodic_now(name: str, payload: dict[str, Any]) -> str:
    job_id = perform(
        "periodic_run_now",
        lambda: api.submit_job(name, payload),
        target=name,
        details={"data": payload},
        result_job_ids=lambda jid: [jid],
    )
    return str(job_id)


def silence_rule(rule: str, minutes: float, reason: str | None = None) -> datetime:
    """Silence an alert rule for ``minutes`` (0 lifts a silence): its alerts still fire and
    resolve, but no webhook is sent and no outbox row is published. Returns the end time."""
    from db import alerts

    if not rule:
        raise ActionFailed("choose a rule to silence")
    if not 0 <= minutes <= 7 * 24 * 60:
        raise ActionFailed("a silence lasts between 0 minutes and 7 days")

    def do() -> datetime:
        now = datetime.now(UTC)
        until = now + timedelta(minutes=minutes)
        username = auth.current_user()["name"]  # type: ignore[index]
        with transaction(data.engine()) as conn:
            alerts.silence(conn, rule, until, by=username, reason=reason, now=now)
        return until

    try:
        return perform(
            "alert_silence",
            do,
            target=rule,
            details={"rule": rule, "minutes": minutes, "reason": reason or None},
        )
    finally:
        data.clear_alert_caches()


def pause_queue(queue: str, reason: str | None = None) -> int:
    """Pause ``queue`` (audited as ``pause``); returns how many dispatched jobs were taken back
    from Redis."""
    username = (auth.current_user() or {}).get("name")
    return perform(
        "pause",
        lambda: api.pause_queue(queue, by=username, reason=reason or None),
        target=queue,
        details={"reason": reason or None},
    )


def resume_queue(queue: str, *, was_paused: bool) -> None:
    """Resume ``queue`` (audited as ``resume``)."""
    perform(
        "resume",
        lambda: api.resume_queue(queue),
        target=queue,
        details={"was_paused": was_paused},
    )
