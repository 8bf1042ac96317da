"""Statistics of ``fibration_theory.simulations.stats``: point estimates, intervals, paired differences."""

from __future__ import annotations

import numpy as np
import pytest
from fibration_theory.simulations import stats
from hypothesis import given, settings
from hypothesis import strategies as st

#: float64 means of at most 50 numbers of size <= 1e3: a few ulps of 1e3
POINT_TOL = 1e-9


@st.composite
def run_values(draw, min_size: int = 2, max_size: int = 30):
    """A (num_runs,) float64 array of finite values in [-1e3, 1e3], at least ``min_size``."""
    xs = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=min_size,
                       max_size=max_size))
    return np.array(xs, dtype=np.float64)


def test_iqm_is_the_trimmed_mean_of_the_middle_half():
    x = np.arange(1.0, 9.0)  # 1..8: the middle half is 3, 4, 5, 6
    assert stats.iqm(x) == pytest.approx(4.5, abs=POINT_TOL)


@settings(deadline=None, derandomize=True, max_examples=40)
@given(run_values())
def test_interval_contains_point_and_is_ordered(x):
    """Property: low <= point <= high, and the point is the plain statistic of the data."""
    for name, fn in (("median", np.median), ("iqm", stats.iqm), ("mean", np.mean)):
        est = stats.bootstrap_ci(x, name, rng=np.random.default_rng(0), n_resamples=200)
        assert est.low <= est.point <= est.high, (name, x.tolist(), est)
        assert est.point == pytest.approx(float(fn(x)), abs=POINT_TOL), (name, x.tolist())
        assert x.min() - POINT_TOL <= est.low and est.high <= x.max() + POINT_TOL, (name, x)


def test_constant_and_single_runs_give_degenerate_intervals():
    est = stats.bootstrap_ci([2.0, 2.0, 2.0], rng=np.random.default_rng(0))
    assert (est.point, est.low, est.high) == (2.0, 2.0, 2.0)
    est = stats.bootstrap_ci([5.0], rng=np.random.default_rng(0))
    assert (est.low, est.high, est.n) == (5.0, 5.0, 1)


def test_interval_is_reproducible_and_covers_a_known_median():
    """Same generator seed, same interval; a 95% interval of N(3, 1) samples covers 3 in
    most of 40 repetitions (binomial: >= 33 of 40 fails with prob < 1e-3 at true 95%)."""
    a = stats.bootstrap_ci(np.arange(20.0), rng=np.random.default_rng(7))
    b = stats.bootstrap_ci(np.arange(20.0), rng=np.random.default_rng(7))
    assert a == b
    data_rng = np.random.default_rng(123)
    hits = 0
    for k in range(40):
        x = data_rng.normal(3.0, 1.0, size=40)
        est = stats.bootstrap_ci(x, rng=np.random.default_rng(k), n_resamples=500)
        hits += est.low <= 3.0 <= est.high
    assert hits >= 33, hits


def test_paired_difference_removes_the_shared_seed_effect():
    """Per-seed noise shared by both methods cancels in the paired difference."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 10, size=20)
    a = seed_effect + 1.0
    b = seed_effect
    d = stats.paired_difference(a, b, rng=np.random.default_rng(1))
    assert d.point == pytest.approx(1.0) and d.low == pytest.approx(1.0), d
    unpaired_a = stats.bootstrap_ci(a, rng=np.random.default_rng(1))
    assert unpaired_a.high - unpaired_a.low > 1.0  # the seed effect dominates unpaired


def test_prob_improvement():
    assert stats.prob_improvement([2, 3], [0, 1]) == 1.0
    assert stats.prob_improvement([1, 1], [1, 1]) == 0.5
    assert stats.prob_improvement([0], [1, -1]) == 0.5


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="values"):
        stats.bootstrap_ci([1.0, np.inf], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="values"):
        stats.bootstrap_ci([], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="statistic"):
        stats.bootstrap_ci([1.0, 2.0], "mode", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_difference([1.0, 2.0], [1.0], rng=np.random.default_rng(0))


def test_summarize_keys():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0], rng=np.random.default_rng(0))
    assert set(s) >= {"median", "ci_low", "ci_high", "iqm", "iqm_ci_low", "iqm_ci_high",
                      "mean", "seeds"}
    assert s["seeds"] == 4 and s["median"] == 2.5


def test_curve_band_shapes_and_order():
    rng = np.random.default_rng(0)
    curves = rng.normal(size=(8, 11)).cumsum(1)
    c, lo, hi = stats.curve_band(curves, rng=np.random.default_rng(1))
    assert c.shape == lo.shape == hi.shape == (11,)
    assert np.all(lo <= c) and np.all(c <= hi)
    np.testing.assert_allclose(c, np.median(curves, axis=0))
