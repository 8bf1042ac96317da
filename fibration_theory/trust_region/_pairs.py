"""Validated, grouped state-action pairs: the sampling notation of App D.1.

Every public function of :mod:`fibration_theory.trust_region` takes arrays indexed by the
*distinct* sampled state-action pairs ``(s, a)`` of the set X (App D.1): one entry per pair,
shape ``(N,)``. ``counts`` holds the multiplicities ``n_{s,a}``, ``states`` an integer id per
pair. From them we derive the per-state counts ``T_s = sum_{a in X_s} n_{s,a}`` and the total
``T = sum_s T_s``. Grouping is done once (a counting pass when the ids are dense, one sort
otherwise), and every per-state reduction is a ``np.bincount`` or a ``ufunc.at`` (no Python
loop over states).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Grouping of N pairs into S states.

    Attributes:
        counts: ``(N,)`` float64 multiplicities ``n_{s,a} >= 1``.
        codes: ``(N,)`` int64 state index in ``0..S-1`` (position of the pair's state id in
            ``state_ids``).
        state_ids: ``(S,)`` the distinct state ids, sorted.
        T_s: ``(S,)`` per-state counts ``T_s``.
    """

    counts: np.ndarray
    codes: np.ndarray
    state_ids: np.ndarray
    T_s: np.ndarray

    @functools.cached_property
    def blocks(self) -> list[np.ndarray]:
        """Pair indices of each state, in state order (for the per-state reference loops)."""
        order = np.argsort(self.codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, self.codes[order][1:] != self.codes[order][:-1]])
        return np.split(order, starts[1:])

    @property
    def n_pairs(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_states(self) -> int:
        return int(self.state_ids.shape[0])

    @property
    def T(self) -> float:
        """Total sample count ``T = sum_s T_s``."""
        return float(self.T_s.sum())

    def state_sum(self, values: np.ndarray) -> np.ndarray:
        """``(S,)`` per-state sums of a ``(N,)`` array."""
        return np.bincount(self.codes, weights=values, minlength=self.n_states)

    def state_max(self, values: np.ndarray) -> np.ndarray:
        """``(S,)`` per-state maxima of a ``(N,)`` array."""
        out = np.full(self.n_states, -np.inf)
        np.maximum.at(out, self.codes, values)
        return out

    def state_min(self, values: np.ndarray) -> np.ndarray:
        """``(S,)`` per-state minima of a ``(N,)`` array."""
        out = np.full(self.n_states, np.inf)
        np.minimum.at(out, self.codes, values)
        return out

    def tv(self, delta: np.ndarray) -> np.ndarray:
        """``(S,)`` per-state estimator ``D_TV(s) = (1/T_s) sum_a n_{s,a} |Delta_{s,a}|``.

        This is eq 39 *as printed*: it carries no factor 1/2, so it estimates
        ``E_{pi_old}|r - 1| = 2 D_TV(s)`` of eq 37 (finding F1).
        """
        return self.state_sum(self.counts * np.abs(delta)) / self.T_s


def as_vector(x: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    """A finite 1-D float64 array named ``name`` (of length ``n`` when given)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per state-action pair), got shape "
                         f"{arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n} (one per pair)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def group_pairs(counts: ArrayLike, states: ArrayLike) -> Pairs:
    """Validate ``counts`` and ``states`` (both ``(N,)``) and group the pairs by state."""
    n = as_vector(counts, "counts")
    if n.shape[0] == 0:
        raise ValueError("counts is empty: at least one sampled pair is needed")
    if np.any(n < 1):
        # multiplicities of sampled pairs; Lemma D.9 and the idempotence of the APC clip use
        # n >= 1 (integrality itself is never needed)
        raise ValueError("counts must be >= 1 (multiplicities n_{s,a} of sampled pairs)")
    raw = np.asarray(states)
    if raw.ndim != 1 or raw.shape[0] != n.shape[0]:
        raise ValueError(f"states has shape {raw.shape}, expected ({n.shape[0]},) like counts")
    if raw.dtype.kind in "iu":
        ids = raw.astype(np.int64)
    else:
        try:
            f = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("states must hold integer state ids") from None
        if not np.all(np.isfinite(f)) or np.any(f != np.round(f)):
            raise ValueError("states must hold integer state ids (no NaN, inf or fractions)")
        ids = f.astype(np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo <= 4 * ids.shape[0] + 1024:
        # dense ids: a counting pass, O(N + range), no sort
        present = np.bincount(ids - lo) > 0
        codes = (np.cumsum(present) - 1)[ids - lo]
        state_ids = np.flatnonzero(present) + lo
    else:
        state_ids, codes = np.unique(ids, return_inverse=True)
    codes = codes.astype(np.int64).reshape(-1)
    T_s = np.bincount(codes, weights=n, minlength=state_ids.shape[0])
    return Pairs(counts=n, codes=codes, state_ids=state_ids.astype(np.int64), T_s=T_s)


def _as_float(x: object, name: str) -> float:
    """``float(x)`` for a real number ``x`` (no strings, no bools), else ValueError naming it."""
    if isinstance(x, (str, bytes, bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {x!r}") from None


def check_gamma(gamma: float) -> float:
    """The discount ``gamma`` in (0, 1]."""
    g = _as_float(gamma, "gamma")
    if not np.isfinite(g) or not 0.0 < g <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
    return g


def check_radius(radius: float, name: str = "radius") -> float:
    """A finite trust-region radius ``delta >= 0``."""
    r = _as_float(radius, name)
    if not np.isfinite(r) or r < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {radius!r}")
    return r


def resolve_state_weights(weights: ArrayLike | Mapping[int, float] | None, pairs: Pairs) -> np.ndarray:
    """``(S,)`` state weights ``Gamma(s)/Gamma`` (App D.1), default ``T_s / T``.

    ``weights`` is either a mapping ``state id -> Gamma(s)`` or an array of ``Gamma(s)`` in the
    order of the sorted distinct state ids. Values are divided by their sum, which is the
    normalisation ``Gamma = sum_s Gamma(s)``.
    """
    if weights is None:
        return pairs.T_s / pairs.T
    if isinstance(weights, Mapping):
        missing = [s for s in pairs.state_ids.tolist() if s not in weights]
        if missing:
            raise ValueError(f"state_weights lacks the states {missing[:5]}")
        w = np.array([float(weights[s]) for s in pairs.state_ids.tolist()], dtype=np.float64)
    else:
        w = as_vector(weights, "state_weights", pairs.n_states)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("state_weights must be finite, >= 0, with a positive sum")
    return w / w.sum()
