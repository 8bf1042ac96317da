"""FiberPO as the public unofficial plugin computes it: a plain clamp as the base gate.

The plugin is github.com/alphadl/FibrationPO at commit 5f048ff (``fiberpo/fbg.py``,
``fbg_gated_ratios_trajectory_token`` with ``use_geometric_mean_base=True``, and
``fiberpo/fiber_po.py``, ``compute_policy_loss_fiberpo``). This module is the toolkit's own
code for the same rule; it is not the paper's FiberPO (:mod:`fibration_theory.losses.fiberpo`,
eq 80), whose base gate has restorative slopes beyond the budget (rollback) and whose budgets
are split by sign (``C+``, ``C-``). The differences are measured by
``python -m simulations.clamp_vs_fiberpo`` and described in ``docs/variants.md``.
"""

from __future__ import annotations

import math

import torch

from fibration_theory import aggregation
from fibration_theory.aggregation import AggMode
from fibration_theory.losses.registry import Batch, Surrogate, register
from fibration_theory.metrics import fraction
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_real

Tensor = torch.Tensor

#: The plugin clamps log-ratios to +-20 (verl's ``negative_approx_kl`` clamp) and then floors
#: the ratio at 1e-8 before taking its log again, so the log-ratio it gates lies in
#: ``[log 1e-8, 20]`` (``log 1e-8 = -18.42``).
LOG_RATIO_MAX = 20.0
LOG_RATIO_MIN = math.log(1e-8)


def clamp_gate(log_ratio: Tensor, mask: Tensor, lengths: Tensor, delta: float, eps: float,
               base_input: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The plugin's gated ratio, per token.

    Args:
        log_ratio: ``[B, T]`` ``log r`` (differentiable; values outside ``mask`` ignored).
        mask: ``[B, T]`` bool response mask.
        lengths: ``[B]`` tokens per row (``T_tau``).
        delta: base budget, ``>= 0``.
        eps: fiber clip, ``>= 0``.
        base_input: ``[B, T]``, the same values as ``log_ratio``, used for the base only
            (default ``log_ratio``): a separate leaf lets a caller split the gradient into
            the base's path and the residual's (the gradient diagnostics do).

    Returns:
        ``gated``: ``[B, T]`` ``exp(b_tau + clip(x_i - b_tau, -eps, eps))`` with
        ``x = clamp(log r, log 1e-8, 20)`` and ``b_tau = clamp(mean_tau x, -delta, delta)``
        (1 outside the mask); ``base_clamped``: ``[B]`` bool, ``|mean_tau x| > delta``;
        ``res_clipped``: ``[B, T]`` bool, ``|x_i - b_tau| > eps`` on the mask.

    Gradients flow through the clamps as autograd takes them: a clamped quantity has zero
    derivative, so a token whose residual is clipped keeps only the base's ``1/T_tau``
    coupling, and a trajectory whose mean is clamped has no base gradient at all.
    """
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    x = torch.where(mask, log_ratio.clamp(LOG_RATIO_MIN, LOG_RATIO_MAX), zero)
    xb = x if base_input is None else torch.where(
        mask, base_input.clamp(LOG_RATIO_MIN, LOG_RATIO_MAX), zero)
    mean = xb.sum(1) / lengths.clamp_min(1).to(x.dtype)
    base = mean.clamp(-delta, delta)[:, None]
    residual = x - base
    gated = torch.where(mask, (base + residual.clamp(-eps, eps)).exp(), zero + 1)
    base_clamped = mean.detach().abs() > delta
    res_clipped = mask & (residual.detach().abs() > eps)
    return gated, base_clamped, res_clipped


def _budget(value, name: str) -> float:
    """A single finite real ``>= 0`` (one budget for the whole batch, as the plugin has)."""
    out = check_real(value, name)
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return out


@register("fiberpo_clamp",
          "plugin FiberPO (alphadl/FibrationPO 5f048ff): clamp(mean log r, +-delta) x clip(residual, "
          "+-eps); not the paper's gate", coupling="trajectory")
def fiberpo_clamp(batch: Batch, *, delta: float = 0.2, eps: float = 0.2,
                  agg: AggMode = "seq-mean-token-mean") -> Surrogate:
    """The public unofficial plugin's FiberPO (alphadl/FibrationPO, commit 5f048ff), as a loss.

    Shapes: ``batch.log_ratio``, ``batch.advantages``: ``[B, T]``. Per row ``tau`` with
    ``T_tau`` tokens, ``x_i = clamp(log r_i, log 1e-8, 20)`` (the plugin's ``+-20`` clamp
    followed by its ``1e-8`` ratio floor), ``b_tau = clamp((1/T_tau) sum_{i in tau} x_i,
    -delta, delta)`` (a plain clamp: no rollback beyond the budget, one budget for both
    signs), and the gated ratio

        ``G(r)_i = exp(b_tau) * exp(clip(x_i - b_tau, -eps, eps))``,

    ``J = sum_i mu_i G(r)_i A_i`` (the plugin's loss ``-A * G(r)``, no pessimistic ``min``).
    Aggregation: the plugin's default ``seq-mean-token-mean``, ``mu_i = 1/(|Tj| T_tau)``
    (each row's token mean, then the mean over non-empty rows); ``agg`` selects another mode.
    Defaults ``delta = eps = 0.2`` are the plugin's. At ``r = 1`` the Jacobian of ``G`` is
    the identity (the gradient is GRPO's). Compare the paper's eq 80 (``fiberpo``).

    Metrics: ``base_clamped_frac`` (rows whose mean is clamped), ``residual_clip_frac``
    (tokens whose residual is clipped), ``clip_frac`` (the plugin's ``pg_clipfrac``: tokens
    with ``|r - G(r)| > 1e-5``).
    """
    delta = _budget(delta, "delta")
    eps = _budget(eps, "eps")
    h = batch.hierarchy
    gated, base_clamped, res_clipped = clamp_gate(batch.log_ratio, batch.mask, h.lengths,
                                                  delta, eps)
    mu = aggregation.weights(h, agg, batch.dtype)
    metrics: dict[str, float] = {}
    if batch.with_metrics:
        valid = h.valid
        with torch.no_grad():
            ratio = batch.log_ratio.clamp(-LOG_RATIO_MAX, LOG_RATIO_MAX).exp()
            moved = (ratio - gated).abs() > 1e-5
        metrics = {
            "base_clamped_frac": float((base_clamped & valid).sum()) / max(int(valid.sum()), 1),
            "residual_clip_frac": fraction(res_clipped, batch.mask),
            "clip_frac": fraction(moved, batch.mask),
        }
    return Surrogate(RGF(mu, gated, batch.advantages), metrics)
