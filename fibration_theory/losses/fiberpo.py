"""FiberPO (Def 5.1 / E.9, eq 80) and FiberPO-Domain (Def 6.4, eqs 30-33) as losses.

Both use the RGF weights ``mu = 1 / (|Tj| T_tau)`` (eq 6, eq 30: seq-mean-token-mean) and the
gated ratio of :mod:`fibration_theory.fiberpo` (its fast path unless
``fiberpo.fast_path(False)`` is active; same values, gradients and metrics to float64
rounding). The surrogate carries the gate's :class:`~fibration_theory.fiberpo.Regimes`.
"""

from __future__ import annotations

from fibration_theory import aggregation
from fibration_theory import fiberpo as fp
from fibration_theory.aggregation import AggMode
from fibration_theory.fiberpo.plan import Budget, GatePlan
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.rgf import RGF


def _surrogate(batch: Batch, plan: GatePlan, agg: AggMode) -> Surrogate:
    # compute() zeroed log_ratio outside the mask and masks its gradient (masked=True)
    ratio, reg = fp.gate(batch.log_ratio, plan, stats=batch.with_metrics, masked=True)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, ratio, batch.advantages), reg.metrics() if reg else {}, reg)


@register("fiberpo", "FiberPO: sign-split base gate g_agg x logclip fiber residual (eq 80)",
          coupling="trajectory")
def fiberpo(batch: Batch, *, c_plus: float = 0.12, c_minus: float = 0.05, eps: float = 0.04,
            delta: float | None = None, agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO, minus eq 80 as a loss.

    ``J = sum_i 1/(|Tj| T_tau) w_base_tau r~_fiber_i A_i`` with the base weight of eq 8 and
    the gated residual of eqs 11-16. ``c_plus``, ``c_minus``: one number each (per-level
    budgets are for ``fiberpo_domain``). ``C+ + C- = delta`` (checked when ``delta`` is
    given); the defaults are the values of the paper's Fig 4 (C+ = 0.12, C- = 0.05,
    eps = 0.04).
    """
    plan = fp.gate_plan(batch.hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=False,
                        delta=delta)
    return _surrogate(batch, plan, agg)


@register("fiberpo_domain", "FiberPO-Domain: FGH gates at domain, group, trajectory (eq 30-33)",
          coupling="domain")
def fiberpo_domain(batch: Batch, *, c_plus: Budget = 0.12, c_minus: Budget = 0.05,
                   eps: float = 0.04, delta: Budget | None = None,
                   agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO-Domain, minus eq 30 as a loss, over every level of the batch's hierarchy.

    ``c_plus``/``c_minus``: one pair shared by every level (eq 31 as printed) or one entry per
    level, coarse to fine, trajectory last (per-level budgets; the toolkit's extension, F4).
    Missing ``group_ids``/``domain_ids`` drop that level; with no level this is FiberPO.
    """
    plan = fp.gate_plan(batch.hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=True,
                        delta=delta)
    return _surrogate(batch, plan, agg)
