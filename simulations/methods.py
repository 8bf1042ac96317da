"""The methods compared in the experiments, their defaults and the shared tuning grid.

A method is a registered objective of :mod:`fibration_theory.losses` plus fixed parameters;
the defaults are the library's (which follow each method's paper). Every method gets the
same grid: its clip or budget parameters (``scaled``) are multiplied jointly by each factor
of ``GRID_FACTORS``; nothing else is tuned. ``fiberpo_domain_levels`` is FiberPO-Domain with
one budget pair per level (finding F4: eq 31 prints one pair shared by every level), with
the coarser levels given smaller budgets because their aggregates average more tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: multipliers of each method's clip/budget parameters (log-spaced, the same for every method;
#: wide enough upward that a method whose best setting is "almost no clipping" can show it)
GRID_FACTORS: tuple[float, ...] = (1 / 3, 1.0, 3.0, 10.0)

#: per-level budget shape of ``fiberpo_domain_levels`` (coarse -> fine, trajectory last),
#: relative to the trajectory budget; for any depth the first entries are repeated
LEVEL_SHAPE_DOMAIN = (0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method."""

    #: name in results and figures
    name: str
    #: registry name in ``fibration_theory.losses``
    loss: str
    #: parameters (the loss defaults unless overridden here)
    defaults: tuple[tuple[str, Any], ...]
    #: parameters multiplied by the grid factor
    scaled: tuple[str, ...]
    #: the method gates upper levels of the hierarchy (domain, group, ...)
    hierarchical: bool = False
    #: budgets given per level (``c_plus``/``c_minus`` become lists)
    per_level: bool = False

    def params(self, factor: float = 1.0, depth: int = 2) -> dict[str, Any]:
        """Parameters at grid ``factor``; ``depth`` = number of levels above trajectories."""
        out = dict(self.defaults)
        for k in self.scaled:
            out[k] = out[k] * factor
        if self.per_level:
            shape = level_shape(depth)
            for k in ("c_plus", "c_minus"):
                out[k] = [round(out[k] * s, 12) for s in shape]
        return out


def level_shape(depth: int) -> tuple[float, ...]:
    """Relative per-level budgets for ``depth`` upper levels (length ``depth + 1``)."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    base = LEVEL_SHAPE_DOMAIN
    if depth + 1 <= len(base):
        return base[len(base) - depth - 1:]
    return (base[0],) * (depth + 1 - len(base)) + base


def _m(name: str, loss: str, scaled: tuple[str, ...], **kw) -> Method:
    from fibration_theory.losses.registry import get

    params = {k: v for k, v in get(loss).params.items() if k not in ("agg", "state_ids")}
    params = {k: v for k, v in params.items() if v is not None}
    hierarchical = kw.pop("hierarchical", False)
    per_level = kw.pop("per_level", False)
    params.update(kw)
    return Method(name, loss, tuple(sorted(params.items())), scaled, hierarchical, per_level)


def all_methods() -> dict[str, Method]:
    """Every method of the sequence study, by name."""
    ms = [
        _m("fiberpo", "fiberpo", ("c_plus", "c_minus", "eps")),
        _m("fiberpo_domain", "fiberpo_domain", ("c_plus", "c_minus", "eps"), hierarchical=True),
        _m("fiberpo_domain_levels", "fiberpo_domain", ("c_plus", "c_minus", "eps"),
           hierarchical=True, per_level=True),
        _m("grpo", "grpo", ("eps_low", "eps_high")),
        _m("dapo", "dapo", ("eps_low", "eps_high")),
        _m("gspo", "gspo", ("eps_low", "eps_high")),
        _m("ppo_clip", "ppo_clip", ("eps_low", "eps_high")),
        _m("cispo", "cispo", ("eps_high",)),
        _m("gmpo", "gmpo", ("eps_low", "eps_high")),
        _m("apc", "apc", ("delta",)),
        # the public unofficial plugin's FiberPO (alphadl/FibrationPO), not the paper's gate
        _m("fiberpo_clamp", "fiberpo_clamp", ("delta", "eps")),
    ]
    return {m.name: m for m in ms}


#: the FiberPO parameters with which regimes are labelled for methods that have no gate
REFERENCE_GATE = {"c_plus": 0.12, "c_minus": 0.05, "eps": 0.04}
