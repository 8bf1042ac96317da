"""Sample-based TV-TRPO (Def D.1, eqs 67-68) and its closed-form maximizer (eq 69, Thm D.3).

Notation (App D.1): pairs ``(s, a)`` with multiplicities ``n``, per-state counts ``T_s``,
ratio deviations ``Delta = r - 1``, state weights ``w_s = Gamma(s)/Gamma`` (default ``T_s/T``).

* Reduced objective (eq 68), for ``gamma < 1``::

      j(Delta) = 1/(1-gamma) sum_s (w_s/T_s) sum_a n Delta A
                 - 4 gamma ||A||_inf / (1-gamma)^2 * (max_s D(s, Delta))^2

  with ``D`` the estimator of eq 39 as printed (no 1/2, finding F1), maximised subject to the
  probability constraint (65) ``sum_a n Delta = 0`` at every state.
* Unit-TV LP (eq 69): per state, maximise ``sum_a n Delta A`` subject to (65) and
  ``D(s, Delta) = 1``. Optimum ``M(s) = T_s (max A - min A)/2``: put ``x = n Delta = +T_s/2``
  on the best action and ``-T_s/2`` on the worst.
* Thm D.3: ``Delta* = t* Delta_hat*`` with ``t* = (1-gamma) M / (8 gamma ||A||_inf)`` and
  ``M = sum_s w_s M(s)/T_s``; every state with ``M(s) > 0`` ends at ``D(s, Delta*) = t*``.

Ties. When several actions share the best (or worst) advantage the LP has a face of
maximizers. Def D.1 picks the one of smallest ratio-deviation L2 norm; as printed that norm
is ``sum_s (1/T_s) sum_a Delta^2`` over distinct pairs (``tie_norm="pairs"``), which gives the
tied actions ``Delta_a ∝ n_a``. Counting every sampled token instead (``tie_norm="tokens"``,
weight ``n``) gives them equal ``Delta``. States with ``M(s) = 0`` (all advantages equal, or
a single sampled action, where (65) forces ``Delta = 0`` and eq 69 is infeasible) get
``Delta_hat* = 0``, the choice the proof of Thm D.3 makes for them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from fibration_theory.trust_region._pairs import (
    Pairs,
    as_vector,
    check_gamma,
    group_pairs,
    resolve_state_weights,
)

TieNorm = Literal["pairs", "tokens"]


@dataclasses.dataclass(frozen=True)
class TVTRPOSolution:
    """Closed-form maximizer of sample-based TV-TRPO (Thm D.3).

    Attributes:
        delta: ``(N,)`` the maximizer ``Delta* = t* Delta_hat*`` (ratio deviations ``r - 1``).
        unit_maximizer: ``(N,)`` ``Delta_hat*``, the per-state unit-TV maximizer of eq 69.
        t_star: the optimal step ``(1-gamma) M / (8 gamma ||A||_inf)``.
        M: the aggregate ``sum_s w_s M(s)/T_s``.
        M_s: ``(S,)`` per-state LP optima ``M(s)``, in the order of ``state_ids``.
        state_ids: ``(S,)`` sorted distinct state ids.
        T_s: ``(S,)`` per-state counts.
        weights: ``(S,)`` state weights ``Gamma(s)/Gamma``.
        state_tv: ``(S,)`` ``D(s, Delta*)`` (eq 39): ``t*`` where ``M(s) > 0``, else 0.
        adv_norm: ``||A||_inf``.
        gamma: the discount.
        objective: ``j(Delta*) = M^2 / (16 gamma ||A||_inf)`` (eq 68) for gamma < 1; at gamma = 1
            the penalty is infinite for every ``Delta != 0``, so ``Delta* = 0`` and the value
            reported is 0.
    """

    delta: np.ndarray
    unit_maximizer: np.ndarray
    t_star: float
    M: float
    M_s: np.ndarray
    state_ids: np.ndarray
    T_s: np.ndarray
    weights: np.ndarray
    state_tv: np.ndarray
    adv_norm: float
    gamma: float
    objective: float

    @property
    def ratios(self) -> np.ndarray:
        """``(N,)`` ``r = 1 + Delta*``; may be negative (finding F5)."""
        return 1.0 + self.delta


def _unit_maximizer(adv: np.ndarray, pairs: Pairs, tie_norm: TieNorm
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(Delta_hat*, half_spread_s)``: eq 69's maximizer and ``(max_a A - min_a A)/2`` per state
    (halves taken first, so that advantages near the float64 limit do not overflow)."""
    if tie_norm not in ("pairs", "tokens"):
        raise ValueError(f"tie_norm must be 'pairs' or 'tokens', got {tie_norm!r}")
    a_max, a_min = pairs.state_max(adv), pairs.state_min(adv)
    half_spread = 0.5 * a_max - 0.5 * a_min
    active = (half_spread > 0)[pairs.codes]
    is_max = active & (adv == a_max[pairs.codes])
    is_min = active & (adv == a_min[pairs.codes])
    n = pairs.counts
    # min sum_a w_a Delta_a^2 s.t. sum_{tied} n_a Delta_a = T_s/2  =>  Delta_a ∝ n_a / w_a
    share = n if tie_norm == "pairs" else np.ones_like(n)
    denom_max = pairs.state_sum(np.where(is_max, n * share, 0.0))
    denom_min = pairs.state_sum(np.where(is_min, n * share, 0.0))
    half = 0.5 * pairs.T_s[pairs.codes]
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(is_max, half * share / denom_max[pairs.codes], 0.0)
        down = np.where(is_min, half * share / denom_min[pairs.codes], 0.0)
    return up - down, half_spread


