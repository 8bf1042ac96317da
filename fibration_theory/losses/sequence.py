"""Sequence-level objectives: GSPO, GSPO-token, GMPO (App C.4 for GSPO).

They gate a trajectory's aggregate ratio; as RGF instances the gated ratio of a row is
broadcast over its tokens and paired with the row's advantage, the masked mean of the
token advantages (for outcome rewards every token carries the same advantage).
"""

from __future__ import annotations

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.losses.token_clip import clipped_ratio
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_nonneg

Tensor = torch.Tensor


def _row_advantage(batch: Batch) -> Tensor:
    """``[B, T]``: each row's masked mean advantage, broadcast over the row."""
    adv = batch.hierarchy.row_mean(batch.advantages)
    return adv[:, None].expand_as(batch.advantages)


@register("gspo", "GSPO: clip of s = exp(mean log r) per sequence (Zheng et al. 2025)",
          coupling="trajectory")
def gspo(batch: Batch, *, eps_low: float = 3e-4, eps_high: float = 4e-4,
         agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): ``s_tau = exp((1/T_tau) sum_t log r_t)``,
    objective ``min(s A, clip(s, 1 - eps_low, 1 + eps_high) A)`` per sequence, averaged over
    sequences; defaults ``3e-4 / 4e-4`` from the paper."""
    adv = _row_advantage(batch)
    log_s = batch.hierarchy.row_mean(batch.log_ratio)[:, None].expand_as(batch.log_ratio)
    gated, clipped = clipped_ratio(log_s, adv, eps_low, eps_high)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    valid = batch.hierarchy.valid
    return Surrogate(RGF(mu, gated, adv),
                     {"clip_frac": float((clipped[:, 0] & valid).sum()) / max(int(valid.sum()), 1)})


@register("gspo_token", "GSPO-token: per-token s_i = sg(s) r_i / sg(r_i) (Zheng et al. 2025)",
          coupling="trajectory")
def gspo_token(batch: Batch, *, eps_low: float = 3e-4, eps_high: float = 4e-4,
               agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """GSPO-token (Zheng et al. 2025, eq 13-14): ``s_i = sg(s_tau) * r_i / sg(r_i)`` carries
    the sequence ratio's value with a per-token gradient, so token advantages may differ."""
    log_s = batch.hierarchy.row_mean(batch.log_ratio).detach()[:, None]
    # log s_i = sg(log s) + (log r_i - sg(log r_i)): the bracket is exactly 0 in value, so the
    # value is log s to the last bit (no (log s + x) - x cancellation at large x)
    log_si = log_s + (batch.log_ratio - batch.log_ratio.detach())
    gated, clipped = clipped_ratio(log_si, batch.advantages, eps_low, eps_high)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(clipped, batch.mask)})


@register("gmpo", "GMPO: geometric mean of log-space-clipped token ratios (Zhao et al. 2025)",
          coupling="trajectory")
def gmpo(batch: Batch, *, eps_low: float = 0.4, eps_high: float = 0.4,
         agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """GMPO (Zhao et al. 2025, arXiv 2507.20673): per sequence
    ``exp((1/T) sum_t sgn(A) min(sgn(A) log r_t, sgn(A) clip(log r_t, -eps_low, eps_high))) A``,
    i.e. the geometric mean of PPO's token terms, clipped in log space; defaults
    ``(e^-0.4, e^0.4)`` from the paper."""
    check_nonneg(eps_low, "eps_low")
    check_nonneg(eps_high, "eps_high")
    adv = _row_advantage(batch)
    x = batch.log_ratio
    pos = adv >= 0
    clip_hi = pos & (x > eps_high)
    clip_lo = (~pos) & (x < -eps_low)
    hi = torch.full_like(x, eps_high)
    lo = torch.full_like(x, -eps_low)
    clipped_log = torch.where(clip_hi, hi, torch.where(clip_lo, lo, x))
    log_g = batch.hierarchy.row_mean(clipped_log)[:, None].expand_as(x)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, log_g.exp(), adv),
                     {"clip_frac": fraction(clip_hi | clip_lo, batch.mask)})
