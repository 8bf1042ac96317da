"""Objectives that reshape the gradient rather than cut it: CISPO and SAPO."""

from __future__ import annotations

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_nonneg

Tensor = torch.Tensor


@register("cispo", "CISPO: stop-gradient clipped IS weight times log-prob (MiniMax-M1 2025)")
def cispo(batch: Batch, *, eps_low: float = 1.0, eps_high: float = 0.28,
          agg: AggMode = "token-mean") -> Surrogate:
    """CISPO (MiniMax 2025, arXiv 2506.13585): ``J = sum mu sg(clip(r, 1-eps_low, 1+eps_high))
    A log pi_theta``. MiniMax-M1 sets no lower bound (a large ``eps_low``; ``1.0`` means
    ``r >= 0``) and tunes ``eps_high`` only; 0.28 is the common recipe value.

    As an RGF gating map: ``G(r) = sg(clip(r) / r) * r``. Its value is ``clip(r)`` and its
    gradient ``clip(r) d log r``, the CISPO gradient; only the value differs from CISPO's own
    surrogate (``sg(clip(r)) log pi``), which is not a function of the ratio alone.
    """
    check_nonneg(eps_low, "eps_low")
    check_nonneg(eps_high, "eps_high")
    x = batch.log_ratio
    lo = torch.log(torch.as_tensor(max(1.0 - eps_low, 0.0), dtype=x.dtype))
    hi = torch.log(torch.as_tensor(1.0 + eps_high, dtype=x.dtype))
    clipped_log = torch.minimum(torch.maximum(x.detach(), lo), hi)
    gated = (clipped_log - x.detach() + x).exp()
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(clipped_log != x.detach(), batch.mask)})


@register("sapo", "SAPO: soft sigmoid gate (4/tau) sigmoid(tau (r-1)) (Gao et al. 2025)")
def sapo(batch: Batch, *, tau_pos: float = 1.0, tau_neg: float = 1.05,
         agg: AggMode = "token-mean") -> Surrogate:
    """SAPO (Gao et al. 2025, arXiv 2511.20347): ``G(r) = (4/tau) sigmoid(tau (r - 1))`` with
    ``tau = tau_pos`` for ``A > 0`` and ``tau_neg`` otherwise (defaults 1.0 / 1.05). Its
    gradient weight ``4 p (1 - p)`` equals 1 on-policy and decays smoothly off-policy."""
    check_nonneg(tau_pos, "tau_pos")
    check_nonneg(tau_neg, "tau_neg")
    if tau_pos == 0 or tau_neg == 0:
        raise ValueError("tau_pos and tau_neg must be > 0")
    tau = torch.where(batch.advantages > 0, torch.as_tensor(tau_pos, dtype=batch.dtype),
                      torch.as_tensor(tau_neg, dtype=batch.dtype))
    # sigmoid(tau (exp(x) - 1)) saturates for large x without overflow (exp(700) is finite)
    gated = 4.0 / tau * torch.sigmoid(tau * torch.expm1(batch.log_ratio))
    p = torch.sigmoid(tau * torch.expm1(batch.log_ratio.detach()))
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"soft_gate/mean_weight": float((4 * p * (1 - p))[batch.mask].mean())})
