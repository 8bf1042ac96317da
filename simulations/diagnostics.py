"""Diagnostics every study records per update: the sample TV at every level of the
hierarchy, the budgets that label FiberPO's regimes, and a running mean of per-step values.

Used by the sequence study (:mod:`.token_efficiency`) and the LM study (:mod:`.lm.rl`)
alike, so both report the same quantities under the same names.
"""

from __future__ import annotations

from typing import Any

import torch
from fibration_theory.simulations.methods import REFERENCE_GATE, Method

from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor


def level_tv(log_ratio: Tensor, h: Hierarchy) -> dict[str, float]:
    """Sample TV of an update at every level (all with the factor 1/2 of eq 37).

    ``tv/token``: ``(1/2) mean_i |r_i - 1|``; ``tv/tj``: the trajectory-normalised TV of
    eq 46 estimated by eq 51, ``(1/2)(1/|Tj|) sum_tau (1/T_tau) sum_t |r - 1|``;
    ``tv/<level>``: ``(1/2) mean_node |exp(log s_node) - 1|`` with ``log s_node`` the node's
    signed aggregate log-ratio (trajectory mean; upper levels by eq 33); ``kl/tj``:
    ``-mean_tau log s_tau`` (eq 49 averaged).
    """
    m = h.mask
    dev = torch.where(m, torch.expm1(log_ratio).abs(), torch.zeros(()))
    out = {"tv/token": 0.5 * float(dev.sum() / m.sum())}
    row_tv = h.row_mean(dev)
    out["tv/tj"] = 0.5 * float(row_tv[h.valid].mean())
    row_log_s = h.row_mean(torch.where(m, log_ratio, torch.zeros(())))
    out["kl/tj"] = -float(row_log_s[h.valid].mean())
    out["tv/trajectory"] = 0.5 * float(torch.expm1(row_log_s[h.valid]).abs().mean())
    for k, lv in enumerate(h.levels):
        node = h.node_mean(k, row_log_s)[lv.num_traj > 0]
        out[f"tv/{lv.name}"] = 0.5 * float(torch.expm1(node).abs().mean())
    return out


class Tally:
    """Running sums of per-step diagnostics, averaged per update: each key over the steps
    that reported it (a step without a gradient reports no gradient shares)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.n = 0

    def add(self, d: dict[str, float]) -> None:
        for k, v in d.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.n += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.counts[k], 1) for k, v in self.sums.items()}


def gate_for(method: Method, params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Budgets used to label regimes, and whether upper levels are labelled."""
    if method.loss in ("fiberpo", "fiberpo_domain", "fiberpo_slope", "fiberpo_hard"):
        gate = {k: params[k] for k in ("c_plus", "c_minus", "eps")}
        return gate, method.hierarchical
    return dict(REFERENCE_GATE), False
