"""Tabular trust-region objects of the paper (App B.1, C.1-C.2, D; Thm 2.1).

Sample-based TV-TRPO (Def D.1, eqs 67-68) and its closed-form maximizer (eq 69, Thm D.3);
APC-Obj (Def 3.2 / C.1 / D.4, eqs 3, 57-59), its clipping regimes (eqs 60-63), surrogated
form (Defs D.5, D.8, eqs 73-75) and centered retraction (Lemma D.9); the radii
``delta(TRPO)`` (Thm 2.1, eq 76) and ``delta(APC-Obj)`` in both of the paper's typesettings.

Arrays are indexed by distinct sampled state-action pairs: ``advantages``, ``counts`` (the
multiplicities ``n``) and ``states`` (integer state ids), all of shape ``(N,)``.
"""

from fibration_theory.trust_region.apc import (
    apc_clip,
    apc_correction,
    apc_gating_map,
    apc_objective,
    apc_regimes,
    apc_retract,
    apc_surrogate_objective,
)
from fibration_theory.trust_region.apc_search import (
    ApcMax,
    maximize_apc_exact,
    maximize_apc_local,
    maximize_apc_state,
)
from fibration_theory.trust_region.radii import (
    aggregate_M,
    delta_apc,
    delta_apc_def32,
    delta_trpo,
    discounted_state_weights,
    max_tv,
    tv_per_state,
    unit_tv_values,
)
from fibration_theory.trust_region.reference import (
    TVTRPOReference,
    UnitLPResult,
    solve_tv_trpo_cvxpy,
    solve_unit_tv_lp_cvxpy,
)
from fibration_theory.trust_region.tv_trpo import (
    TVTRPOSolution,
    solve_tv_trpo,
    tv_trpo_objective,
    tv_trpo_objective_ratio,
    unit_tv_maximizer,
)

__all__ = [
    "ApcMax",
    "TVTRPOReference",
    "TVTRPOSolution",
    "UnitLPResult",
    "aggregate_M",
    "apc_clip",
    "apc_correction",
    "apc_gating_map",
    "apc_objective",
    "apc_regimes",
    "apc_retract",
    "apc_surrogate_objective",
    "delta_apc",
    "delta_apc_def32",
    "delta_trpo",
    "discounted_state_weights",
    "max_tv",
    "maximize_apc_exact",
    "maximize_apc_local",
    "maximize_apc_state",
    "solve_tv_trpo",
    "solve_tv_trpo_cvxpy",
    "solve_unit_tv_lp_cvxpy",
    "tv_per_state",
    "tv_trpo_objective",
    "tv_trpo_objective_ratio",
    "unit_tv_maximizer",
    "unit_tv_values",
]
