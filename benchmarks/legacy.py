"""The metrics as they were before the fast path (commit 31ae022), kept only so that
``fibration bench`` can show what the rewrite of :func:`fibration_theory.metrics.ratio_metrics`
saved. Not used by the library."""

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
