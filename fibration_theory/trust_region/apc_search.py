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
import warnings
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import null_space
from scipy.optimize import linprog, minimize

from fibration_theory.trust_region._pairs import as_vector, check_radius, group_pairs
from fibration_theory.trust_region.tv_trpo import TieNorm

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
                       n_extra: int = 0, tie_break: TieNorm | None = None) -> ApcMax:
    """Exact global maximum of ``f`` at one state over a polyhedral domain.

    Args:
        adv: ``(k,)`` advantages of the sampled actions; n: ``(k,)`` multiplicities.
        radius: ``delta >= 0``.
        a_eq, b_eq: equality constraints on ``x = (Delta, extra)`` of shape ``(e, k + m)``,
            ``(e,)``. Default: the probability constraint (65), ``sum_a n Delta = 0``.
        bounds: per-variable bounds for ``x`` (default free).
        n_extra: number ``m`` of silent variables (e.g. unsampled actions) that enter only the
            constraints.
        tie_break: ``None`` returns a vertex of the optimal set (whichever HiGHS finds);
            ``"pairs"`` (``sum_a Delta_a^2``) or ``"tokens"`` (``sum_a n_a Delta_a^2``) returns the
            point of smallest such norm among all maximizers, the tie-break of Def D.4: on every
            piece whose LP reaches the maximum, a QP over that piece's optimal face (the piece
            cut by ``f >= max``), and the smallest of their optima.
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
    solved = []  # (A_ub, b_ub, lin, x, value) of every feasible piece
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
            solved.append((np.r_[orth, rows], np.r_[np.zeros(k), rhs], lin, res.x, val))
            if val > best_val:
                best_val, best_x = val, res.x
    if best_x is None:
        raise ValueError("the domain given by a_eq, b_eq, bounds is empty")
    if tie_break is not None:
        best_x, n_qp = _min_norm_maximizer(solved, best_val, a_eq, b_eq, bounds, a, w, rad,
                                           k, tie_break)
        n_lp += n_qp
        best_val = state_term(best_x[:k], a, w, rad)
    return ApcMax(delta=best_x[:k], value=best_val, extra=best_x[k:], n_lp=n_lp)


#: a piece reaches the maximum when its LP value is within this (relative) of it; HiGHS's
#: vertices are exact to ~1e-15, so 1e-9 admits every piece of the optimal set and no other
#: (a suboptimal piece sits below by a difference of advantages times a deviation, O(1e-3)+)
TIE_RTOL = 1e-9


def _min_norm_maximizer(solved, best_val, a_eq, b_eq, bounds, adv, w, rad, k,
                        tie_break: TieNorm) -> tuple[np.ndarray, int]:
    """Smallest-norm maximizer over the union of the optimal faces of the pieces."""
    import cvxpy as cp

    from fibration_theory.trust_region.reference import CLARABEL_OPTS

    if tie_break not in ("pairs", "tokens"):
        raise ValueError(f"tie_break must be None, 'pairs' or 'tokens', got {tie_break!r}")
    scale = max(1.0, abs(best_val))
    weight = np.ones(k) if tie_break == "pairs" else w
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    best, best_norm, n_qp = None, np.inf, 0
    zero = np.zeros(solved[0][3].shape[0])
    if (np.allclose(a_eq @ zero, b_eq, rtol=0, atol=0)
            and np.all(lo <= 0) and np.all(hi >= 0)
            and state_term(zero[:k], adv, w, rad) >= best_val - TIE_RTOL * scale):
        return zero, 0  # Delta = 0 is a maximizer (e.g. all advantages equal): norm 0
    for a_ub, b_ub, lin, x0, val in solved:
        if val < best_val - TIE_RTOL * scale:
            continue
        const = val - float(lin @ x0[:k])                # f = lin . Delta + const on the piece
        x = cp.Variable(x0.shape[0])
        # the optimal face: the piece cut by f = max (an equality; the LP shows f <= max there)
        cons = [a_ub @ x <= b_ub, a_eq @ x == b_eq, lin @ x[:k] == best_val - const]
        cons += [x[i] >= lo[i] for i in np.flatnonzero(np.isfinite(lo))]
        cons += [x[i] <= hi[i] for i in np.flatnonzero(np.isfinite(hi))]
        prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(weight, cp.square(x[:k])))), cons)
        with warnings.catch_warnings():
            # a face is lower-dimensional: CLARABEL may flag "inaccurate"; the point is
            # accepted only if it re-evaluates as a maximizer below
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver="CLARABEL", **CLARABEL_OPTS)
        n_qp += 1
        if x.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
            continue
        cand = np.asarray(x.value)
        if state_term(cand[:k], adv, w, rad) < best_val - 1e-7 * scale:
            continue  # the QP solver's point left the optimal set: not a maximizer
        norm = float(np.sum(weight * cand[:k] ** 2))
        if norm < best_norm:
            best, best_norm = cand, norm
    if best is None:  # no QP came back: fall back to the best vertex
        best = max(solved, key=lambda p: p[4])[3]
    return best, n_qp


def _by_state(advantages, counts, states):
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    return pairs, adv, pairs.blocks


def maximize_apc_exact(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                       radius: float,
                       state_weights: ArrayLike | Mapping[int, float] | None = None,
                       tie_break: TieNorm | None = None) -> ApcMax:
    """Exact global maximizer of APC-Obj over deviations satisfying (65), state by state;
    ``tie_break`` as in :func:`maximize_apc_state` (the min-norm maximizer of Def D.4).

    Returns an :class:`ApcMax` whose ``delta`` is ``(N,)`` and ``value`` the APC-Obj value
    (:func:`~fibration_theory.trust_region.apc.apc_objective`) there.
    """
    from fibration_theory.trust_region.apc import apc_objective

    pairs, adv, blocks = _by_state(advantages, counts, states)
    delta = np.zeros(pairs.n_pairs)
    n_lp = 0
    done: dict[bytes, np.ndarray] = {}  # states with the same (A, n) share one search
    for idx in blocks:
        order = np.lexsort((pairs.counts[idx], adv[idx]))
        key = np.r_[adv[idx][order], pairs.counts[idx][order]].tobytes()
        if key not in done:
            res = maximize_apc_state(adv[idx][order], pairs.counts[idx][order], radius,
                                     tie_break=tie_break)
            done[key] = res.delta
            n_lp += res.n_lp
        delta[idx[order]] = done[key]
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
