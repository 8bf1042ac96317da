"""Finding F7: Lemmas B.2 and D.12 hold for the estimator, not in population form.

Lemma B.2 / D.12 put the TV-TRPO (and APC-Obj) update inside the trust region of radius
``delta(TRPO)``, measured with eq 39's estimator on the samples, where (65) is imposed on the
sampled actions only. Def B.1's trust region is a statement about policies: the true TV of eq
37, ``max_s (1/2) sum_a pi_old(a|s) |r - 1|`` over *all* actions. Over real tabular policies
(``sum_a pi_old Delta = 0`` over all actions, ``Delta >= -1``; (65) only in expectation) the
TV-TRPO maximizer of eq 68 can move probability onto unsampled actions, which eq 39 does not
see, and its true TV then exceeds ``delta(TRPO)``.
"""

from __future__ import annotations

import numpy as np
from fibration_theory.proofs.cert_findings_tr import draw_policy_instance
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory import trust_region as tr
from fibration_theory.trust_region import policy_domain as pd

#: a population TV counts as outside the region above this (relative): far above CLARABEL's
#: 1e-8 relative accuracy on these problems
OUTSIDE_RTOL = 1e-4


def true_tv(pi_old: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``(S,)`` eq 37 with its 1/2: ``(1/2) sum_a pi_old |Delta|`` over all actions."""
    return 0.5 * np.sum(pi_old * np.abs(delta), axis=1)


@certificate(id="F7", paper_ref="Lemmas B.2, D.12; Def B.1",
             statement="in population form (true TV of eq 37 over real policies, (65) only in "
                       "expectation) the TV-TRPO update can leave the delta(TRPO) trust region",
             method="convex", finding="confirmed")
def finding_population_trust_region(rng: np.random.Generator, *, n_instances: int = 20,
                                    solver=pd.solve_tv_trpo_policy_cvxpy) -> Outcome:
    ratios, example = [], ""
    for i in range(n_instances):
        pi, n, adv = draw_policy_instance(rng)
        gamma = float(rng.uniform(0.5, 0.99))
        delta = solver(pi, n, adv, gamma=gamma)
        ratio = float(true_tv(pi, delta).max() / tr.delta_trpo(gamma))
        if not ratios or ratio > max(ratios):
            example = (f"instance {i}: gamma={gamma:.3f}, counts={n.tolist()}, "
                       f"pi_old={np.round(pi, 3).tolist()}")
        ratios.append(ratio)
    outside = sum(r > 1 + OUTSIDE_RTOL for r in ratios)
    return Outcome(residual=0.0, tol=0.0, ok=outside > 0,
                   detail=f"{n_instances} tabular instances (1-3 states, 3 actions, 3-10 "
                          f"samples per state): true max TV / delta(TRPO) median "
                          f"{np.median(ratios):.3f}, max {max(ratios):.3f}; {outside} outside "
                          f"the region (worst: {example})")
