"""Every objective of the toolkit behind one call.

>>> import torch
>>> from fibration_theory import losses
>>> lp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
>>> out = losses.compute("fiberpo", lp, lp.detach(), torch.ones(2, 3, dtype=torch.float64),
...                      torch.ones(2, 3, dtype=torch.bool), c_plus=0.1, c_minus=0.05, eps=0.02)
>>> round(out.loss.item(), 6)
-1.0
"""

from __future__ import annotations

from fibration_theory.losses import (  # noqa: F401
    apc,
    fiberpo,
    fiberpo_clamp,
    fiberpo_variants,
    sequence,
    soft,
    token_clip,
)
from fibration_theory.losses.compute import LossOutput, compute
from fibration_theory.losses.registry import (
    COUPLINGS,
    REGISTRY,
    Batch,
    Coupling,
    Surrogate,
    register,
)


def available() -> list[str]:
    """Names of the registered objectives, sorted."""
    return sorted(REGISTRY)


def describe(name: str) -> str:
    """One-line description of an objective."""
    from fibration_theory.losses.registry import get

    return get(name).summary


def parameters(name: str) -> dict[str, object]:
    """An objective's hyperparameters and their defaults."""
    from fibration_theory.losses.registry import get

    return dict(get(name).params)


def coupling(name: str) -> Coupling | None:
    """The coupling level an objective declares (``register(..., coupling=...)``), or None."""
    from fibration_theory.losses.registry import get

    return get(name).coupling


__all__ = [
    "COUPLINGS",
    "Batch",
    "Coupling",
    "LossOutput",
    "Surrogate",
    "available",
    "compute",
    "coupling",
    "describe",
    "parameters",
    "register",
]
