"""FiberPO's gates in closed form, the documented entry points (Section 5, eqs 6-18, 80;
Section 6, eqs 30-33).

The implementation lives in :mod:`fibration_theory.fiberpo` (plan, closed form, fast path,
regime statistics); these functions take a hierarchy and the budgets, validate them, and run
the closed form. Tensor shapes: ``log_ratio`` is ``[B, T]`` (``log pi_theta - log pi_old``
per token; entries outside ``hierarchy.mask`` are ignored), trajectory quantities are
``[B]``. Convention (finding F3): ``sign(0) = +1`` (see :mod:`fibration_theory.fiberpo.closed`).
"""

from __future__ import annotations

import torch

from fibration_theory.fiberpo import closed
from fibration_theory.fiberpo.closed import (
    base_log_weight,
    fiber_log_residual,
    g_agg,
    level_aggregates,
    logclip,
    sign_label,
    trajectory_aggregates,
)
from fibration_theory.fiberpo.plan import Budget, gate_plan, level_budgets
from fibration_theory.fiberpo.stats import Regimes
from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor

__all__ = [
    "Regimes",
    "base_log_weight",
    "fiber_log_residual",
    "fiberpo_domain_log_ratio",
    "fiberpo_domain_ratio",
    "fiberpo_log_ratio",
    "fiberpo_ratio",
    "g_agg",
    "level_aggregates",
    "level_budgets",
    "logclip",
    "regimes",
    "sign_label",
    "trajectory_aggregates",
]


def _closed(log_ratio: Tensor, hierarchy: Hierarchy, c_plus: Budget, c_minus: Budget,
            eps: float, levels: bool, stats: bool = False):
    plan = gate_plan(hierarchy, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=levels)
    closed._check_log_ratio(log_ratio, hierarchy)
    return closed.gate_log_ratio(closed.masked(log_ratio, hierarchy), plan, stats=stats)


def fiberpo_log_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: float,
                      c_minus: float, eps: float) -> Tensor:
    """``[B, T]`` ``log G(r)_i`` of eq 7 (FiberPO, trajectory level only; one number per
    budget)."""
    return _closed(log_ratio, hierarchy, c_plus, c_minus, eps, levels=False)[0]


def fiberpo_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: float, c_minus: float,
                  eps: float) -> Tensor:
    """``[B, T]`` gated ratio ``G(r)_i = w_base_tau * r~_fiber_i`` of eq 7 (Def 5.1, eq 80)."""
    return fiberpo_log_ratio(log_ratio, hierarchy, c_plus=c_plus, c_minus=c_minus,
                             eps=eps).exp()


def fiberpo_domain_log_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget,
                             c_minus: Budget, eps: float) -> Tensor:
    """``[B, T]`` ``log(w_Base_i * r~_Fiber_i)`` of eqs 31-32 over every level of ``hierarchy``.

    With the levels (domain, group) this is FiberPO-Domain exactly as eq 31 writes it; with no
    level it is FiberPO; with more levels it is the deeper FGH chain. ``c_plus``/``c_minus``:
    one pair for all levels (the paper's eq 31) or one entry per level, coarse to fine, the
    trajectory level last (the per-level budgets the text of Section 6 describes; F4).
    """
    return _closed(log_ratio, hierarchy, c_plus, c_minus, eps, levels=True)[0]


def fiberpo_domain_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget,
                         c_minus: Budget, eps: float) -> Tensor:
    """``[B, T]`` ``w_Base_i * r~_Fiber_i`` of eqs 31-32 (Def 6.4)."""
    return fiberpo_domain_log_ratio(log_ratio, hierarchy, c_plus=c_plus, c_minus=c_minus,
                                    eps=eps).exp()


@torch.no_grad()
def regimes(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget, c_minus: Budget,
            eps: float, levels: bool = False) -> Regimes:
    """Regime labels per trajectory (G-I..G-III, L-I..L-III; see ``fibration_theory.regimes``).

    ``levels=False`` labels FiberPO (trajectory level only); ``levels=True`` labels every
    level of the hierarchy as FiberPO-Domain gates them.
    """
    return _closed(log_ratio, hierarchy, c_plus, c_minus, eps, levels=levels, stats=True)[1]
