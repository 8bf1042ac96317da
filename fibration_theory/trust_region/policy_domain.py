"""TV-TRPO and APC-Obj over real tabular policies, where (65)-(66) hold only in expectation.

App D.1 imposes the probability constraint (65) and advantage centering (66) on the *samples*.
A real policy update instead satisfies ``sum_{a in A} pi_old(a|s) Delta_{s,a} = 0`` over the
*whole* action set (unsampled actions included) and ``Delta >= -1`` (``r >= 0``), while the
objectives only see the sampled pairs. This module solves both problems on that domain, on
dense tables of ``S`` states by ``K`` actions (``counts`` zero for unsampled actions):

* :func:`solve_tv_trpo_policy_cvxpy` -- eq 68 maximised by cvxpy (CLARABEL);
* :func:`maximize_apc_policy` -- APC-Obj maximised exactly, state by state, with the piece
  enumeration of :mod:`~fibration_theory.trust_region.apc_search`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fibration_theory.trust_region._pairs import check_gamma, check_radius
from fibration_theory.trust_region.apc_search import maximize_apc_state


def _tables(pi_old: ArrayLike, counts: ArrayLike, advantages: ArrayLike
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(pi_old, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    a = np.asarray(advantages, dtype=np.float64)
    if p.ndim != 2 or n.shape != p.shape or a.shape != p.shape:
        raise ValueError(f"pi_old, counts and advantages must share one (S, K) shape, got "
                         f"{p.shape}, {n.shape}, {a.shape}")
    for name, x in (("pi_old", p), ("counts", n), ("advantages", a)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or inf")
    if np.any(p <= 0) or not np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12):
        raise ValueError("pi_old must be positive with rows summing to 1")
    if np.any((n != 0) & (n < 1)) or np.any(n < 0):
        raise ValueError("counts must be 0 (unsampled) or >= 1")
    if np.any(n.sum(axis=1) == 0):
        raise ValueError("counts: every state needs at least one sample")
    return p, n, a


def pairs_of(counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the sampled entries of an ``(S, K)`` count table (row-major)."""
    return np.nonzero(np.asarray(counts) > 0)


def solve_tv_trpo_policy_cvxpy(pi_old: ArrayLike, counts: ArrayLike, advantages: ArrayLike,
                               *, gamma: float) -> np.ndarray:
    """``(S, K)`` maximizer of eq 68 (default weights ``T_s/T``) over real policies.

    Constraints: ``sum_a pi_old(a|s) Delta_{s,a} = 0`` for every state and ``Delta >= -1``;
    the linear term and ``D(s)`` (eq 39) use the sampled entries only.
    """
    import cvxpy as cp

    from fibration_theory.trust_region.reference import CLARABEL_OPTS

    g = check_gamma(gamma)
    if g == 1.0:
        raise ValueError("gamma must be < 1 for eq 68")
    p, n, a = _tables(pi_old, counts, advantages)
    t_s = n.sum(axis=1)
    norm = float(np.max(np.abs(a[n > 0])))
    if norm == 0.0:
        return np.zeros_like(p)
    x = cp.Variable(p.shape)
    tau = cp.Variable()
    lin = n * a / t_s.sum()                          # (w_s / T_s) n A with w_s = T_s / T
    s0 = (1.0 - g) / (8.0 * g)                       # max_s D(s) = s0 tau: O(1) optimum
    cons = [cp.sum(cp.multiply(p, x), axis=1) == 0, x >= -1,
            cp.sum(cp.multiply(n / t_s[:, None], cp.abs(x)), axis=1) <= s0 * tau]
    prob = cp.Problem(cp.Maximize(2.0 / (norm * s0) * cp.sum(cp.multiply(lin, x))
                                  - cp.square(tau)), cons)
    prob.solve(solver="CLARABEL", **CLARABEL_OPTS)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"CLARABEL returned status {prob.status!r}")
    return np.asarray(x.value, dtype=np.float64)


def maximize_apc_policy(pi_old: ArrayLike, counts: ArrayLike, advantages: ArrayLike, *,
                        radius: float) -> np.ndarray:
    """``(S, K)`` exact maximizer of APC-Obj over real policies (same domain as above).

    APC-Obj separates over states, so each state's piece enumeration runs on its own, with
    the unsampled actions as silent variables that enter only the constraints.
    """
    p, n, a = _tables(pi_old, counts, advantages)
    rad = check_radius(radius)
    out = np.zeros_like(p)
    for s in range(p.shape[0]):
        seen = n[s] > 0
        order = np.r_[np.flatnonzero(seen), np.flatnonzero(~seen)]
        a_eq = p[s, order][None, :]
        res = maximize_apc_state(a[s, seen], n[s, seen], rad, a_eq=a_eq, b_eq=np.zeros(1),
                                 bounds=[(-1.0, None)] * p.shape[1],
                                 n_extra=int((~seen).sum()))
        out[s, order] = np.r_[res.delta, res.extra]
    return out
