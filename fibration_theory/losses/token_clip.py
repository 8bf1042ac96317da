"""Token-level clipped objectives: PPO-clip, GRPO, Dr.GRPO, DAPO (App C.4).

All four share one gating map: per token,
``G(r) = min(r, 1 + eps_high)`` when ``A >= 0`` and ``G(r) = max(r, 1 - eps_low)`` when
``A < 0``, so that ``G(r) A = min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``; with dual
clip (Ye et al. 2020) ``G(r) = min(max(r, 1 - eps_low), c)`` for ``A < 0``. They differ in
their weights ``mu`` (the aggregation mode) and their defaults.
"""

from __future__ import annotations

import math

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_nonneg, check_real

Tensor = torch.Tensor


def clipped_ratio(log_ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float,
                  dual_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """``[B, T]`` PPO gating map and the ``[B, T]`` bool of tokens where a clip is active.

    A clipped token gets a constant (zero gradient), exactly as ``min(rA, clip(r)A)`` does.
    The clip decisions are taken in log space (``r > 1 + eps_high`` iff
    ``log r > log1p(eps_high)``) before anything is exponentiated, and a clipped token's ratio
    is never formed: ``exp`` runs on 0 there, so a log-ratio of 1e4 on a clipped token gives a
    finite value and an exact zero gradient (no ``inf * 0`` in the backward). An unclipped
    ratio beyond the dtype's range stays ``inf``; ``losses.compute`` names it.
    """
    check_nonneg(eps_low, "eps_low")
    check_nonneg(eps_high, "eps_high")
    x = log_ratio
    pos = advantages >= 0
    log_hi = math.log1p(float(eps_high))
    # 1 - eps_low <= 0 is no lower bound at all (r > 0)
    log_lo = math.log1p(-float(eps_low)) if eps_low < 1 else -math.inf
    clip_hi = pos & (x > log_hi)
    clip_lo = (~pos) & (x < log_lo)
    clipped = clip_hi | clip_lo
    dual = None
    if dual_clip is not None:
        c = check_real(dual_clip, "dual_clip")
        if not c > 1.0:
            raise ValueError(f"dual_clip must be > 1 (Ye et al. 2020 use 3), got {dual_clip}")
        dual = (~pos) & (x > math.log(c))  # G = min(max(r, 1 - eps_low), c) for A < 0
        clipped = clipped | dual
    r = torch.where(clipped, torch.zeros((), dtype=x.dtype, device=x.device), x).exp()
    hi = torch.as_tensor(1.0 + float(eps_high), dtype=r.dtype, device=r.device)
    lo = torch.as_tensor(1.0 - float(eps_low), dtype=r.dtype, device=r.device)
    gated = torch.where(clip_hi, hi, torch.where(clip_lo, lo, r))
    if dual is not None:
        gated = torch.where(dual, torch.as_tensor(c, dtype=r.dtype, device=r.device), gated)
    return gated, clipped


def _token_clip(batch: Batch, eps_low: float, eps_high: float, agg: AggMode,
                dual_clip: float | None = None, norm_length: float | None = None) -> Surrogate:
    gated, clipped = clipped_ratio(batch.log_ratio, batch.advantages, eps_low, eps_high, dual_clip)
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype, norm_length)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(clipped, batch.mask)})


@register("ppo_clip", "token PPO-clip, min(rA, clip(r)A) (Schulman et al. 2017); dual-clip option",
          coupling="token")
def ppo_clip(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
             dual_clip: float | None = None, agg: AggMode = "token-mean") -> Surrogate:
    """PPO-clip (Schulman et al. 2017, arXiv 1707.06347; eps = 0.2), token-mean as in verl.

    ``dual_clip=c`` adds the dual clip of Ye et al. 2020 (arXiv 1912.09729; c = 3) on
    negative advantages.
    """
    return _token_clip(batch, eps_low, eps_high, agg, dual_clip)


@register("grpo", "GRPO: PPO-clip with seq-mean-token-mean weights (Shao et al. 2024)",
          coupling="token")
def grpo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
         dual_clip: float | None = None, agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300): per-token clip with
    ``eps = 0.2``, each response's token mean, then the mean over responses. The KL penalty
    to a reference model is not part of the policy loss here (``beta = 0``). ``dual_clip``
    as in :func:`ppo_clip` (verl applies it to GRPO by default, ``clip_ratio_c = 3``)."""
    return _token_clip(batch, eps_low, eps_high, agg, dual_clip)


@register("dr_grpo", "Dr.GRPO: PPO-clip with a constant normalizer |Tj| L (Liu et al. 2025)",
          coupling="token")
def dr_grpo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.2,
            norm_length: float | None = None, dual_clip: float | None = None,
            agg: AggMode = "seq-mean-token-sum-norm") -> Surrogate:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783): token sums divided by a constant
    ``|Tj| * L`` (``L`` = the maximum response length; default the batch's padded width),
    removing GRPO's length bias. Advantages should not be divided by the group std (the
    caller's advantage estimator). ``dual_clip`` as in :func:`ppo_clip`."""
    return _token_clip(batch, eps_low, eps_high, agg, dual_clip, norm_length=norm_length)


@register("dapo", "DAPO: clip-higher 0.2/0.28 with token-mean weights (Yu et al. 2025)",
          coupling="token")
def dapo(batch: Batch, *, eps_low: float = 0.2, eps_high: float = 0.28,
         dual_clip: float | None = None, agg: AggMode = "token-mean") -> Surrogate:
    """DAPO (Yu et al. 2025, arXiv 2503.14476): decoupled clip ``eps_low = 0.2``,
    ``eps_high = 0.28`` and token-level aggregation. Dynamic sampling and overlong shaping
    belong to the data pipeline, not the loss. ``dual_clip`` as in :func:`ppo_clip`."""
    return _token_clip(batch, eps_low, eps_high, agg, dual_clip)
