"""Token-level clipped objectives: PPO-clip, GRPO, Dr.GRPO, DAPO (App C.4).

All four share one gating map: per token,
``G(r) = min(r, 1 + eps_high)`` when ``A >= 0`` and ``G(r) = max(r, 1 - eps_low)`` when
``A < 0``, so that ``G(r) A = min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``; with dual
clip (Ye et al. 2020) ``G(r) = min(max(r, 1 - eps_low), c)`` for ``A < 0``. They differ in
their weights ``mu`` (the aggregation mode) and their defaults.
"""

from __future__ import annotations

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_nonneg

Tensor = torch.Tensor


def clipped_ratio(log_ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float,
                  dual_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """``[B, T]`` PPO gating map and the ``[B, T]`` bool of tokens where a clip is active.

    A clipped token gets a constant (zero gradient), exactly as ``min(rA, clip(r)A)`` does.
    """
    check_nonneg(eps_low, "eps_low")
    check_nonneg(eps_high, "eps_high")
    r = log_ratio.exp()
    pos = advantages >= 0
    hi = torch.as_tensor(1.0 + eps_high, dtype=r.dtype, device=r.device)
    lo = torch.as_tensor(1.0 - eps_low, dtype=r.dtype, device=r.device)
    clip_hi = pos & (r > hi)
    clip_lo = (~pos) & (r < lo)
    gated = torch.where(clip_hi, hi, torch.where(clip_lo, lo, r))
    clipped = clip_hi | clip_lo
    if dual_clip is not None:
        if not dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1 (Ye et al. 2020 use 3), got {dual_clip}")
        c = torch.as_tensor(float(dual_clip), dtype=r.dtype, device=r.device)
        dual = (~pos) & (gated > c)
        gated = torch.where(dual, c, gated)
        clipped = clipped | dual
    return gated, clipped


def _token_clip(batch: Batch, eps_low: float, eps_high: float, agg: AggMode,
                dual_clip: float | None = None, norm_length: float | None = None) -> Surrogate:
    gated, clipped = clipped_ratio(batch.log_ratio, batch.advantages, eps_low, eps_high, dual_clip)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype, norm_length)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(clipped, batch.mask)})


@register("ppo_clip", "token PPO-clip, min(rA, clip(r)A) (Schulman et al. 2017); dual-clip option")
def ppo_clip(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
             dual_clip: float | None = None, agg: AggMode = "token-mean") -> Surrogate:
    """PPO-clip (Schulman et al. 2017, arXiv 1707.06347; eps = 0.2), token-mean as in verl.

    ``dual_clip=c`` adds the dual clip of Ye et al. 2020 (arXiv 1912.09729; c = 3) on
    negative advantages.
    """
    return _token_clip(batch, eps_low, eps_high, agg, dual_clip)


@register("grpo", "GRPO: PPO-clip with seq-mean-token-mean weights (Shao et al. 2024)")
def grpo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
         agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300): per-token clip with
    ``eps = 0.2``, each response's token mean, then the mean over responses. The KL penalty
    to a reference model is not part of the policy loss here (``beta = 0``)."""
    return _token_clip(batch, eps_low, eps_high, agg)


@register("dr_grpo", "Dr.GRPO: PPO-clip with a constant normalizer |Tj| L (Liu et al. 2025)")
def dr_grpo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
            norm_length: float | None = None,
            agg: AggMode = "seq-mean-token-sum-norm") -> Surrogate:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783): token sums divided by a constant
    ``|Tj| * L`` (``L`` = the maximum response length; default the batch's padded width),
    removing GRPO's length bias. Advantages should not be divided by the group std (the
    caller's advantage estimator)."""
    return _token_clip(batch, eps_low, eps_high, agg, norm_length=norm_length)


@register("dapo", "DAPO: clip-higher 0.2/0.28 with token-mean weights (Yu et al. 2025)")
def dapo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.28,
         agg: AggMode = "token-mean") -> Surrogate:
    """DAPO (Yu et al. 2025, arXiv 2503.14476): decoupled clip ``eps_low = 0.2``,
    ``eps_high = 0.28`` and token-level aggregation. Dynamic sampling and overlong shaping
    belong to the data pipeline, not the loss."""
    return _token_clip(batch, eps_low, eps_high, agg)
