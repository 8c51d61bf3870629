"""Erlang C against textbook closed forms and an M/M/c simulation."""

from __future__ import annotations

import heapq
import math
import random
from fractions import Fraction

import pytest

from metrics.queueing import erlang_b, erlang_c, mean_wait, servers_needed, wait_percentile


def test_mm1_waits_with_probability_rho() -> None:
    """M/M/1: P(wait) = rho and E[Wq] = rho / (mu - lambda) (any queueing textbook)."""
    for rho in (0.1, 0.5, 0.9):
        assert erlang_c(1, rho) == pytest.approx(rho)
        assert mean_wait(1, rho, 1.0) == pytest.approx(rho / (1 - rho))


def test_mm2_closed_form() -> None:
    """M/M/2: P(wait) = 2 rho^2 / (1 + rho) with rho = a / 2 (L. Kleinrock, Queueing Systems
    Vol. 1, 1975, section 3.5; M. Harchol-Balter, Performance Modeling and Design of Computer
    Systems, 2013, chapter 14). a = 1 erlang: 1/3."""
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    for a in (0.2, 1.0, 1.5, 1.9):
        rho = a / 2
        assert erlang_c(2, a) == pytest.approx(2 * rho**2 / (1 + rho))


def exact_erlang_c(c: int, a: Fraction) -> Fraction:
    """The textbook formula term by term, in exact arithmetic."""
    top = a**c / math.factorial(c) * Fraction(c) / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_recursion_matches_the_textbook_formula() -> None:
    """Call centre sizes: 5 agents at 3 erlangs (P(wait) = 0.2362) and 55 agents at 48 erlangs
    (360 calls per half hour of 4 minutes)."""
    assert erlang_c(5, 3.0) == pytest.approx(0.23615, abs=1e-5)
    for c, a in ((5, Fraction(3)), (55, Fraction(48)), (200, Fraction(371, 2))):
        assert erlang_c(c, float(a)) == pytest.approx(float(exact_erlang_c(c, a)), rel=1e-12)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)  # B(2, 1) = (1/2) / (1 + 1 + 1/2)


def test_edges() -> None:
    assert erlang_c(3, 0.0) == 0.0
    assert erlang_c(3, 3.0) == 1.0  # unstable
    assert math.isinf(wait_percentile(3, 3.0, 1.0, 0.95))
    assert wait_percentile(3, 0.0, 1.0, 0.95) == 0.0
    assert wait_percentile(10, 1.0, 1.0, 0.95) == 0.0  # almost nobody waits
    assert servers_needed(0.0, 1.0, 0.95, 1.0) == 0
    with pytest.raises(ValueError):
        erlang_c(0, 1.0)
    with pytest.raises(ValueError):
        wait_percentile(2, 1.0, 1.0, 1.0)


def test_wait_tail_formula() -> None:
    """P(W > t) = C exp(-(c mu - lambda) t) (D. Gross, C. Harris, Fundamentals of Queueing
    Theory, M/M/c waiting-time distribution): the q quantile solves C e^(-k t) = 1 - q."""
    c, lam, mu = 4, 3.2, 1.0
    t = wait_percentile(c, lam, mu, 0.95)
    assert erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t) == pytest.approx(0.05)


def simulate_waits(c: int, lam: float, mu: float, n: int, seed: int) -> list[float]:
    """FCFS M/M/c: each arrival takes the server that frees up first."""
    rng = random.Random(seed)
    free = [0.0] * c
    heapq.heapify(free)
    clock = 0.0
    waits = []
    for _ in range(n):
        clock += rng.expovariate(lam)
        start = max(clock, heapq.heappop(free))
        waits.append(start - clock)
        heapq.heappush(free, start + rng.expovariate(mu))
    return waits


def test_wait_percentile_matches_a_simulation() -> None:
    c, lam, mu = 3, 2.4, 1.0  # 80 % busy
    waits = simulate_waits(c, lam, mu, 200_000, seed=11)[10_000:]  # without the warm-up
    waits.sort()
    waited = sum(1 for w in waits if w > 0) / len(waits)
    assert waited == pytest.approx(erlang_c(c, lam / mu), abs=0.02)
    p95 = waits[int(0.95 * len(waits))]
    assert p95 == pytest.approx(wait_percentile(c, lam, mu, 0.95), rel=0.08)
    assert sum(waits) / len(waits) == pytest.approx(mean_wait(c, lam, mu), rel=0.08)


def test_servers_needed_is_the_smallest_that_meets_the_target() -> None:
    lam, mu, target = 50.0, 2.0, 0.5  # 25 erlangs
    c = servers_needed(lam, mu, 0.95, target)
    assert c is not None
    assert wait_percentile(c, lam, mu, 0.95) <= target < wait_percentile(c - 1, lam, mu, 0.95)
