"""APC-Obj (Def 3.2 / C.1 / D.4, eqs 3, 57-59), its regimes (App C.2) and surrogated form (D.5-D.8).

All functions work on distinct pairs ``(s, a)`` with multiplicities ``n`` (App D.1). The clip
bound of a sampled token is the per-state budget ``T_s delta`` minus the deviation already
spent by every *other* token at ``s`` -- including the ``n - 1`` other copies of the same pair
(Remark D.7)::

    B_{s,a} = T_s delta - (T_s D(s) - |Delta_{s,a}|) = T_s (delta - D(s)) + |Delta_{s,a}|,

with ``D(s)`` the estimator of eq 39 as printed. ``clip(x, B) = clip(x, -B+, B+)``,
``B+ = max(B, 0)``. This is the operator ``G`` of Def D.8, and ``G(r - 1) + 1`` is the
gating map of eq 59.

Regimes (eqs 61-63): ``P`` (pass-through) when ``D(s) <= delta``; otherwise ``R`` (rollback,
``0 < |clip| < |Delta|``) when ``|Delta|/T_s > D(s) - delta``, else ``Z`` (zeroed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from fibration_theory.trust_region._pairs import (
    Pairs,
    as_vector,
    check_radius,
    group_pairs,
    resolve_state_weights,
)


def clip_bound(d: np.ndarray, pairs: Pairs, radius: float) -> np.ndarray:
    """``(N,)`` clip bound ``B_{s,a} = T_s delta - sum_{other tokens at s} |Delta|`` (eq 58).

    Formed without cancellation, as the token-level APC loss does: every deviation enters the
    state's sum capped at the state's budget, ``c = min(|Delta|, T_s delta)``, and
    ``B = T_s delta - (sum_s n c - c)``. The cap changes no clip: one other token beyond the
    whole budget leaves ``B <= 0`` (zeroed) with or without it. Subtracting an uncapped
    ``|Delta| = 1e20`` from ``T_s D(s)`` would wipe out the budget ``T_s delta``.
    """
    budget = (pairs.T_s * radius)[pairs.codes]
    capped = np.minimum(np.abs(d), budget)
    used = pairs.state_sum(pairs.counts * capped)[pairs.codes]
    return budget - (used - capped)


def _gate(d: np.ndarray, pairs: Pairs, radius: float) -> np.ndarray:
    """``G(Delta)`` of Def D.8 on validated inputs."""
    b_plus = np.maximum(clip_bound(d, pairs, radius), 0.0)
    return np.clip(d, -b_plus, b_plus)


def apc_clip(delta: ArrayLike, counts: ArrayLike, states: ArrayLike, *, radius: float
             ) -> np.ndarray:
    """Clipped deviations ``G(Delta)_{s,a} = clip(Delta, T_s (delta - D(s)) + |Delta|)``.

    Args:
        delta: ``(N,)`` ratio deviations ``Delta = r - 1``.
        counts: ``(N,)`` multiplicities; states: ``(N,)`` integer state ids.
        radius: trust-region radius ``delta >= 0``.

    Returns:
        ``(N,)`` the clipped deviations (Def D.8; eq 57's clip term).
    """
    pairs = group_pairs(counts, states)
    d = as_vector(delta, "delta", pairs.n_pairs)
    return _gate(d, pairs, check_radius(radius))


def apc_gating_map(ratios: ArrayLike, counts: ArrayLike, states: ArrayLike, *, radius: float
                   ) -> np.ndarray:
    """APC-Obj ratio gating map of eq 59: ``G(r)_{s,a} = clip(r - 1, B_{s,a}) + 1``, ``(N,)``."""
    r = as_vector(ratios, "ratios")
    return apc_clip(r - 1.0, counts, states, radius=radius) + 1.0


def apc_regimes(delta: ArrayLike, counts: ArrayLike, states: ArrayLike, *, radius: float
                ) -> np.ndarray:
    """``(N,)`` array of ``'P'``, ``'R'`` or ``'Z'``: the clipping regime of each pair (eqs 61-63)."""
    pairs = group_pairs(counts, states)
    d = as_vector(delta, "delta", pairs.n_pairs)
    rad = check_radius(radius)
    excess = (pairs.tv(d) - rad)[pairs.codes]  # D(s) - delta
    out = np.full(pairs.n_pairs, "Z", dtype="<U1")
    out[np.abs(d) / pairs.T_s[pairs.codes] > excess] = "R"
    out[excess <= 0] = "P"
    return out


def apc_objective(delta: ArrayLike, advantages: ArrayLike, counts: ArrayLike,
                  states: ArrayLike, *, radius: float,
                  state_weights: ArrayLike | Mapping[int, float] | None = None) -> float:
    """APC-Obj value (eq 57 / Def C.1; eq 72 without its ``1/(1-gamma)``).

    ``sum_s (w_s/T_s) sum_a n [clip(Delta, T_s (delta - D(s)) + |Delta|) A + A]``; with the
    default weights ``w_s = T_s/T`` this is ``(1/T) sum n [clip(...) A + A]``, eq 57 with the
    tokens of one pair grouped (Remark D.7).

    Args:
        delta: ``(N,)`` ratio deviations ``r - 1`` at which to evaluate.
        advantages: ``(N,)`` advantages.
        counts: ``(N,)`` multiplicities; states: ``(N,)`` integer state ids.
        radius: ``delta^(APC-Obj) >= 0``.
        state_weights: ``Gamma(s)`` per state for the discounted form (Def D.4).
    """
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    d = as_vector(delta, "delta", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    g = _gate(d, pairs, check_radius(radius))
    coef = (w / pairs.T_s)[pairs.codes] * pairs.counts
    return float(np.sum(coef * (g * adv + adv)))


def apc_correction(delta: ArrayLike, counts: ArrayLike, states: ArrayLike, *, radius: float
                   ) -> np.ndarray:
    """``(S,)`` correction term ``C(Delta)_s = (1/T_s) sum_a n G(Delta)_a`` of eq 74."""
    pairs = group_pairs(counts, states)
    d = as_vector(delta, "delta", pairs.n_pairs)
    return pairs.state_sum(pairs.counts * _gate(d, pairs, check_radius(radius))) / pairs.T_s


def apc_surrogate_objective(delta: ArrayLike, advantages: ArrayLike, counts: ArrayLike,
                            states: ArrayLike, *, radius: float,
                            state_weights: ArrayLike | Mapping[int, float] | None = None
                            ) -> float:
    """Surrogated APC-Obj ``j^(APC)(Delta, delta)`` of eq 73 (without ``1/(1-gamma)``).

    ``sum_s (w_s/T_s) sum_a n [G(Delta)_a A + (1 - C(Delta)_s) A]``. It equals
    :func:`apc_objective` exactly when the advantages are centered per state (66)
    (Lemma D.6); the gap is ``-sum_s w_s C(Delta)_s mean_s(A)``.
    """
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    d = as_vector(delta, "delta", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    g = _gate(d, pairs, check_radius(radius))
    corr = pairs.state_sum(pairs.counts * g) / pairs.T_s
    coef = (w / pairs.T_s)[pairs.codes] * pairs.counts
    return float(np.sum(coef * (g * adv + (1.0 - corr[pairs.codes]) * adv)))


def apc_retract(delta: ArrayLike, counts: ArrayLike, states: ArrayLike, *, radius: float
                ) -> np.ndarray:
    """Centered projection ``proj(G(u))_{s,a} = G(u)_{s,a} - C(G(u))_s`` of Def D.8, ``(N,)``.

    ``C(G(u))_s`` is the n-weighted mean of ``G(u)`` at ``s``: ``G`` is idempotent (after one
    clip ``D(s, G(u)) <= delta``, where the clip is the identity), so the two readings of
    Def D.8, ``C(u)`` in its proof and ``C(G(u))`` in its statement, coincide. Lemma D.9
    (for ``u`` satisfying (65)): ``D(s, proj(G(u))) <= delta`` at every state, strictly when
    ``D(s, u) > delta``.
    """
    pairs = group_pairs(counts, states)
    u = as_vector(delta, "delta", pairs.n_pairs)
    g = _gate(u, pairs, check_radius(radius))
    mean = pairs.state_sum(pairs.counts * g) / pairs.T_s
    return g - mean[pairs.codes]
