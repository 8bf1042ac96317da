"""rliable's probability of improvement and performance profiles (``simulations/rliable_metrics.py``)
against values computed by hand from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
from fibration_theory.simulations import rliable_metrics as rm


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(("x", "y", "expected"), [
    # pairs (1,2) (1,2) lose, (2,2) (2,2) tie, (3,2) (3,2) win: (0 + 0 + .5 + .5 + 1 + 1) / 6
    ([1, 2, 3], [2, 2], 0.5),
    # 3 beats 1 and 2, ties 3; 4 beats all three: (1 + 1 + .5 + 1 + 1 + 1) / 6
    ([3, 4], [1, 2, 3], 5.5 / 6),
    ([5.0], [5.0], 0.5),
])
def test_probability_of_improvement_counts_wins_and_half_ties_over_every_pair(x, y, expected):
    assert rm.probability_of_improvement(x, y) == pytest.approx(expected, abs=1e-15)
    assert rm.probability_of_improvement(y, x) == pytest.approx(1 - expected, abs=1e-15)


def test_probability_of_improvement_averages_the_tasks():
    x = np.array([[1.0, 5.0], [2.0, 6.0]])  # (runs, tasks)
    y = np.array([[0.0, 7.0], [3.0, 7.0]])
    # task 0: 1>0, 1<3, 2>0, 2<3 -> 1/2; task 1: 5, 6 < 7, 7 -> 0; mean 1/4
    assert rm.probability_of_improvement(x, y) == pytest.approx(0.25, abs=1e-15)


def test_performance_profile_is_the_fraction_of_runs_strictly_above_tau():
    x = [0.1, 0.5, 0.5, 0.9]
    assert rm.performance_profile(x, [0.0, 0.1, 0.5, 0.9]).tolist() == [1.0, 0.75, 0.25, 0.0]
    two = np.array([[0.2, 0.8], [0.4, 0.6]])  # 4 runs-x-tasks: above 0.3 are 0.8, 0.4, 0.6
    assert rm.performance_profile(two, [0.3]).tolist() == [0.75]


def test_intervals_hold_the_point_and_collapse_when_every_resample_agrees():
    p, lo, hi = rm.poi_interval(np.arange(10) + 10.0, np.arange(10.0), rng=_rng())
    assert (p, lo, hi) == (1.0, 1.0, 1.0)  # every resampled pair still wins
    rng = _rng(1)
    x, y = rng.normal(0.3, 1, 12), rng.normal(0.0, 1, 12)
    p, lo, hi = rm.poi_interval(x, y, rng=_rng(2))
    assert lo < p < hi and 0 <= lo and hi <= 1
    assert (p, lo, hi) == rm.poi_interval(x, y, rng=_rng(2))  # deterministic given the stream
    f, flo, fhi = rm.profile_interval(x, [-1.0, 0.0, 1.0], rng=_rng(3))
    assert np.all(flo <= f) and np.all(f <= fhi) and np.any(flo < fhi)


def test_the_bootstrap_is_stratified_by_task():
    """Task 0's runs are all 0 and task 1's all 1: a resample that kept each task's runs
    within the task leaves half the scores above 0.5 every time (resampling across tasks
    would not)."""
    x = np.array([[0.0, 1.0]] * 6)
    f, lo, hi = rm.profile_interval(x, [0.5], rng=_rng())
    assert (f[0], lo[0], hi[0]) == (0.5, 0.5, 0.5)
    y = np.array([[0.5, 0.5]] * 4)
    assert rm.poi_interval(x, y, rng=_rng()) == (0.5, 0.5, 0.5)


def test_bad_scores_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="^x:"):
        rm.probability_of_improvement([np.nan, 1.0], [1.0])
    with pytest.raises(ValueError, match="^y:"):
        rm.probability_of_improvement([1.0], [])
    with pytest.raises(ValueError, match="same tasks"):
        rm.probability_of_improvement(np.ones((2, 2)), np.ones((2, 3)))
