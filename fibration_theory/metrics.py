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

import numpy as np
import torch

from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor


@torch.no_grad()
def ratio_metrics(log_ratio: Tensor, hierarchy: Hierarchy, *, masked: bool = False
                  ) -> dict[str, float]:
    """The diagnostics above for a ``[B, T]`` ``log_ratio``; one host sync.

    The masked tokens are gathered once (``masked_select``, row-major as ``x[mask]``) and
    reduced in float64; each sum divides by ``n`` before adding, as every term may be near
    ``exp(700)``. Row sums run over the padded rows, in float64 without a copy, which needs
    zeros in the padding: ``masked=True`` promises them (``losses.compute`` passes it),
    otherwise they are filled in. The scalars and the ``[B]`` row sums travel to the host
    in one tensor and are finished there.
    """
    mask = hierarchy.mask
    f64 = torch.float64
    x = log_ratio.detach()
    xs = torch.masked_select(x, mask).to(f64)
    n = xs.numel()
    x_min, x_max = torch.aminmax(xs)
    lse = torch.logsumexp(xs, 0)
    r_minus_1 = torch.expm1(xs)
    k3 = torch.sub(r_minus_1, xs).div_(n).sum()
    tv = r_minus_1.abs_().mul_(0.5).div_(n).sum()
    if not masked:
        x = x.masked_fill(~mask, 0.0)  # padding may hold anything (-inf log-probs)
    row_sum = x.sum(1, dtype=f64)
    scalars = [x_min, x_max, lse, k3, tv, xs.sum()]
    if hierarchy.levels:
        row_mean = row_sum / hierarchy.lengths.clamp_min(1)
        for k, lv in enumerate(hierarchy.levels):
            node = hierarchy.node_mean(k, row_mean)
            scalars.append((0.5 * torch.expm1(node[lv.num_traj > 0]).abs()).mean())
    lengths = hierarchy.lengths
    packed = torch.cat([torch.stack(scalars), row_sum, lengths]).cpu().numpy()
    b = lengths.shape[0]
    (x_min, x_max, lse, k3, tv, x_sum), level_tv = packed[:6], packed[6:-2 * b]
    row_sum, lengths = packed[-2 * b:-b], packed[-b:]
    valid = lengths > 0
    row_mean = row_sum[valid] / lengths[valid]
    out = {
        "ratio/mean": _exp(float(lse) - math.log(n)),
        "ratio/min": _exp(float(x_min)),
        "ratio/max": _exp(float(x_max)),
        "log_ratio/abs_max": max(abs(float(x_min)), abs(float(x_max))),
        "approx_kl/k1": -float(x_sum) / n,
        "approx_kl/k3": float(k3),
        "tv/token": float(tv),
        "empty_rows": float(b - int(valid.sum())),
        "tv/trajectory": _trajectory_tv(row_mean),
    }
    for lv, value in zip(hierarchy.levels, level_tv):
        out[f"tv/{lv.name}"] = float(value)
    return out


def _trajectory_tv(row_mean: np.ndarray) -> float:
    """Mean of ``|exp(mean log r) - 1| / 2`` over rows; ``inf`` (without a warning) when a row's
    ratio is beyond float64's range, as ``ratio/max`` reports it."""
    with np.errstate(over="ignore"):
        return float((0.5 * np.abs(np.expm1(row_mean))).mean())


def _exp(v: float) -> float:
    """``exp`` that reports a ratio beyond float64's range as ``inf`` instead of raising."""
    return math.exp(v) if v < math.log(np.finfo(np.float64).max) else math.inf


def fraction(flags: Tensor, mask: Tensor) -> float:
    """Fraction of masked entries where ``flags`` holds."""
    return float((flags & mask).sum()) / max(int(mask.sum()), 1)
