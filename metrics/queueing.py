"""M/M/c (Erlang C) formulas for capacity planning.

``offered_load`` (erlangs) = arrival rate * mean service time; ``c`` = servers (worker slots).
References: A. K. Erlang (1917); L. Kleinrock, *Queueing Systems, Vol. 1* (1975), §3.5;
D. Gross, C. Harris, *Fundamentals of Queueing Theory*, M/M/c waiting-time distribution
``P(W > t) = C(c, a) · exp(-(cμ - λ) t)``.
"""

from __future__ import annotations

import math


def erlang_b(c: int, offered_load: float) -> float:
    """Blocking probability of M/M/c/c, by the numerically stable recursion
    ``B(0) = 1, B(k) = a·B(k-1) / (k + a·B(k-1))``."""
    if c < 0:
        raise ValueError("c must be >= 0")
    if offered_load < 0:
        raise ValueError("offered_load must be >= 0")
    b = 1.0
    for k in range(1, c + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def erlang_c(c: int, offered_load: float) -> float:
    """Probability that an arrival has to wait in an M/M/c queue (1.0 when unstable)."""
    if c < 1:
        raise ValueError("c must be >= 1")
    if offered_load < 0:
        raise ValueError("offered_load must be >= 0")
    if offered_load == 0:
        return 0.0
    if offered_load >= c:
        return 1.0
    b = erlang_b(c, offered_load)
    return c * b / (c - offered_load * (1.0 - b))


def mean_wait(c: int, arrival_rate: float, service_rate: float) -> float:
    """Mean time in queue ``C / (cμ - λ)`` (inf when unstable)."""
    a = arrival_rate / service_rate
    if a >= c:
        return math.inf
    return erlang_c(c, a) / (c * service_rate - arrival_rate)


def wait_percentile(c: int, arrival_rate: float, service_rate: float, q: float) -> float:
    """The ``q`` quantile of the time in queue of an M/M/c queue (inf when unstable).

    ``P(W > t) = C · exp(-(cμ - λ)t)``, so ``t_q = ln(C / (1 - q)) / (cμ - λ)`` when
    ``C > 1 - q`` and 0 otherwise (at least a fraction q does not wait at all).
    """
    if not 0 <= q < 1:
        raise ValueError("q must be in [0, 1)")
    if service_rate <= 0:
        raise ValueError("service_rate must be > 0")
    if arrival_rate <= 0:
        return 0.0
    a = arrival_rate / service_rate
    if a >= c:
        return math.inf
    waiting = erlang_c(c, a)
    if waiting <= 1.0 - q:
        return 0.0
    return math.log(waiting / (1.0 - q)) / (c * service_rate - arrival_rate)


def servers_needed(
    arrival_rate: float, service_rate: float, q: float, target: float, max_servers: int = 100_000
) -> int | None:
    """The smallest ``c`` whose ``q`` wait quantile is at most ``target`` (0 without load)."""
    if arrival_rate <= 0:
        return 0
    a = arrival_rate / service_rate
    c = max(1, math.floor(a) + 1)
    while c <= max_servers:
        if wait_percentile(c, arrival_rate, service_rate, q) <= target:
            return c
        c += 1
    return None
