"""Certificate V1: the vanishing theorem and the radius bounds (Thm 2.1; Lemmas B.2, D.2, D.11, D.12).

Symbolic part (sympy): ``delta(TRPO) = (1 - gamma)/(8 gamma)`` is positive on (0, 1), strictly
decreasing, 0 at gamma = 1 and tends to 0 from above; the step ``t*`` of Thm D.3 is the vertex
of the concave quadratic ``j(t) = t M/(1-gamma) - 4 gamma a t^2/(1-gamma)^2``; and
``delta(APC)/delta(TRPO) = M/||A||_inf`` (Lemma D.11 reduces to Lemma D.2).

Numeric part: Lemma D.2 with ``M`` from the cvxpy LP of eq 69 (not from the closed form), its
tightness, Lemma D.12 for the cvxpy maximizer of eq 68, and the collapse of the update as
gamma -> 1 (Thm 2.1).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from fibration_theory.proofs.cert_trust_region import TOL_CONVEX, draw_instance
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory import trust_region as tr
from fibration_theory.trust_region._pairs import group_pairs, resolve_state_weights


def _symbolic_checks(delta_trpo_fn) -> dict[str, bool]:
    g = sp.Symbol("gamma", positive=True)
    m, a, t = sp.symbols("M a t", positive=True)
    d = (1 - g) / (8 * g)
    j = t * m / (1 - g) - 4 * g * a * t**2 / (1 - g) ** 2          # j(Delta*) along t (Thm D.3)
    t_star = sp.solve(sp.diff(j, t), t)
    grid = np.linspace(0.01, 1.0, 100)
    lib = np.array([delta_trpo_fn(float(x)) for x in grid])
    return {
        "delta(TRPO) -> 0 as gamma -> 1-": sp.limit(d, g, 1, "-") == 0,
        "delta(TRPO) = 0 at gamma = 1": d.subs(g, 1) == 0,
        "delta(TRPO) > 0 on (0, 1)": sp.solveset(d > 0, g, sp.Interval.open(0, 1))
        == sp.Interval.open(0, 1),
        "delta(TRPO) strictly decreasing": sp.simplify(sp.diff(d, g) + 1 / (8 * g**2)) == 0,
        "t* is the stationary point": len(t_star) == 1
        and sp.simplify(t_star[0] - (1 - g) * m / (8 * g * a)) == 0,
        "j is concave in t": sp.simplify(sp.diff(j, t, 2) + 8 * g * a / (1 - g) ** 2) == 0,
        "j(t*) = M^2/(16 gamma a)": len(t_star) == 1
        and sp.simplify(j.subs(t, t_star[0]) - m**2 / (16 * g * a)) == 0,
        "delta(APC)/delta(TRPO) = M/a": sp.simplify(((1 - g) * m / (8 * g * a)) / d - m / a) == 0,
        "library delta_trpo matches": bool(np.allclose(lib, (1 - grid) / (8 * grid),
                                                       rtol=1e-15, atol=0)),
    }


@certificate(id="V1", paper_ref="Thm 2.1, Lemmas B.2, D.2, D.11, D.12, eq 76",
             statement="delta(TRPO)=(1-gamma)/(8gamma) vanishes at gamma=1; M<=||A||; updates "
                       "stay within delta(TRPO)",
             method="symbolic")
def check_vanishing(rng: np.random.Generator, *, n_instances: int = 8,
                    delta_trpo_fn=tr.delta_trpo, unit_lp=tr.solve_unit_tv_lp_cvxpy,
                    reference=tr.solve_tv_trpo_cvxpy, closed_form=tr.solve_tv_trpo) -> Outcome:
    """sympy facts above, then on random instances meeting (65)-(66): ``M <= ||A||_inf`` with
    ``M`` from the LP (D.2), ``delta(APC) <= delta(TRPO)`` (D.11), the cvxpy maximizer has
    ``max_s D(s) <= delta(TRPO)`` (D.12 / B.2); the two-action instance ``A = (1, -1)`` makes
    D.2 an equality and puts the cvxpy update exactly at ``delta(TRPO)`` (D.11/D.12 tight); and ``max_s D(s, Delta*) -> 0`` as ``gamma -> 1`` with ``Delta* = 0`` at 1."""
    sym = _symbolic_checks(delta_trpo_fn)
    failed = [k for k, ok in sym.items() if not ok]
    viol, where = -np.inf, ""  # largest relative excess over a bound (negative: inside)

    def note(name: str, excess: float) -> None:
        nonlocal viol, where
        if excess > viol:
            viol, where = excess, name

    for i in range(n_instances):
        inst = draw_instance(rng)
        gamma = float(rng.uniform(0.05, 0.995))
        pairs = group_pairs(inst.n, inst.states)
        w = resolve_state_weights(rng.uniform(0.2, 1.0, pairs.n_states), pairs)
        lp = unit_lp(inst.adv, inst.n, inst.states)
        m = float(np.sum(w * lp.M_s / pairs.T_s))
        norm = float(np.max(np.abs(inst.adv)))
        note(f"Lemma D.2 on instance {i}", m / norm - 1.0 if norm > 0 else m)
        d_apc = tr.delta_apc(inst.adv, inst.n, inst.states, gamma=gamma, state_weights=w)
        note(f"Lemma D.11 on instance {i}", d_apc / delta_trpo_fn(gamma) - 1.0)
        ref = reference(inst.adv, inst.n, inst.states, gamma=gamma, state_weights=w)
        note(f"Lemma D.12 on instance {i} (gamma={gamma:.3f})",
             ref.max_tv / delta_trpo_fn(gamma) - 1.0)
    # tightness of Lemma D.2: one state, A = (1, -1), equal counts
    lp = unit_lp(np.array([1.0, -1.0]), np.array([3.0, 3.0]), np.array([0, 0]))
    tight = abs(float(lp.M_s[0]) / 6.0 - 1.0)
    note("tightness of Lemma D.2", tight)
    # tightness of Lemmas D.11/D.12: with M = ||A||_inf the cvxpy update sits exactly on the
    # boundary, max_s D(s) = delta(TRPO), so a wrong radius (too large or too small) shows
    # here as a gap, not only as a formula mismatch
    for gamma in (0.3, 0.7, 0.95):
        ref = reference(np.array([1.0, -1.0]), np.array([3.0, 3.0]), np.array([0, 0]),
                        gamma=gamma)
        note(f"tightness of Lemma D.12 at gamma={gamma} (max TV = delta(TRPO))",
             abs(ref.max_tv / delta_trpo_fn(gamma) - 1.0))
    # Thm 2.1: the update collapses as gamma -> 1 and is exactly 0 at gamma = 1
    inst = draw_instance(rng, states=(2, 3), actions=(2, 3))
    for k in range(1, 7):
        gamma = 1.0 - 10.0 ** (-k)
        sol = closed_form(inst.adv, inst.n, inst.states, gamma=gamma)
        note(f"vanishing at gamma=1-1e-{k}", float(sol.state_tv.max()) / delta_trpo_fn(gamma) - 1)
    at_one = closed_form(inst.adv, inst.n, inst.states, gamma=1.0)
    note("Delta* at gamma = 1", float(np.max(np.abs(at_one.delta))))
    detail = (f"{len(sym) - len(failed)}/{len(sym)} symbolic facts hold"
              + (f" (failed: {failed})" if failed else "")
              + f"; {n_instances} instances; largest relative excess over a bound "
              f"{viol:+.1e} ({where})" + f"; D.2 tightness gap {tight:.1e}")
    return Outcome(residual=max(viol, 0.0), tol=TOL_CONVEX, ok=not failed, detail=detail)
