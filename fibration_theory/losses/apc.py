"""APC-Obj, the Aggregational Policy Censoring Objective (Def 3.2 / C.1, eqs 3, 57-59).

Per token ``i`` at state ``s``, with ``T_s`` tokens at ``s`` and radius ``delta``:
``B_i = T_s delta - sum_{j at s, j != i} |r_j - 1|`` (the state's TV budget minus what the
other tokens at ``s`` consume) and ``G(r)_i = 1 + clip(r_i - 1, -B_i+, B_i+)``, weights
``mu = 1/T``. The regimes of App C.2: pass-through (clip inactive), rollback
(``0 < |clip| < |r - 1|``), zeroed (``B_i <= 0``).

The exact radius ``delta(APC-Obj)`` vanishes at ``gamma = 1`` (Thm 2.1, Remark 3.4); as a
loss APC-Obj is used with a relaxed, positive ``delta`` (App C.5, step 1).
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


def state_codes(state_ids: Tensor | None, mask: Tensor) -> Tensor:
    """``[B, T]`` long state codes over the masked tokens (each token its own by default)."""
    if state_ids is None:
        return torch.arange(mask.numel(), device=mask.device).reshape(mask.shape)
    if not isinstance(state_ids, Tensor) or tuple(state_ids.shape) != tuple(mask.shape):
        raise ValueError(f"state_ids must be a [B, T] integer tensor like mask "
                         f"{tuple(mask.shape)}, got {getattr(state_ids, 'shape', state_ids)}")
    if state_ids.is_floating_point() or state_ids.dtype == torch.bool:
        raise ValueError(f"state_ids must hold integers, got dtype {state_ids.dtype}")
    _, codes = torch.unique(state_ids, return_inverse=True)
    return codes.reshape(mask.shape)


def apc_gate(log_ratio: Tensor, mask: Tensor, codes: Tensor, delta: float
             ) -> tuple[Tensor, Tensor, Tensor]:
    """``[B, T]`` APC gating map ``1 + clip(r - 1, B)`` of eq 3, and the bool tensors of the
    rollback and zeroed tokens. Per-state sums are one segmented reduction.

    ``B_i = T_s delta - sum_{j at s, j != i} |r_j - 1|`` is formed without cancellation. Each
    deviation enters the state's sum capped at the state's budget,
    ``a_j = min(|r_j - 1|, T_s delta)``, and ``B_i = T_s delta - (sum_s a - a_i)``. The cap
    changes no clip: a token beyond the whole budget leaves every other token of its state with
    ``B <= 0`` (zeroed) either way; and ``sum_s a - a_i`` then errs by a few ulps of
    ``T_s delta + sum_{j != i} a_j``, the conditioning of ``B_i`` itself (subtracting an
    uncapped ``|r_i - 1| = e^40`` would wipe out the budget). A log-ratio beyond
    ``log(2 + 2 T_s delta)`` is clipped whatever the others do (``|r - 1| > T_s delta >= B``),
    so ``r`` is formed from the log-ratio capped there: no overflow, and no ``inf * 0`` in the
    backward.
    """
    flat = codes.reshape(-1)
    n_states = int(codes.max()) + 1
    zeros = torch.zeros(n_states, dtype=log_ratio.dtype, device=log_ratio.device)
    count = zeros.index_add(0, flat, mask.reshape(-1).to(log_ratio.dtype))
    budget = (count * delta)[codes]  # T_s delta at each token's state
    dev = torch.expm1(torch.minimum(log_ratio, torch.log1p(1 + 2 * budget)))  # r - 1, capped
    a = torch.where(mask, torch.minimum(dev.abs(), budget), torch.zeros_like(dev))
    used = zeros.index_add(0, flat, a.reshape(-1))
    bound = budget - (used[codes] - a)  # B_i: the state's budget minus the others' use
    b_plus = bound.clamp_min(0)
    clipped = torch.where(dev > b_plus, b_plus, torch.where(dev < -b_plus, -b_plus, dev))
    zeroed = mask & (bound <= 0)
    rollback = mask & ~zeroed & (dev.abs() > b_plus)
    return 1 + clipped, rollback, zeroed


@register("apc", "APC-Obj: per-state TV budget shared across tokens, 1 + clip(r-1, B) (eq 3)",
          states=True, coupling="token")
def apc(batch: Batch, *, delta: float = 0.2, agg: AggMode = "token-mean") -> Surrogate:
    """APC-Obj (eq 3) with radius ``delta``; the batch's ``state_ids`` ``[B, T]`` ints name
    each token's state (tokens sharing a prefix share a state; default: every token its own
    state, so ``B_i = delta`` and APC reduces to a symmetric per-token clip of ``r - 1``)."""
    check_nonneg(delta, "delta")
    codes = state_codes(batch.state_ids, batch.mask)
    gated, rollback, zeroed = apc_gate(batch.log_ratio, batch.mask, codes, float(delta))
    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return Surrogate(RGF(mu, gated, batch.advantages),
                     {"clip_frac": fraction(rollback | zeroed, batch.mask),
                      "apc/rollback_frac": fraction(rollback, batch.mask),
                      "apc/zeroed_frac": fraction(zeroed, batch.mask)})
