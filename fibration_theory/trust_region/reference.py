"""cvxpy reference solvers for eq 69 and eqs 67-68: the plain references of the closed forms.

They solve the optimisation problems as written, with no use of the closed form:

* :func:`solve_unit_tv_lp_cvxpy` -- eq 69 for every state at once, as one LP (HIGHS). The
  equality ``D(s, Delta) = 1`` is not convex; it is relaxed to ``<= 1``, which is tight at the
  optimum whenever ``M(s) > 0`` (eq 71).
* :func:`solve_tv_trpo_cvxpy` -- eq 68 (``form="deviation"``) or eq 67 (``form="ratio"``)
  under the probability constraint (65), as a QP (CLARABEL). With ``tie_break=True`` a second
  stage picks, among the (near-)maximizers, the one of least ``sum_s (1/T_s) sum_a Delta^2``
  (the rule stated under Def D.1).

HIGHS prints a banner on stdout the first time it is created; it is silenced at the file
descriptor level. OSQP is never used for these LPs (it stops at its iteration limit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from fibration_theory.trust_region._pairs import (
    Pairs,
    as_vector,
    check_gamma,
    group_pairs,
    resolve_state_weights,
)

#: CLARABEL stopping tolerances: tighter than its 1e-8 defaults so that optima agree with the
#: closed form to about 1e-9 relative.
CLARABEL_OPTS = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11,
                 "tol_ktratio": 1e-9, "max_iter": 400}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null (HIGHS writes its banner from C)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = 1
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _incidence(pairs: Pairs, values: np.ndarray) -> sp.csr_matrix:
    """``(S, N)`` sparse matrix with ``values[i]`` at ``(state of i, i)``."""
    n = pairs.n_pairs
    return sp.csr_matrix((values, (pairs.codes, np.arange(n))), shape=(pairs.n_states, n))


@dataclasses.dataclass(frozen=True)
class UnitLPResult:
    """cvxpy solution of eq 69 for all states.

    Attributes:
        unit_maximizer: ``(N,)`` a maximizer ``Delta_hat`` (arbitrary where ``M(s) = 0``).
        M_s: ``(S,)`` per-state optimum ``sum_a n Delta_hat A``, sorted state ids.
        value: ``sum_s M(s)``, the LP optimum as reported by the solver.
        status: the solver's status string.
    """

    unit_maximizer: np.ndarray
    M_s: np.ndarray
    value: float
    status: str


def solve_unit_tv_lp_cvxpy(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                           solver: str = "HIGHS") -> UnitLPResult:
    """Solve eq 69 at every state as one LP: ``Delta = p - q`` with ``p, q >= 0``.

    maximise ``sum n A (p - q)`` s.t. ``sum_{a in X_s} n (p + q) <= T_s`` and
    ``sum_{a in X_s} n (p - q) = 0`` for every state ``s``.
    """
    import cvxpy as cp

    if solver.upper() == "OSQP":
        raise ValueError("solver: OSQP is not reliable for LPs; use HIGHS or CLARABEL")
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    n = pairs.counts
    inc = _incidence(pairs, n)
    p = cp.Variable(pairs.n_pairs, nonneg=True)
    q = cp.Variable(pairs.n_pairs, nonneg=True)
    prob = cp.Problem(cp.Maximize((n * adv) @ (p - q)),
                      [inc @ (p + q) <= pairs.T_s, inc @ (p - q) == 0])
    _solve(prob, solver)
    unit = np.asarray(p.value - q.value, dtype=np.float64)
    m_s = pairs.state_sum(n * unit * adv)
    return UnitLPResult(unit_maximizer=unit, M_s=m_s, value=float(prob.value),
                        status=str(prob.status))


@dataclasses.dataclass(frozen=True)
class TVTRPOReference:
    """cvxpy solution of sample-based TV-TRPO.

    Attributes:
        delta: ``(N,)`` the maximizer (``r - 1`` for ``form="ratio"``).
        objective: eq 68 evaluated at ``delta`` (not the solver's scaled value).
        max_tv: ``max_s D(s, delta)``.
        state_tv: ``(S,)`` ``D(s, delta)``.
        status: the solver's status string.
    """

    delta: np.ndarray
    objective: float
    max_tv: float
    state_tv: np.ndarray
    status: str


def solve_tv_trpo_cvxpy(advantages: ArrayLike, counts: ArrayLike, states: ArrayLike, *,
                        gamma: float,
                        state_weights: ArrayLike | Mapping[int, float] | None = None,
                        form: Literal["deviation", "ratio"] = "deviation",
                        tie_break: bool = False, solver: str = "CLARABEL",
                        tie_slack: float = 1e-9) -> TVTRPOReference:
    """Maximise eq 68 (or eq 67 in the ratios) subject to (65) with cvxpy.

    The objective is divided by a positive constant and the max-TV is measured in units of
    ``delta(TRPO)`` (same maximizer, O(1) optimum for every gamma); the reported ``objective``
    is eq 68 itself. ``tie_break`` adds the min-norm second stage of Def D.1, keeping the first-stage
    optimum up to ``tie_slack`` (relative). On sampled instances with many tied actions CLARABEL
    may end that second stage ``optimal_inaccurate`` (seen: 4e-5 to 1e-3 relative error in the
    update); ``status`` says so, and the first stage alone agrees with the closed form to ~1e-11.
    """
    import cvxpy as cp

    from fibration_theory.trust_region.tv_trpo import tv_trpo_objective

    g = check_gamma(gamma)
    if g == 1.0:
        raise ValueError("gamma must be < 1 for eqs 67-68")
    if form not in ("deviation", "ratio"):
        raise ValueError(f"form must be 'deviation' or 'ratio', got {form!r}")
    if solver.upper() == "OSQP":
        raise ValueError("solver: OSQP is not reliable here; use CLARABEL")
    pairs = group_pairs(counts, states)
    adv = as_vector(advantages, "advantages", pairs.n_pairs)
    w = resolve_state_weights(state_weights, pairs)
    n = pairs.counts
    norm = float(np.max(np.abs(adv)))
    if norm == 0.0:
        zero = np.zeros(pairs.n_pairs)
        return TVTRPOReference(zero, 0.0, 0.0, np.zeros(pairs.n_states), "trivial")
    lin = (w / pairs.T_s)[pairs.codes] * n * adv          # d/dDelta of the linear term * (1-g)
    # Rescaled problem: divide eq 68 by 4 g ||A|| s0^2 / (1-g)^2 with s0 = delta(TRPO) >= t*,
    # and write max_s D(s) = s0 tau. The optimum then has tau = t*/s0 = O(1) and an O(1)
    # value, so CLARABEL's absolute tolerances act as relative ones for every gamma.
    s0 = (1.0 - g) / (8.0 * g)
    coef = 2.0 / (norm * s0)                               # = (1-g) / (4 g ||A|| s0^2)
    tv_rows = _incidence(pairs, n / pairs.T_s[pairs.codes])
    inc = _incidence(pairs, n)
    tau = cp.Variable()
    if form == "deviation":
        var = cp.Variable(pairs.n_pairs)
        dev = var
        cons = [inc @ var == 0]                            # (65): sum_a n Delta = 0
    else:
        var = cp.Variable(pairs.n_pairs)                   # the ratios r
        dev = var - 1.0
        cons = [inc @ var == pairs.T_s]                    # (65): (1/T_s) sum_a n r = 1
    cons.append(tv_rows @ cp.abs(dev) <= s0 * tau)
    objective = coef * (lin @ var) - cp.square(tau)
    prob = cp.Problem(cp.Maximize(objective), cons)
    _solve(prob, solver)
    if tie_break:
        best = prob.value
        keep = objective >= best - tie_slack * max(1.0, abs(best))
        norm2 = cp.sum(cp.multiply(1.0 / (s0**2 * pairs.T_s[pairs.codes]), cp.square(dev)))
        prob2 = cp.Problem(cp.Minimize(norm2), [*cons, keep])
        _solve(prob2, solver)
        prob = prob2
    delta = np.asarray(var.value, dtype=np.float64) - (1.0 if form == "ratio" else 0.0)
    tv = pairs.tv(delta)
    return TVTRPOReference(
        delta=delta,
        objective=tv_trpo_objective(delta, adv, n, states, gamma=g, state_weights=state_weights),
        max_tv=float(tv.max()), state_tv=tv, status=str(prob.status))


def _solve(prob, solver: str) -> None:
    import cvxpy as cp

    name = solver.upper()
    opts = dict(CLARABEL_OPTS) if name == "CLARABEL" else {}
    if name == "HIGHS":
        with quiet_stdout():
            prob.solve(solver=cp.HIGHS, output_flag=False)
    else:
        with warnings.catch_warnings():
            # "solution may be inaccurate": the status says so and is kept in the result
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=name, **opts)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"{name} returned status {prob.status!r}")
