"""FiberPO (Def 5.1 / E.9, eq 80) and FiberPO-Domain (Def 6.4, eqs 30-33) as losses.

Both use the RGF weights ``mu = 1 / (|Tj| T_tau)`` (eq 6, eq 30: seq-mean-token-mean) and the
gated ratios of :mod:`fibration_theory.gating`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fibration_theory import aggregation, fused, gating
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF

Tensor = torch.Tensor
Budget = float | Sequence[float]

#: relative tolerance of the check ``C+ + C- = delta``: budgets are user floats, so a few ulps
DELTA_RTOL = 1e-9


def check_delta(c_plus: list[float], c_minus: list[float], delta: Budget | None) -> None:
    """``C+ + C- = delta`` at every level (Def 5.1, eq 31), when ``delta`` is given."""
    if delta is None:
        return
    deltas = gating.level_budgets(delta, len(c_plus) - 1, "delta")
    for k, (p, m, d) in enumerate(zip(c_plus, c_minus, deltas)):
        if abs(p + m - d) > DELTA_RTOL * max(1.0, abs(d)):
            raise ValueError(f"delta: c_plus + c_minus = {p} + {m} = {p + m} differs from "
                             f"delta = {d}" + (f" at level {k}" if len(c_plus) > 1 else ""))


def _fiber_metrics(batch: Batch, log_g: Tensor, c_plus: Budget, c_minus: Budget, eps: float,
                   levels: bool) -> dict[str, float]:
    with torch.no_grad():
        h = batch.hierarchy
        aggs = gating.level_aggregates(batch.log_ratio, h)
        fiber, u, v = gating.fiber_log_residual(batch.log_ratio, *aggs[-1], eps)
        reg = gating.regimes(batch.log_ratio, h, c_plus=c_plus, c_minus=c_minus, eps=eps,
                             levels=levels)
        log_w = (log_g - fiber)[:, 0]
        out = reg.occupancy()
        out["fiber_clip_frac"] = fraction((u.abs() >= eps) | (v.abs() >= eps), batch.mask)
        out["clip_frac"] = out["fiber_clip_frac"]
        out["base_gate_frac"] = 1.0 - out["regime/G-I"]
        out["log_base_weight/abs_max"] = float(log_w[h.valid].abs().max())
        return out


def _gated(batch: Batch, c_plus: Budget, c_minus: Budget, eps: float, levels: bool
           ) -> tuple[Tensor, dict[str, float]]:
    """``(G(r), metrics)``: the fused fast path (``fibration_theory.fused``, same values and
    gradients to float64 rounding) where it applies, else the generic closed form."""
    if fused.enabled() and fused.supported(batch.log_ratio, batch.hierarchy):
        # compute() zeroed log_ratio outside the mask and masks its gradient (masked=True)
        res = fused.fiber_gate(batch.log_ratio, batch.hierarchy, c_plus=c_plus,
                               c_minus=c_minus, eps=eps, levels=levels, masked=True, stats=True)
        return res.ratio, fused.gate_metrics(res.stats)
    gate = gating.fiberpo_domain_log_ratio if levels else gating.fiberpo_log_ratio
    log_g = gate(batch.log_ratio, batch.hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps)
    return log_g.exp(), _fiber_metrics(batch, log_g, c_plus, c_minus, eps, levels=levels)


@register("fiberpo", "FiberPO: sign-split base gate g_agg x logclip fiber residual (eq 80)")
def fiberpo(batch: Batch, *, c_plus: float = 0.12, c_minus: float = 0.05, eps: float = 0.04,
            delta: float | None = None, agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO, minus eq 80 as a loss.

    ``J = sum_i 1/(|Tj| T_tau) w_base_tau r~_fiber_i A_i`` with the base weight of eq 8 and
    the gated residual of eqs 11-16. ``C+ + C- = delta`` (checked when ``delta`` is given);
    the defaults are the values of the paper's Fig 4 (C+ = 0.12, C- = 0.05, eps = 0.04).
    """
    check_delta([float(c_plus)], [float(c_minus)], delta)
    gated, metrics = _gated(batch, c_plus, c_minus, eps, levels=False)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages), metrics)


@register("fiberpo_domain", "FiberPO-Domain: FGH gates at domain, group, trajectory (eq 30-33)")
def fiberpo_domain(batch: Batch, *, c_plus: Budget = 0.12, c_minus: Budget = 0.05,
                   eps: float = 0.04, delta: Budget | None = None,
                   agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO-Domain, minus eq 30 as a loss, over every level of the batch's hierarchy.

    ``c_plus``/``c_minus``: one pair shared by every level (eq 31 as printed) or one entry per
    level, coarse to fine, trajectory last (per-level budgets; the toolkit's extension, F4).
    Missing ``group_ids``/``domain_ids`` drop that level; with no level this is FiberPO.
    """
    if delta is not None:  # the budgets themselves are checked where they are used
        depth = batch.hierarchy.depth
        check_delta(gating.level_budgets(c_plus, depth, "c_plus"),
                    gating.level_budgets(c_minus, depth, "c_minus"), delta)
    gated, metrics = _gated(batch, c_plus, c_minus, eps, levels=True)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages), metrics)
