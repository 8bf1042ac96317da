"""Closed-form trust-region solvers against cvxpy: speed and agreement.

* unit-TV LP (eq 69): ``trust_region.unit_tv_maximizer`` vs ``solve_unit_tv_lp_cvxpy`` (HIGHS);
  agreement of the optimum ``sum_s M(s)``.
* sample-based TV-TRPO (eq 68 under (65), Thm D.3): ``trust_region.solve_tv_trpo`` vs
  ``solve_tv_trpo_cvxpy`` (CLARABEL); agreement of the optimal value of eq 68.

Instances: ``N`` distinct state-action pairs over ``N/4`` states (1 to 7 actions each),
multiplicities 1..5, standard normal advantages, ``gamma = 0.99``. cvxpy's time includes
building and canonicalising the problem, which is part of what a caller pays.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import numpy as np

GAMMA = 0.99


def instance(n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(advantages, counts, states)``, each ``(N,)``."""
    rng = np.random.default_rng(seed)
    states = np.sort(rng.integers(0, max(n_pairs // 4, 1), size=n_pairs))
    counts = rng.integers(1, 6, size=n_pairs).astype(np.float64)
    adv = rng.normal(size=n_pairs)
    return adv, counts, states


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out, ts = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def solvers_section(sizes: list[int], budget_s: float, log: Callable[[str], None]) -> list[dict]:
    """Ratio of times and agreement of the optimum, per number of pairs."""
    from fibration_theory import trust_region as tr

    rows, start, last = [], time.perf_counter(), None
    for n in sizes:
        spent = time.perf_counter() - start
        if last is not None:
            # interior-point and HiGHS times grow a little faster than linearly here
            est = last[1] * (n / last[0]) ** 1.2
            if spent + est > budget_s:
                rows.append({"pairs": n, "skipped": f"estimated {est:.0f} s with "
                             f"{budget_s - spent:.0f} s of the {budget_s:.0f} s budget left"})
                log(f"  solvers {n:.0e} pairs: skipped (time budget)")
                continue
        t0 = time.perf_counter()
        adv, counts, states = instance(n)
        reps_cf = 20 if n <= 10_000 else 5
        reps_cvx = 3 if n <= 1_000 else 1
        args = (adv, counts, states)
        t_unit, (_, m_s) = _time(functools.partial(tr.unit_tv_maximizer, *args), reps_cf)
        t_unit_cvx, lp = _time(functools.partial(tr.solve_unit_tv_lp_cvxpy, *args), reps_cvx)
        t_trpo, sol = _time(functools.partial(tr.solve_tv_trpo, *args, gamma=GAMMA), reps_cf)
        t_trpo_cvx, ref = _time(functools.partial(tr.solve_tv_trpo_cvxpy, *args, gamma=GAMMA),
                                reps_cvx)
        rows.append({
            "pairs": n, "states": len(np.unique(states)),
            "unit_tv": {"closed_s": t_unit, "cvxpy_s": t_unit_cvx,
                        "speedup": t_unit_cvx / t_unit,
                        "optimum_rel_diff": _rel(lp.value, float(np.sum(m_s))),
                        "status": lp.status},
            "tv_trpo": {"closed_s": t_trpo, "cvxpy_s": t_trpo_cvx,
                        "speedup": t_trpo_cvx / t_trpo,
                        "optimum_rel_diff": _rel(ref.objective, sol.objective),
                        "closed_objective": sol.objective, "cvxpy_objective": ref.objective,
                        "status": ref.status},
        })
        last = (n, time.perf_counter() - t0)
        log(f"  solvers {n:.0e} pairs: {last[1]:.1f} s")
    return rows
