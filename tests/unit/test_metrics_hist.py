"""Log-bucket histograms and the percentile_cont interpolation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from metrics import hist


def test_percentile_cont_is_linear_interpolation() -> None:
    values = [3000.0, 8000.0, 21000.0]
    assert hist.percentile_cont(values, 0.5) == 8000.0
    assert hist.percentile_cont(values, 0.95) == pytest.approx(19700.0)
    assert hist.percentile_cont([], 0.5) is None
    rng = random.Random(5)
    sample = [rng.lognormvariate(4, 1) for _ in range(1001)]
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert hist.percentile_cont(sample, q) == pytest.approx(np.percentile(sample, q * 100))


def test_buckets_bound_the_relative_error() -> None:
    bound = (hist.GAMMA - 1) / (hist.GAMMA + 1)
    for v in (0.002, 0.5, 1.0, 7.3, 999.0, 1e6, 3.6e6):
        rep = hist.bucket_value(hist.bucket_index(v))
        assert abs(rep - v) / v <= bound + 1e-12
    assert hist.bucket_index(0.0) == hist.bucket_index(hist.MIN_VALUE_MS)


def test_quantiles_from_merged_histograms() -> None:
    rng = random.Random(9)
    minutes = [[rng.lognormvariate(4, 1.2) for _ in range(300)] for _ in range(60)]
    merged: dict[int, int] = {}
    raw: dict[str, int] = {}
    for values in minutes:
        h = hist.from_values(values)
        hist.merge_into(merged, h)
        hist.merge_raw(raw, h)
    assert hist.int_keys(raw) == merged
    everything = [v for values in minutes for v in values]
    assert sum(merged.values()) == len(everything)
    for q in (0.5, 0.95, 0.99):
        exact = hist.percentile_cont(everything, q)
        assert exact is not None
        assert hist.quantile(merged, q) == pytest.approx(exact, rel=0.1)
    assert hist.quantile({}, 0.5) is None
    assert hist.from_values([]) is None
