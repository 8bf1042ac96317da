"""Maximizing APC-Obj without its closed form: exact piece enumeration and local ascent.

These are the independent searches behind the certificate of Thm D.10 and finding F6. APC-Obj
separates over states; at one state, dropping the constant ``sum n A``, it is::

    f(Delta) = sum_a n_a G(Delta)_a A_a,    G as in Def D.8.

``f`` is continuous and piecewise linear. Fix the sign pattern ``sigma = sign(Delta)``; then
``T_s D(s) = sum_a n_a sigma_a Delta_a`` is linear, and so is ``c = T_s (D(s) - delta)``.
Either ``c <= 0`` (every clip is the identity) or ``c >= 0`` and a subset ``Z`` of the actions
has ``|Delta_a| <= c`` (zeroed) while the rest give ``sigma_a (|Delta_a| - c)``. Each of the
``2^k (1 + 2^k)`` pieces is a polyhedron on which ``f`` is linear, so one LP per piece
(scipy's HiGHS) gives the exact global maximum over any polyhedral domain.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import null_space
from scipy.optimize import linprog, minimize

from fibration_theory.trust_region._pairs import as_vector, check_radius, group_pairs

#: largest number of sampled actions at one state for the exact search (2^k (1 + 2^k) LPs)
MAX_ACTIONS_EXACT = 5


@dataclasses.dataclass(frozen=True)
class ApcMax:
    """A maximizer of APC-Obj found by search.

    Attributes:
        delta: ``(N,)`` (or ``(k,)`` for one state) the maximizing deviations.
        value: the maximum (APC-Obj value for the batch functions; ``f`` for one state).
        extra: ``(m,)`` values of the silent variables (one-state search only).
        n_lp: number of LPs (exact) or function evaluations (local) spent.
    """

    delta: np.ndarray
    value: float
    extra: np.ndarray
    n_lp: int


def state_term(delta: np.ndarray, adv: np.ndarray, n: np.ndarray, radius: float) -> float:
    """``f(Delta) = sum_a n G(Delta)_a A_a`` at one state (shapes ``(k,)``)."""
    t_s = n.sum()
    bound = t_s * radius - (np.sum(n * np.abs(delta)) - np.abs(delta))
    b_plus = np.maximum(bound, 0.0)
    return float(np.sum(n * np.clip(delta, -b_plus, b_plus) * adv))


def maximize_apc_state(adv: ArrayLike, n: ArrayLike, radius: float, *,
                       a_eq: np.ndarray | None = None, b_eq: np.ndarray | None = None,
                       bounds: list[tuple[float | None, float | None]] | None = None,
                       n_extra: int = 0) -> ApcMax:
    """Exact global maximum of ``f`` at one state over a polyhedral domain.

    Args:
        adv: ``(k,)`` advantages of the sampled actions; n: ``(k,)`` multiplicities.
        radius: ``delta >= 0``.
        a_eq, b_eq: equality constraints on ``x = (Delta, extra)`` of shape ``(e, k + m)``,
            ``(e,)``. Default: the probability constraint (65), ``sum_a n Delta = 0``.
        bounds: per-variable bounds for ``x`` (default free).
        n_extra: number ``m`` of silent variables (e.g. unsampled actions) that enter only the
            constraints.
    """
    a = as_vector(adv, "adv")
    w = as_vector(n, "n", a.shape[0])
    rad = check_radius(radius)
    k, m = a.shape[0], int(n_extra)
    if k > MAX_ACTIONS_EXACT:
        raise ValueError(f"adv: {k} actions at one state; the exact search allows "
                         f"{MAX_ACTIONS_EXACT} (it solves 2^k (1 + 2^k) LPs)")
    # under (65) alone, a one-signed orthant holds only Delta = 0 and the all-zeroed piece has
    # f = 0: both are already covered by Delta = 0 in another piece, so they are skipped
    default_domain = a_eq is None
    if default_domain:
        a_eq, b_eq = np.r_[w, np.zeros(m)][None, :], np.zeros(1)
    bounds = bounds if bounds is not None else [(None, None)] * (k + m)
    budget = w.sum() * rad
    best_val, best_x, n_lp = -np.inf, None, 0
    eye = np.eye(k)
    pad = np.zeros(m)
    for sigma in itertools.product((-1.0, 1.0), repeat=k):
        s = np.asarray(sigma)
        if default_domain and k > 1 and abs(s.sum()) == k:
            continue
        u = w * s                                          # T_s D = u . Delta on this orthant
        orth = np.c_[-np.diag(s), np.zeros((k, m))]        # sigma_a Delta_a >= 0
        pieces = [(np.r_[u, pad][None, :], np.array([budget]), w * a)]  # c <= 0: no clipping
        for mask in range((1 << k) - (1 if default_domain else 0)):
            zero = np.array([(mask >> i) & 1 for i in range(k)], dtype=bool)
            # with c = u.Delta - budget: zeroed |Delta_a| - c <= 0, kept |Delta_a| - c >= 0
            rows = s[:, None] * eye - u[None, :]
            ub = np.where(zero, -budget, budget)
            rows = np.where(zero[:, None], rows, -rows)
            keep = ~zero
            na = np.where(keep, w * a, 0.0)
            lin = na - np.sum(na * s) * u                 # sum_{a not in Z} n A (Delta_a - sigma_a c)
            # plus c >= 0, i.e. -u.Delta <= -budget; the constant of f on the piece is not needed
            pieces.append((np.r_[np.c_[rows, np.zeros((k, m))], np.r_[-u, pad][None, :]],
                           np.r_[ub, -budget], lin))
        for rows, rhs, lin in pieces:
            res = linprog(-np.r_[lin, pad], A_ub=np.r_[orth, rows], b_ub=np.r_[np.zeros(k), rhs],
                          A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
            n_lp += 1
            if res.status != 0:
                continue
            val = state_term(res.x[:k], a, w, rad)        # re-evaluate f itself at the vertex
            if val > best_val:
                best_val, best_x = val, res.x
    if best_x is None:
        raise ValueError("the domain given by a_eq, b_eq, bounds is empty")
    return ApcMax(delta=best_x[:k], value=best_val, extra=best_x[k:], n_lp=n_lp)


def _by_state(advantages, counts, states):
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    return pairs, adv, pairs.blocks


def maximize_apc_exact(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                       radius: float,
                       state_weights: ArrayLike | Mapping[int, float] | None = None) -> ApcMax:
    """Exact global maximizer of APC-Obj over deviations satisfying (65), state by state.

    Returns an :class:`ApcMax` whose ``delta`` is ``(N,)`` and ``value`` the APC-Obj value
    (:func:`~fibration_theory.trust_region.apc.apc_objective`) there.
    """
    from fibration_theory.trust_region.apc import apc_objective

    pairs, adv, blocks = _by_state(advantages, counts, states)
    delta = np.zeros(pairs.n_pairs)
    n_lp = 0
    for idx in blocks:
        res = maximize_apc_state(adv[idx], pairs.counts[idx], radius)
        delta[idx] = res.delta
        n_lp += res.n_lp
    value = apc_objective(delta, adv, pairs.counts, states, radius=radius,
                          state_weights=state_weights)
    return ApcMax(delta=delta, value=value, extra=np.zeros(0), n_lp=n_lp)


def maximize_apc_local(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                       radius: float, rng: np.random.Generator, restarts: int = 6,
                       start_scale: float = 1.5, polish: int = 3,
                       state_weights: ArrayLike | Mapping[int, float] | None = None) -> ApcMax:
    """Local ascent (Nelder-Mead) on APC-Obj within (65), from random starts, state by state.

    Each state's deviations are written ``Delta = Q z`` with ``Q`` an orthonormal basis of
    ``{sum_a n Delta = 0}``; starts have ``D(s)`` uniform in ``[0, start_scale * delta]``;
    the best point is then re-ascended from a fresh simplex up to ``polish`` times.
    """
    from fibration_theory.trust_region.apc import apc_objective

    rad = check_radius(radius)
    pairs, adv, blocks = _by_state(advantages, counts, states)
    delta = np.zeros(pairs.n_pairs)
    evals = 0
    for idx in blocks:
        a, w = adv[idx], pairs.counts[idx]
        if idx.shape[0] == 1 or rad == 0.0:
            continue
        q = null_space(w[None, :])
        best_val, best_z = -np.inf, None

        def ascend(z0: np.ndarray, q=q, a=a, w=w):
            return minimize(lambda z: -state_term(q @ z, a, w, rad), z0, method="Nelder-Mead",
                            options={"xatol": 1e-13, "fatol": 1e-15, "adaptive": True,
                                     "maxiter": 4000 * q.shape[1]})

        for _ in range(restarts):
            z0 = rng.standard_normal(q.shape[1])
            d0 = q @ z0
            z0 *= rng.uniform(0, start_scale) * rad * w.sum() / np.sum(w * np.abs(d0))
            res = ascend(z0)
            evals += int(res.nfev)
            if -res.fun > best_val:
                best_val, best_z = -res.fun, res.x
        # a simplex can collapse on a kink short of the vertex: restart from the incumbent
        for _ in range(polish):
            res = ascend(best_z)
            evals += int(res.nfev)
            if -res.fun <= best_val:
                break
            best_val, best_z = -res.fun, res.x
        delta[idx] = q @ best_z
    value = apc_objective(delta, adv, pairs.counts, states, radius=rad,
                          state_weights=state_weights)
    return ApcMax(delta=delta, value=value, extra=np.zeros(0), n_lp=evals)
