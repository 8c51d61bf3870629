"""Workflows on top of job dependencies: ``chain``, ``group`` and ``chord``.

Each helper is one :func:`tasks.api.submit_jobs` call, so the whole shape is written in one
transaction (all of it or nothing) and returns the new jobs' ids. A step is a
``(type, data)`` pair or a mapping with the keys of a ``submit_jobs`` item (``type``,
``data``, ``priority``, ``queue``, ``max_attempts``, ``schedule``, ...); :func:`step` builds
one. See docs/api.md, "Workflows".

    grades = group(*(step("edurise.grade_submission", {"submission_id": s}) for s in subs))
    report = submit_job("edurise.course_report", {"course_id": c}, depends_on=grades)
    chain(("edurise.import_roster", {...}), ("edurise.create_accounts", {...}))
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine

from db.engine import create_ledger_engine, read
from db.ledger import dependencies
from db.settings import get_settings
from tasks import api
from tasks.errors import InvalidArgument

Step = Mapping[str, Any] | tuple[str, Any]

__all__ = ["Chord", "chain", "chord", "dependency_results", "group", "step"]


class Chord(NamedTuple):
    """The ids a :func:`chord` wrote: its header jobs and the callback that waits for them."""

    group: list[uuid.UUID]
    callback: uuid.UUID


def step(type: str, data: Any, **options: Any) -> dict[str, Any]:
    """One step: a ``submit_jobs`` item (options: ``priority``, ``queue``, ``max_attempts``,
    ``schedule``, ``on_dependency_failure``, ``depends_on`` with existing job ids)."""
    return {"type": type, "data": data, **options}


def _item(given: object, where: str) -> dict[str, Any]:
    """A ``submit_jobs`` item of a step; anything else (e.g. a job id among steps) is refused."""
    if isinstance(given, Mapping):
        return dict(given)
    if isinstance(given, tuple) and len(given) == 2 and isinstance(given[0], str):
        return {"type": given[0], "data": given[1]}
    raise InvalidArgument(f"{where}: a step is (type, data) or a mapping with 'type' and 'data'")


def _after(ids: Iterable[uuid.UUID | str] | uuid.UUID | str | None) -> list[uuid.UUID | str]:
    if ids is None:
        return []
    if isinstance(ids, str | uuid.UUID):
        return [ids]
    return list(ids)


def _with_deps(item: dict[str, Any], deps: list[Any], mode: str | None) -> dict[str, Any]:
    extra = list(item.get("depends_on") or [])
    item["depends_on"] = [*deps, *extra] if deps or extra else None
    if mode is not None and "on_dependency_failure" not in item:
        item["on_dependency_failure"] = mode
    return item


def chain(
    *steps: Step,
    after: Iterable[uuid.UUID | str] | uuid.UUID | str | None = None,
    on_dependency_failure: str = "cancel",
) -> list[uuid.UUID]:
    """Steps that run one after the other: each waits for the one before (the first for the
    ``after`` jobs, if any). With ``"cancel"`` (default) a step that fails for good cancels
    every later step; with ``"run"`` the next step runs anyway. Returns the ids in order."""
    if not steps:
        raise InvalidArgument("chain needs at least one step")
    items = []
    for i, s in enumerate(steps):
        deps: list[Any] = _after(after) if i == 0 else [i - 1]
        items.append(_with_deps(_item(s, f"step {i}"), deps, on_dependency_failure))
    return api.submit_jobs(items)


def group(
    *steps: Step,
    after: Iterable[uuid.UUID | str] | uuid.UUID | str | None = None,
    on_dependency_failure: str = "cancel",
) -> list[uuid.UUID]:
    """Steps that run side by side (each waits only for the ``after`` jobs, if any), written
    together. Returns their ids; pass them as ``depends_on`` to wait for all of them."""
    if not steps:
        raise InvalidArgument("group needs at least one step")
    deps = _after(after)
    mode = on_dependency_failure if deps else None
    items = [_with_deps(_item(s, f"step {i}"), deps, mode) for i, s in enumerate(steps)]
    return api.submit_jobs(items)


def chord(
    header: Sequence[Step] | Sequence[uuid.UUID | str],
    callback: Step,
    *,
    on_dependency_failure: str = "cancel",
) -> Chord:
    """A group and a callback that runs once after all of it (``ctx.dependency_results``
    holds every result). ``header`` is a list of steps, written with the callback in one
    transaction, or the ids of jobs already submitted (e.g. from :func:`group`). With
    ``"cancel"`` (default) a header job that fails for good cancels the callback; with
    ``"run"`` the callback runs once every header job has ended, whatever the outcome."""
    if not header:
        raise InvalidArgument("chord needs at least one job in its group")
    if all(isinstance(h, uuid.UUID | str) for h in header):
        ids = [h if isinstance(h, uuid.UUID) else api._job_id(h) for h in header]
        item = _with_deps(_item(callback, "callback"), list(ids), on_dependency_failure)
        return Chord(ids, api.submit_jobs([item])[0])
    items = [_item(s, f"step {i}") for i, s in enumerate(header)]
    callback_item = _with_deps(
        _item(callback, "callback"), list(range(len(items))), on_dependency_failure
    )
    written = api.submit_jobs([*items, callback_item])
    return Chord(written[:-1], written[-1])


_engines: dict[tuple[str, int], Engine] = {}


def _engine() -> Engine:
    """The ledger engine of this process; a forked process worker's child gets its own (a
    pool must never be shared across ``fork()``)."""
    url = get_settings().ledger_url
    key = (url, os.getpid())
    found = _engines.get(key)
    if found is None:
        found = _engines[key] = create_ledger_engine(url, pool_size=1, max_overflow=4)
    return found


def dependency_results(job_id: uuid.UUID | str) -> dict[uuid.UUID, Any]:
    """``{dependency id: result}`` of the jobs ``job_id`` depends on (None for one that did
    not complete); what a handler reads as ``ctx.dependency_results``."""
    jid = api._job_id(job_id)
    with read(_engine()) as conn:
        return dependencies.dependency_results(conn, jid)
