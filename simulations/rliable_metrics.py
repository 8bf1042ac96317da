"""Probability of improvement and performance profiles, as rliable defines them.

Agarwal, Schwarzer, Castro, Courville, Bellemare, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice" (NeurIPS 2021), and its library ``rliable`` (``metrics.py``,
``library.py``), rewritten on numpy because rliable pulls in pandas, statsmodels and arch.
Scores are ``(num_runs, num_tasks)`` float arrays (a 1-D array is one task); nothing reads
global random state.

* **Probability of improvement** of X over Y (rliable's ``probability_of_improvement``):
  ``P(X > Y) = (1/M) sum_m P(X_m > Y_m)`` over the ``M`` tasks, with
  ``P(X_m > Y_m) = (1/(N K)) sum_{i,j} S(x_{m,i}, y_{m,j})``, ``S(x, y) = 1`` if ``x > y``,
  ``1/2`` if ``x = y``, ``0`` otherwise, over every pair of X's ``N`` and Y's ``K`` runs
  (the Mann-Whitney U statistic over ``N K``).
* **Performance profile** (rliable's run-score distribution): ``F(tau)``, the fraction of
  runs (over all runs and tasks) whose score exceeds ``tau``, for each ``tau``.
* **Intervals**: stratified percentile bootstrap (rliable's ``StratifiedBootstrap``): each
  resample draws, for every method and every task separately, that task's runs with
  replacement; with two methods the two are resampled independently.
"""

from __future__ import annotations

import numpy as np

#: bootstrap resamples (rliable's default is 2000 as well)
N_RESAMPLES = 2000


def _scores(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: scores must be (num_runs, num_tasks) with at least one "
                         f"run and task, got shape {np.shape(x)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: non-finite scores")
    return a


def probability_of_improvement(x, y) -> float:
    """``P(X > Y)`` of ``x`` ``(N, M)`` over ``y`` ``(K, M)`` (the same ``M`` tasks)."""
    a, b = _scores(x, "x"), _scores(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same tasks; shapes {a.shape} and {b.shape}")
    return float(_poi(a[None], b[None])[0])


def _poi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched PoI: ``a`` ``(R, N, M)``, ``b`` ``(R, K, M)`` -> ``(R,)``."""
    d = a[:, :, None, :] - b[:, None, :, :]  # (R, N, K, M)
    s = (d > 0) + 0.5 * (d == 0)
    return s.mean(axis=(1, 2)).mean(axis=-1)


def performance_profile(x, taus) -> np.ndarray:
    """``F(tau) = mean over runs and tasks of [score > tau]`` for each ``tau``; ``x`` is
    ``(N, M)``, ``taus`` ``(T,)``; returns ``(T,)``."""
    a = _scores(x, "x")
    t = np.asarray(taus, dtype=np.float64).ravel()
    return (a[None, :, :] > t[:, None, None]).mean(axis=(1, 2))


def _resample(a: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` stratified resamples of ``a`` ``(N, M)``: rows drawn per task -> ``(n, N, M)``."""
    idx = rng.integers(0, a.shape[0], size=(n, a.shape[0], a.shape[1]))
    return np.take_along_axis(np.broadcast_to(a, (n, *a.shape)), idx, axis=1)


def _interval(point, boot: np.ndarray, confidence: float):
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)
    return np.minimum(lo, point), np.maximum(hi, point)


def poi_interval(x, y, *, rng: np.random.Generator, confidence: float = 0.95,
                 n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """``(PoI, low, high)``: :func:`probability_of_improvement` with a stratified percentile
    bootstrap interval (``x`` and ``y`` resampled independently, per task)."""
    a, b = _scores(x, "x"), _scores(y, "y")
    point = probability_of_improvement(a, b)
    boot = np.concatenate([_poi(_resample(a, rng, k), _resample(b, rng, k))
                           for k in _chunks(n_resamples, a.shape[0] * b.shape[0] * a.shape[1])])
    lo, hi = _interval(point, boot, confidence)
    return point, float(lo), float(hi)


def profile_interval(x, taus, *, rng: np.random.Generator, confidence: float = 0.95,
                     n_resamples: int = N_RESAMPLES) -> tuple[np.ndarray, ...]:
    """``(F, low, high)`` of :func:`performance_profile`, each ``(T,)``, with stratified
    percentile bootstrap intervals (pointwise in ``tau``)."""
    a = _scores(x, "x")
    t = np.asarray(taus, dtype=np.float64).ravel()
    point = performance_profile(a, t)
    boot = (_resample(a, rng, n_resamples)[:, None] > t[None, :, None, None]).mean(axis=(2, 3))
    lo, hi = _interval(point, boot, confidence)
    return point, lo, hi


def _chunks(n: int, pairs: int, limit: int = 4_000_000) -> list[int]:
    """Split ``n`` resamples so that one batch holds at most ``limit`` pair comparisons."""
    per = max(1, limit // max(pairs, 1))
    return [min(per, n - i) for i in range(0, n, per)]
