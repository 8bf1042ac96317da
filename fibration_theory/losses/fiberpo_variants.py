"""Variants of FiberPO's base gate that the FBG machinery allows (beyond the paper).

Both keep FiberPO's sign-split aggregates, budgets ``C+``, ``C-`` and fiber residual (eqs
7-16) and change only the slope of ``g_agg`` beyond the budget (eq 10), through the gate
plan's ``slope`` (``k = slope * T_tau``; the paper's gate is ``slope = 1``):

* ``fiberpo_slope``: another rollback slope; the rollback band widens from
  ``C < |x| < (1 + 1/T_tau) C`` to ``C < |x| < (1 + 1/(slope T_tau)) C`` and the restorative
  derivative per token is ``-slope`` instead of ``-1``;
* ``fiberpo_hard``: ``slope = 0``, a hard base clip: ``g_agg(x) = clamp(x, -C, C)``, no
  rollback and no zeroing, zero base gradient beyond the budget (the regime statistics
  label the clamped channels "rollback", code 1).

Neither is an objective of the paper; ``docs/variants.md`` describes them.
"""

from __future__ import annotations

from fibration_theory import fiberpo as fp
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.fiberpo import _surrogate
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.validation import check_real


@register("fiberpo_slope", "FiberPO with rollback slope k = slope * T_tau in g_agg (beyond the "
          "paper; slope 1 is eq 80)", coupling="trajectory")
def fiberpo_slope(batch: Batch, *, c_plus: float = 0.12, c_minus: float = 0.05,
                  eps: float = 0.04, slope: float = 0.5, delta: float | None = None,
                  agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO (eq 80) whose aggregate gate rolls back with slope ``k = slope * T_tau``.

    Shapes as :func:`fibration_theory.losses.fiberpo.fiberpo` (``[B, T]`` log-ratios and
    advantages). ``g_agg(x) = x`` for ``|x| <= C``, ``sign(x)(k+1)C - k x`` for
    ``C < |x| < (1 + 1/k) C``, ``0`` beyond; ``slope = 1`` gives the paper's gate exactly,
    ``slope = 0`` the hard clip of :func:`fiberpo_hard`. The default ``0.5`` halves the
    restorative derivative and doubles the rollback band (an arbitrary midpoint, not a
    tuned value). Other parameters and defaults: FiberPO's (the paper's Fig 4).
    """
    slope = check_real(slope, "slope")
    if slope < 0:
        raise ValueError(f"slope must be >= 0, got {slope}")
    plan = fp.gate_plan(batch.hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=False,
                        delta=delta, slope=slope)
    return _surrogate(batch, plan, agg)


@register("fiberpo_hard", "FiberPO with a hard base clip: g_agg = clamp(x, C), no rollback "
          "(beyond the paper)", coupling="trajectory")
def fiberpo_hard(batch: Batch, *, c_plus: float = 0.12, c_minus: float = 0.05,
                 eps: float = 0.04, delta: float | None = None,
                 agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """FiberPO (eq 80) with ``g_agg(x) = clamp(x, -C, C)`` in each sign channel (``slope =
    0`` of :func:`fiberpo_slope`): beyond the budget the base weight is held at
    ``exp(+-C)`` and has zero gradient, where the paper's gate rolls back and then zeroes.
    Shapes, other parameters and defaults: FiberPO's."""
    plan = fp.gate_plan(batch.hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=False,
                        delta=delta, slope=0.0)
    return _surrogate(batch, plan, agg)