def unit_tv_maximizer(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                      tie_norm: TieNorm = "pairs") -> tuple[np.ndarray, np.ndarray]:
    """Closed form of the per-state unit-TV LP (eq 69).

    Returns:
        ``(Delta_hat*, M_s)``: ``(N,)`` maximizer and ``(S,)`` optima
        ``M(s) = T_s (max A - min A)/2`` (states in sorted id order).
    """
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    unit, half_spread = _unit_maximizer(adv, pairs, tie_norm)
    return unit, pairs.T_s * half_spread


def _step(m: float, norm: float, g: float) -> float:
    """``t* = (1 - gamma) M / (8 gamma ||A||)`` (Thm D.3), evaluated in this order (the digits every
    stored result was made with); where a product overflows (advantages near 1e308), regrouped
    as ``(1 - gamma)/(8 gamma) * (M/||A||)``, finite because ``M <= ||A||`` (Lemma D.2)."""
    num, den = (1.0 - g) * m, 8.0 * g * norm
    return num / den if math.isfinite(num) and math.isfinite(den) else (1.0 - g) / (8.0 * g) * (m / norm)


def _objective(m: float, norm: float, g: float) -> float:
    """``M^2 / (16 gamma ||A||)`` (Thm D.3), regrouped as ``M (M/||A||) / (16 gamma)`` only where
    ``M^2`` or the denominator overflows (the same rule as :func:`_step`)."""
    num, den = m * m, 16.0 * g * norm
    return num / den if math.isfinite(num) and math.isfinite(den) else m * (m / norm) / (16.0 * g)


def solve_tv_trpo(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                  gamma: float, state_weights: ArrayLike | Mapping[int, float] | None = None,
                  tie_norm: TieNorm = "pairs") -> TVTRPOSolution:
    """Maximizer of sample-based TV-TRPO (eq 68 under (65)) in closed form (Thm D.3).

    Args:
        advantages: ``(N,)`` advantages ``A_{s,a}`` per distinct pair.
        counts: ``(N,)`` multiplicities ``n_{s,a} >= 1``.
        states: ``(N,)`` integer state ids.
        gamma: discount in (0, 1].
        state_weights: ``Gamma(s)`` per state (mapping id -> weight, or array in sorted id
            order), normalised here; default ``T_s`` (the gamma = 1 weights).
        tie_norm: tie-break among equal advantages, see the module docstring.
    """
    g = check_gamma(gamma)
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    unit, half_spread = _unit_maximizer(adv, pairs, tie_norm)
    m_s = pairs.T_s * half_spread
    m = float(np.sum(w * half_spread))  # M = sum_s w_s M(s)/T_s
    norm = float(np.max(np.abs(adv)))
    t_star = _step(m, norm, g) if norm > 0 else 0.0
    delta = t_star * unit
    objective = _objective(m, norm, g) if (norm > 0 and g < 1.0) else 0.0
    return TVTRPOSolution(
        delta=_frozen(delta), unit_maximizer=_frozen(unit), t_star=t_star, M=m,
        M_s=_frozen(m_s), state_ids=_frozen(pairs.state_ids.copy()), T_s=_frozen(pairs.T_s),
        weights=_frozen(w), state_tv=_frozen(pairs.tv(delta)), adv_norm=norm, gamma=g,
        objective=objective)


def _frozen(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=x.dtype, copy=True)
    x.setflags(write=False)
    return x


def tv_trpo_objective(delta: ArrayLike, advantages: ArrayLike, counts: ArrayLike,
                      states: ArrayLike, *, gamma: float,
                      state_weights: ArrayLike | Mapping[int, float] | None = None) -> float:
    """Reduced sample-based TV-TRPO objective ``j(Delta)`` of eq 68 (needs gamma < 1).

    Args:
        delta: ``(N,)`` ratio deviations; (65) is not imposed here, only by the maximizer.
        advantages, counts, states: ``(N,)`` as in :func:`solve_tv_trpo`.
    """
    g = check_gamma(gamma)
    if g == 1.0:
        raise ValueError("gamma must be < 1 in eq 68: its coefficients diverge at gamma = 1")
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    d = as_vector(delta, "delta", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    linear = np.sum((w / pairs.T_s)[pairs.codes] * pairs.counts * d * adv) / (1.0 - g)
    penalty = 4.0 * g * np.max(np.abs(adv)) / (1.0 - g) ** 2 * pairs.tv(d).max() ** 2
    return float(linear - penalty)


def tv_trpo_objective_ratio(ratios: ArrayLike, advantages: ArrayLike, counts: ArrayLike,
                            states: ArrayLike, *, gamma: float, j_old: float = 0.0,
                            state_weights: ArrayLike | Mapping[int, float] | None = None
                            ) -> float:
    """Sample-based TV-TRPO objective of eq 67 in the ratios ``r`` (needs gamma < 1).

    ``J(theta_old) + 1/(1-gamma) sum_s (w_s/T_s) sum_a n r A - penalty``; it differs from eq 68
    at ``Delta = r - 1`` by the constant ``j_old + 1/(1-gamma) sum_s (w_s/T_s) sum_a n A``.
    """
    g = check_gamma(gamma)
    if g == 1.0:
        raise ValueError("gamma must be < 1 in eq 67: its coefficients diverge at gamma = 1")
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    r = as_vector(ratios, "ratios", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    const = np.sum((w / pairs.T_s)[pairs.codes] * pairs.counts * adv) / (1.0 - g)
    return float(j_old + const + tv_trpo_objective(r - 1.0, adv, pairs.counts, states,
                                                   gamma=g, state_weights=state_weights))
