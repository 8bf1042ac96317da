"""The Ratio Gating Formalism, Def 3.1 / eq 2: the spine of every objective.

An objective is its index set ``E`` (the masked ``[B, T]`` tokens), weights ``mu`` and a
ratio gating map ``G``; the surrogate is ``J = sum_i mu_i G(r)_i A_i`` and the loss ``-J``.
Objectives differ only in how they build ``mu`` and ``G``.
"""

from __future__ import annotations

import dataclasses

import torch

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class RGF:
    """An RGF instance evaluated on a batch.

    Attributes:
        weights: ``[B, T]`` ``mu``, zero outside the index set (padding, empty rows).
        gated_ratio: ``[B, T]`` ``G(r)``, differentiable in the log-probs.
        advantages: ``[B, T]`` ``A``, the advantage each index is paired with (for sequence
            objectives, the row's advantage broadcast over its tokens).
    """

    weights: Tensor
    gated_ratio: Tensor
    advantages: Tensor

    def objective(self) -> Tensor:
        """``J = sum_i mu_i G(r)_i A_i`` (eq 2); ``mu`` is applied first so that large gated
        ratios (``exp(700)``) are scaled down before any sum can overflow."""
        return ((self.weights * self.gated_ratio) * self.advantages).sum()
