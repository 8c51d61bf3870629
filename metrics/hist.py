"""Mergeable log-bucket histograms and ``percentile_cont``-style percentiles.

A rollup row keeps, besides its exact per-minute percentiles, a sparse histogram of the same
values so that hours and days get percentiles from the rollups alone (percentiles do not add
up; bucket counts do).

Format (stored as JSON): ``{"g": 1.2, "b": {"<index>": count, ...}}``. Bucket ``i`` holds the
values ``v`` (milliseconds) with ``GAMMA**(i-1) < v <= GAMMA**i``, i.e.
``i = ceil(ln(v) / ln(GAMMA))``; values below ``MIN_VALUE_MS`` (including 0) count as
``MIN_VALUE_MS``. Each bucket spans 20 % and is represented by ``2 * GAMMA**i / (GAMMA + 1)``,
so a percentile read from a histogram is within ``(GAMMA - 1) / (GAMMA + 1)`` (9.1 %) of a
value of the population; a typical minute needs 10 to 20 buckets. PostgreSQL computes the
same index in SQL (:data:`SQL_BUCKET`), both with IEEE doubles, so both databases fill the
same buckets. Never change ``GAMMA`` without converting the stored rows (they record it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

GAMMA = 1.2
MIN_VALUE_MS = 0.001  # 1 microsecond: smaller values (and 0) share the lowest bucket
_LN_GAMMA = math.log(GAMMA)

#: the bucket index of the SQL expression ``{v}`` (milliseconds), PostgreSQL
SQL_BUCKET = "ceil(ln(greatest({v}, " + repr(MIN_VALUE_MS) + ")) / ln(" + repr(GAMMA) + "))::int"

Hist = dict[str, Any]


def bucket_index(value_ms: float) -> int:
    return math.ceil(math.log(max(value_ms, MIN_VALUE_MS)) / _LN_GAMMA)


def bucket_value(index: int) -> float:
    """The representative value of a bucket (relative error at most 9.1 %)."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def from_values(values: Iterable[float]) -> Hist | None:
    counts: dict[int, int] = {}
    for v in values:
        i = bucket_index(v)
        counts[i] = counts.get(i, 0) + 1
    return from_counts(counts)


def from_counts(counts: Mapping[int, int]) -> Hist | None:
    """A histogram from ``{bucket index: count}``; None when empty."""
    buckets = {str(i): int(n) for i, n in sorted(counts.items()) if n}
    return {"g": GAMMA, "b": buckets} if buckets else None


def counts_of(hist: Mapping[str, Any] | None) -> dict[int, int]:
    if not hist:
        return {}
    return {int(k): int(v) for k, v in (hist.get("b") or {}).items()}


def merge_into(acc: dict[int, int], hist: Mapping[str, Any] | None) -> None:
    """Add a stored histogram's counts to ``acc`` (in place)."""
    if not hist:
        return
    for k, v in (hist.get("b") or {}).items():
        i = int(k)
        acc[i] = acc.get(i, 0) + int(v)


def merge_raw(acc: dict[str, int], hist: Mapping[str, Any] | None) -> None:
    """Like :func:`merge_into` with the stored (string) keys: the fast path for merging
    thousands of rows; convert once with :func:`int_keys`."""
    if hist:
        merge_counts(acc, hist["b"])


def merge_counts(acc: dict[str, int], counts: Mapping[str, int] | None) -> None:
    """Add bucket counts with stored (string) keys, e.g. an hour histogram ``"h"``, to ``acc``."""
    if counts:
        get = acc.get
        for k, v in counts.items():
            acc[k] = get(k, 0) + v


def int_keys(acc: Mapping[str, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in acc.items()}


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` percentile of a histogram, interpolated like ``percentile_cont`` between the
    representative values of the two ranks around ``q * (n - 1)``."""
    n = sum(counts.values())
    if n == 0:
        return None
    pos = q * (n - 1)
    lo_rank, hi_rank = math.floor(pos), math.ceil(pos)
    lo = hi = None
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if lo is None and seen > lo_rank:
            lo = bucket_value(index)
        if seen > hi_rank:
            hi = bucket_value(index)
            break
    assert lo is not None and hi is not None
    return lo + (hi - lo) * (pos - lo_rank)


def percentile_cont(values: Sequence[float], q: float) -> float | None:
    """Exactly PostgreSQL's ``percentile_cont(q) WITHIN GROUP (ORDER BY v)`` on ``values``
    (linear interpolation between the ranks ``floor`` and ``ceil`` of ``q * (n - 1)``)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
