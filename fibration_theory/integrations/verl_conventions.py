"""verl's conventions for what its own policy losses weight and report.

* ``rollout_is_weights`` (``[B, T]``, ``>= 0``, detached) multiply each token's term, as in
  verl's losses; GMPO's sequence-level term takes the row's geometric mean of the weights,
  as verl's ``geo_mean``.
* ``actor/pg_clipfrac`` / ``actor/pg_clipfrac_lower`` with the definitions of the counterpart
  loss in verl (for the PPO family the dual-clipped tokens are counted in
  ``pg_clipfrac_lower`` only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fibration_theory.integrations.verl_config import VERL_PEERS
from fibration_theory.validation import check_float

Tensor = torch.Tensor

__all__ = ["clip_metrics", "weighted_advantages"]


def _row_geo_mean(w: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]``: each row's geometric mean of ``w`` over its tokens, broadcast (0 when a
    token's weight is 0), as verl's ``geo_mean`` weights a sequence."""
    logw = torch.where(mask, torch.log(w), torch.zeros_like(w))
    n = mask.sum(-1, keepdim=True).clamp_min(1).to(w.dtype)
    return torch.exp(logw.sum(-1, keepdim=True) / n).expand_as(w)


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    return float(torch.where(mask, x.to(torch.float64), torch.zeros_like(x, dtype=torch.float64))
                 .sum() / mask.sum())


def clip_metrics(objective: str, log_ratio: Tensor, adv: Tensor, mask: Tensor,
                       params: Mapping[str, Any]) -> dict[str, float]:
    """``pg_clipfrac`` / ``pg_clipfrac_lower`` as verl's counterpart of ``objective`` counts
    them (token-level masked means; ``[B, T]`` inputs)."""
    peer = VERL_PEERS[objective]
    zero = torch.zeros_like(adv)
    if peer == "sapo":
        return {"actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0}
    lo, hi = float(params["eps_low"]), float(params["eps_high"])
    if peer == "geo_mean":
        clipped = log_ratio != log_ratio.clamp(-lo, hi)
        return {"actor/pg_clipfrac": _masked_mean((clipped & (adv > 0)).to(adv), mask),
                "actor/pg_clipfrac_lower": _masked_mean((clipped & (adv < 0)).to(adv), mask)}
    if peer == "gspo":
        n = mask.sum(-1, keepdim=True).clamp_min(1)
        seq = torch.where(mask, log_ratio, zero).sum(-1, keepdim=True) / n
        ratio = torch.exp(seq.clamp(max=10.0)).expand_as(adv)
    else:
        ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    clip = ratio.clamp(1 - lo, 1 + hi)
    if peer == "cispo":
        return {"actor/pg_clipfrac": _masked_mean((ratio != clip).to(adv), mask),
                "actor/pg_clipfrac_lower": 0.0}
    loss1, loss2 = -adv * ratio, -adv * clip
    out = {"actor/pg_clipfrac": _masked_mean((loss2 > loss1).to(adv), mask),
           "actor/pg_clipfrac_lower": 0.0}
    c = params.get("dual_clip")
    if peer == "vanilla" and c is not None:
        lower = (torch.maximum(loss1, loss2) > -adv * float(c)) & (adv < 0)
        out["actor/pg_clipfrac_lower"] = _masked_mean(lower.to(adv), mask)
    return out


def weighted_advantages(objective: str, adv: Tensor, rollout_is_weights: Tensor | None,
                        mask: Tensor) -> Tensor:
    """``[B, T]`` float64 advantages times verl's rollout weights (``>= 0``, detached) as
    verl's losses apply them: per token, or the row's geometric mean for GMPO."""
    adv = adv.detach().to(torch.float64)
    if rollout_is_weights is None:
        return adv
    check_float(rollout_is_weights, "rollout_is_weights", tuple(mask.shape), mask)
    w = rollout_is_weights.detach().to(torch.float64)
    if bool((w[mask] < 0).any()):
        raise ValueError("rollout_is_weights must be >= 0 on the response tokens")
    return adv * (_row_geo_mean(w, mask) if objective == "gmpo" else w)
