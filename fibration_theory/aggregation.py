"""Aggregation modes: the weights ``mu`` of the RGF form (verl / TRL conventions).

==========================  ===============================================  ==============
mode                        ``mu_i`` for token ``i`` of row ``tau``          used by
==========================  ===============================================  ==============
``token-mean``              ``1 / T`` (``T`` tokens in the batch)            PPO (verl), DAPO
``seq-mean-token-mean``     ``1 / (|Tj| T_tau)``                             GRPO, GSPO, FiberPO
``seq-mean-token-sum``      ``1 / |Tj|``                                     --
``seq-mean-token-sum-norm`` ``1 / (|Tj| L)``, ``L`` a constant (Dr.GRPO)     Dr.GRPO
==========================  ===============================================  ==============

``|Tj|`` counts rows with at least one token; empty rows get weight 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from fibration_theory.hierarchy import Hierarchy
from fibration_theory.validation import check_positive

Tensor = torch.Tensor
AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                  "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = get_args(AggMode)


def weights(hierarchy: Hierarchy, agg: AggMode, dtype: torch.dtype,
            norm_length: float | None = None) -> Tensor:
    """``[B, T]`` weights ``mu`` of the aggregation mode ``agg``.

    ``norm_length`` is Dr.GRPO's constant ``L`` (default: the padded width ``T`` of the batch,
    i.e. the maximum response length the batch was generated with).
    """
    if not isinstance(agg, str) or agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    # L: a finite positive real (an infinite L would silently zero the loss and its gradient)
    length = float(hierarchy.mask.shape[1]) if norm_length is None else \
        check_positive(norm_length, "norm_length")
    m = hierarchy.mask.to(dtype)
    if agg == "token-mean":
        return m / hierarchy.num_tokens
    n_traj = hierarchy.num_traj
    if agg == "seq-mean-token-mean":
        return m / (n_traj * hierarchy.lengths.clamp_min(1).to(dtype)[:, None])
    if agg == "seq-mean-token-sum":
        return m / n_traj
    return m / (n_traj * length)
