"""Diagnostics every objective reports (no gradient; float64 inside).

* ``ratio/mean|min|max``: token ratios ``r = exp(log r)`` (mean via logsumexp, no overflow);
* ``log_ratio/abs_max``;
* ``approx_kl/k1`` ``mean(-log r)`` and ``approx_kl/k3`` ``mean(r - 1 - log r)``, both
  estimates of ``KL(pi_old || pi_theta)`` from tokens sampled by ``pi_old``;
* ``tv/token`` ``(1/2) mean |r - 1|``, the per-token sample TV (eq 37 with its 1/2);
* ``tv/trajectory`` and ``tv/<level>``: ``(1/2) |exp(mean log r) - 1|`` of each
  trajectory (or node: the mean of its trajectories' mean log-ratios, eq 33), averaged over
  trajectories (nodes);
* ``empty_rows``: rows without response tokens, dropped from the objective.
"""

from __future__ import annotations

import math

import torch

from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor


@torch.no_grad()
def ratio_metrics(log_ratio: Tensor, hierarchy: Hierarchy) -> dict[str, float]:
    mask = hierarchy.mask
    x = log_ratio.detach().to(torch.float64)[mask]
    n = x.numel()
    r_minus_1 = torch.expm1(x)
    out = {
        "ratio/mean": math.exp(float(torch.logsumexp(x, 0)) - math.log(n)),
        "ratio/min": math.exp(float(x.min())),
        "ratio/max": math.exp(float(x.max())),
        "log_ratio/abs_max": float(x.abs().max()),
        "approx_kl/k1": float((-x).mean()),
        # divide before summing: each term may be near exp(700)
        "approx_kl/k3": float(((r_minus_1 - x) / n).sum()),
        "tv/token": float((0.5 * r_minus_1.abs() / n).sum()),
        "empty_rows": float(hierarchy.empty_rows),
    }
    row_mean = hierarchy.row_mean(log_ratio.detach().to(torch.float64))
    valid = hierarchy.valid
    out["tv/trajectory"] = float((0.5 * torch.expm1(row_mean[valid]).abs()).mean())
    for k, lv in enumerate(hierarchy.levels):
        node = hierarchy.node_mean(k, row_mean)
        has = lv.num_traj > 0
        out[f"tv/{lv.name}"] = float((0.5 * torch.expm1(node[has]).abs()).mean())
    return out


def fraction(flags: Tensor, mask: Tensor) -> float:
    """Fraction of masked entries where ``flags`` holds."""
    return float((flags & mask).sum()) / max(int(mask.sum()), 1)
