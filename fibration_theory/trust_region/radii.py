"""Trust-region radii and the per-state TV estimator (eq 39, eq 76, Def 3.2, Def D.4).

``delta_trpo(gamma) = (1 - gamma) / (8 gamma)`` is the TRPO radius of Lemma B.2 / eq 76; it
tends to 0 as gamma -> 1 (Thm 2.1). The APC-Obj radius is typeset twice in the paper
(finding F2):

* App D.4 (Def D.4):  ``delta = (1 - gamma) M / (8 gamma ||A||_inf)``, which equals the
  TV-TRPO step ``t*`` of Thm D.3 and is what Thm D.10 needs;
* Def 3.2 / C.1:      ``delta = (1 - gamma)^2 M / (8 gamma ||A||_inf T)``.

Both are provided; :func:`delta_apc` is the App D.4 one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from fibration_theory.trust_region._pairs import (
    as_vector,
    check_gamma,
    group_pairs,
    resolve_state_weights,
)


def delta_trpo(gamma: float) -> float:
    """TRPO trust-region radius ``(1 - gamma) / (8 gamma)`` (Lemma B.2, eq 76); 0 at gamma = 1."""
    g = check_gamma(gamma)
    return (1.0 - g) / (8.0 * g)


def tv_per_state(delta: ArrayLike, counts: ArrayLike, states: ArrayLike
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-state estimator of eq 39, as printed: ``D(s) = (1/T_s) sum_a n_{s,a} |Delta_{s,a}|``.

    Args:
        delta: ``(N,)`` ratio deviations ``Delta = r - 1``.
        counts: ``(N,)`` multiplicities ``n_{s,a}``.
        states: ``(N,)`` integer state ids.

    Returns:
        ``(state_ids, D)``, both ``(S,)``. Without the 1/2 of eq 37, ``D(s)`` estimates twice
        the total variation (finding F1).
    """
    pairs = group_pairs(counts, states)
    d = as_vector(delta, "delta", pairs.n_pairs)
    return pairs.state_ids.copy(), pairs.tv(d)


def max_tv(delta: ArrayLike, counts: ArrayLike, states: ArrayLike) -> float:
    """Sample max divergence ``max_s D(s)`` (eq 44 with the estimator of eq 39)."""
    return float(tv_per_state(delta, counts, states)[1].max())


def unit_tv_values(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(state_ids, M_s)``: optimum ``M(s)`` of the per-state unit-TV LP (eq 69).

    With ``x = n Delta`` the LP reads: maximise ``sum x A`` subject to ``sum x = 0`` and
    ``sum |x| = T_s``, so half of the budget goes to the best action and half (negative) to
    the worst: ``M(s) = T_s (max_a A - min_a A) / 2``.
    """
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    spread = pairs.state_max(adv) - pairs.state_min(adv)
    return pairs.state_ids.copy(), 0.5 * pairs.T_s * spread


def aggregate_M(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                state_weights: ArrayLike | Mapping[int, float] | None = None) -> float:
    """``M = sum_s (Gamma(s)/Gamma) M(s) / T_s`` (App D.3, before Lemma D.2)."""
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    spread = pairs.state_max(adv) - pairs.state_min(adv)
    return float(np.sum(w * 0.5 * spread))


def delta_apc(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *, gamma: float,
              state_weights: ArrayLike | Mapping[int, float] | None = None) -> float:
    """APC-Obj radius of Def D.4: ``(1 - gamma) M / (8 gamma ||A||_inf)`` (= ``t*`` of Thm D.3)."""
    g = check_gamma(gamma)
    adv = as_vector(advantages, "advantages")
    norm = float(np.max(np.abs(adv))) if adv.size else 0.0
    if norm == 0.0:
        return 0.0
    m = aggregate_M(adv, counts, states, state_weights=state_weights)
    return (1.0 - g) * m / (8.0 * g * norm)


def delta_apc_def32(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                    gamma: float) -> float:
    """APC-Obj radius as typeset in Def 3.2 (and C.1): ``(1-gamma)^2 M / (8 gamma ||A||_inf T)``.

    ``M`` is the same aggregate as in :func:`delta_apc` with the undiscounted weights
    ``T_s / T`` that Def 3.2 uses. The ratio to the App D.4 radius is ``(1 - gamma) / T``
    (finding F2).
    """
    pairs = group_pairs(counts, states)
    return delta_apc(advantages, counts, states, gamma=gamma) * (1.0 - check_gamma(gamma)) / pairs.T


def discounted_state_weights(token_states: ArrayLike, token_times: ArrayLike, gamma: float
                             ) -> tuple[np.ndarray, np.ndarray]:
    """``(state_ids, Gamma(s)/Gamma)`` with ``Gamma(s) = sum_{tokens at s} gamma^t`` (App D.1).

    Args:
        token_states: ``(T,)`` state id of each sampled token (the augmented space of App D.1).
        token_times: ``(T,)`` time step ``t >= 0`` of each token within its trajectory.
        gamma: discount in (0, 1]; at gamma = 1 the weights are ``T_s / T``.
    """
    g = check_gamma(gamma)
    times = as_vector(token_times, "token_times")
    if np.any(times < 0):
        raise ValueError("token_times must be >= 0")
    pairs = group_pairs(np.ones_like(times), token_states)
    # gamma^t computed in log space so long trajectories do not underflow to a silent 0 sum
    logw = times * np.log(g)
    w = pairs.state_sum(np.exp(logw - logw.max()))
    return pairs.state_ids.copy(), w / w.sum()
