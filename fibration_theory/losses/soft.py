"""Objectives that reshape the gradient rather than cut it: CISPO and SAPO."""

from __future__ import annotations

import math

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_nonneg, check_positive

Tensor = torch.Tensor

#: SAPO's gate argument ``z = tau (r - 1)`` is capped here: sigmoid(1000) is 1 in float64 and
#: the exact gradient weight ``4 sigma(z)(1 - sigma(z)) r`` is below e^-300 beyond it
SAPO_Z_MAX = 1000.0


@register("cispo", "CISPO: stop-gradient clipped IS weight times log-prob (MiniMax-M1 2025)",
          coupling="token")
def cispo(batch: Batch, *, eps_low: float = 1.0, eps_high: float = 0.28,
          agg: AggMode = "token-mean") -> Surrogate:
    """CISPO (MiniMax 2025, arXiv 2506.13585): ``J = sum mu sg(clip(r, 1-eps_low, 1+eps_high))
    A log pi_theta``. MiniMax-M1 sets no lower bound (a large ``eps_low``; ``1.0`` means
    ``r >= 0``) and tunes ``eps_high`` only; 0.28 is the common recipe value.

    As an RGF gating map: ``G(r) = sg(clip(r)) exp(log r - sg(log r))``. Its value is
    ``clip(r)`` exactly (the exponent is 0) and its gradient ``clip(r) d log r``, the CISPO
    gradient; only the value differs from CISPO's own surrogate (``sg(clip(r)) log pi``), which
    is not a function of the ratio alone. The clip is taken in log space, so no ratio is formed.
    """
    check_nonneg(eps_low, "eps_low")
    check_nonneg(eps_high, "eps_high")
    x = batch.log_ratio
    lo = math.log1p(-float(eps_low)) if eps_low < 1 else -math.inf
    hi = math.log1p(float(eps_high))
    clipped_log = x.detach().clamp(lo, hi)
    gated = clipped_log.exp() * (x - x.detach()).exp()
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(clipped_log != x.detach(), batch.mask)})


@register("sapo", "SAPO: soft sigmoid gate (4/tau) sigmoid(tau (r-1)) (Gao et al. 2025)",
          coupling="token")
def sapo(batch: Batch, *, tau_pos: float = 1.0, tau_neg: float = 1.05,
         agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """SAPO (Gao et al. 2025, arXiv 2511.20347, eq 1): ``G(r) = (4/tau) sigmoid(tau (r - 1))``
    with ``tau = tau_pos`` for ``A > 0`` and ``tau_neg`` otherwise (defaults 1.0 / 1.05). Its
    gradient weight ``4 p (1 - p)`` equals 1 on-policy and decays smoothly off-policy.

    The paper's objective (eq 1) is ``(1/G) sum_i (1/|y_i|) sum_t f(r_{i,t}) A_{i,t}``: each
    response's token mean, then the mean over responses, i.e. ``seq-mean-token-mean``, the
    default here (verl 0.9.1 hard-codes it; TRL 1.16 normalises ``sapo`` the same way).

    Beyond ``tau (r - 1) = SAPO_Z_MAX`` the gate is evaluated at the cap: the value is
    ``4 / tau`` to float64 rounding there and the exact gradient below e^-300, so a log-ratio
    of 1e4 gives a finite value and a zero gradient instead of ``0 * inf``.
    """
    tau_pos = check_positive(tau_pos, "tau_pos")
    tau_neg = check_positive(tau_neg, "tau_neg")
    x = batch.log_ratio
    pos = batch.advantages > 0
    def by_sign(v_pos: float, v_neg: float) -> Tensor:
        return torch.where(pos, torch.as_tensor(v_pos, dtype=x.dtype, device=x.device),
                           torch.as_tensor(v_neg, dtype=x.dtype, device=x.device))

    tau = by_sign(tau_pos, tau_neg)
    x_cap = by_sign(math.log1p(SAPO_Z_MAX / tau_pos), math.log1p(SAPO_Z_MAX / tau_neg))
    z = tau * torch.expm1(torch.minimum(x, x_cap))  # tau (r - 1), with r capped
    gated = 4.0 / tau * torch.sigmoid(z)
    p = torch.sigmoid(z.detach())
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"soft_gate/mean_weight": float((4 * p * (1 - p))[batch.mask].mean())})
