"""FiberPO's gate in one place (Section 5, eqs 6-18, 80; Section 6, eqs 30-33).

* :mod:`.plan`: :func:`gate_plan` validates and broadcasts the budgets once per call into a
  :class:`GatePlan` (levels, one ``(C+, C-)`` per level, ``eps``, counts, ``delta`` check);
* :mod:`.closed`: the closed form over any depth (depth 0 is FiberPO, deeper FiberPO-Domain);
* :mod:`.fast`: the fast path, one custom autograd Function over the same plan;
* :mod:`.stats`: the regime statistics (:class:`Regimes`) both paths return;
* :mod:`.gate`: :func:`gate` runs either path; :func:`fast_path` switches between them.

The generic FBG/FGH machinery (:mod:`fibration_theory.fbg`, :mod:`fibration_theory.fgh`,
:mod:`fibration_theory.bundles`) is the independent reference these are tested against.

>>> import torch
>>> from fibration_theory import Hierarchy, fiberpo
>>> h = Hierarchy.from_padded(torch.ones(1, 2, dtype=torch.bool))
>>> plan = fiberpo.gate_plan(h, c_plus=0.1, c_minus=0.05, eps=0.02, levels=False)
>>> ratio, reg = fiberpo.gate(torch.tensor([[0.01, -0.01]], dtype=torch.float64), plan,
...                           stats=True)
>>> reg.labels()
(['G-I'], ['L-I'])
"""

from fibration_theory.fiberpo.closed import (
                                             base_log_weight,
                                             drifts,
                                             fiber_log_residual,
                                             g_agg,
                                             gate_log_ratio,
                                             level_aggregates,
                                             logclip,
                                             masked,
                                             sign_label,
                                             trajectory_aggregates,
)
from fibration_theory.fiberpo.gate import (
                                             compile_enabled,
                                             fast_enabled,
                                             fast_path,
                                             gate,
                                             set_compile,
)
from fibration_theory.fiberpo.plan import (
                                             DELTA_RTOL,
                                             Budget,
                                             GatePlan,
                                             check_delta,
                                             gate_plan,
                                             level_budgets,
)
from fibration_theory.fiberpo.stats import Regimes

__all__ = [
                                             "DELTA_RTOL",
                                             "Budget",
                                             "GatePlan",
                                             "Regimes",
                                             "base_log_weight",
                                             "check_delta",
                                             "compile_enabled",
                                             "drifts",
                                             "fast_enabled",
                                             "fast_path",
                                             "fiber_log_residual",
                                             "g_agg",
                                             "gate",
                                             "gate_log_ratio",
                                             "gate_plan",
                                             "level_aggregates",
                                             "level_budgets",
                                             "logclip",
                                             "masked",
                                             "set_compile",
                                             "sign_label",
                                             "trajectory_aggregates",
]
