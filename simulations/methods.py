"""The methods compared in the experiments, their defaults and the parameters they tune.

A method is a registered objective of :mod:`fibration_theory.losses` plus fixed parameters;
the defaults are the library's (which follow each method's paper). ``tuned`` names the
parameters the tuning varies, each on its own (:mod:`fibration_theory.simulations.tuning`:
the same number of configurations for every method). ``fiberpo_domain_levels`` is
FiberPO-Domain with one budget pair per level (finding F4: eq 31 prints one pair shared by
every level); its budget at a level above the trajectories is the trajectory budget times
that level's scale, ``domain_scale`` (every level above the group level, default 0.5) or
``group_scale`` (the level just above the trajectories, default 0.75): the coarser levels get
smaller budgets because their aggregates average more tokens. The two scales are tuned
parameters of their own besides ``c_plus``, ``c_minus`` and ``eps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: per-level budget scales of ``fiberpo_domain_levels`` relative to the trajectory budget:
#: levels above the group level, and the group level (just above the trajectories)
LEVEL_SCALES: dict[str, float] = {"domain_scale": 0.5, "group_scale": 0.75}


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method."""

    #: name in results and figures
    name: str
    #: registry name in ``fibration_theory.losses``
    loss: str
    #: parameters (the loss defaults unless overridden here)
    defaults: tuple[tuple[str, Any], ...]
    #: parameters the tuning varies, each on its own (loss parameters, and for ``per_level``
    #: methods the level scales of ``LEVEL_SCALES``)
    tuned: tuple[str, ...]
    #: the method gates upper levels of the hierarchy (domain, group, ...)
    hierarchical: bool = False
    #: budgets given per level (``c_plus``/``c_minus`` become lists)
    per_level: bool = False

    @property
    def scaled(self) -> tuple[str, ...]:
        """The loss parameters among ``tuned`` (the ones a joint ``factor`` multiplies)."""
        return tuple(k for k in self.tuned if k not in LEVEL_SCALES)

    def tuned_defaults(self) -> dict[str, Any]:
        """The default value of every tuned parameter."""
        d = dict(self.defaults) | (LEVEL_SCALES if self.per_level else {})
        return {k: d[k] for k in self.tuned}

    def params(self, factor: float = 1.0, depth: int = 2,
               factors: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The loss parameters; ``depth`` = number of levels above trajectories.

        Each tuned parameter is its default times its factor: ``factors[name]`` where given,
        else ``factor`` for the loss parameters (a joint factor) and 1 for the level scales.
        """
        factors = dict(factors or {})
        unknown = sorted(set(factors) - set(self.tuned))
        if unknown:
            raise ValueError(f"factors: {self.name} does not tune {unknown} (it tunes "
                             f"{list(self.tuned)})")
        out = dict(self.defaults)
        for k in self.scaled:
            out[k] = out[k] * factors.get(k, factor)
        if self.per_level:
            scales = {k: v * factors.get(k, 1.0) for k, v in LEVEL_SCALES.items()}
            shape = level_shape(depth, **scales)
            for k in ("c_plus", "c_minus"):
                out[k] = [round(out[k] * s, 12) for s in shape]
        return out


def level_shape(depth: int, domain_scale: float = LEVEL_SCALES["domain_scale"],
                group_scale: float = LEVEL_SCALES["group_scale"]) -> tuple[float, ...]:
    """Relative per-level budgets for ``depth`` upper levels (coarse -> fine, length
    ``depth + 1``): ``domain_scale`` for every level above the group level, ``group_scale``
    for the group level, 1 for the trajectories."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if depth == 0:
        return (1.0,)
    return (domain_scale,) * (depth - 1) + (group_scale, 1.0)


def _m(name: str, loss: str, tuned: tuple[str, ...], **kw) -> Method:
    from fibration_theory.losses.registry import get

    params = {k: v for k, v in get(loss).params.items() if k not in ("agg", "state_ids")}
    params = {k: v for k, v in params.items() if v is not None}
    hierarchical = kw.pop("hierarchical", False)
    per_level = kw.pop("per_level", False)
    params.update(kw)
    if per_level:
        tuned = tuple(tuned) + tuple(k for k in LEVEL_SCALES if k not in tuned)
    missing = [k for k in tuned if k not in params and k not in LEVEL_SCALES]
    if missing:
        raise ValueError(f"tuned: {name} has no parameters {missing}")
    return Method(name, loss, tuple(sorted(params.items())), tuple(tuned), hierarchical,
                  per_level)


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
        # FiberPO with another rollback slope / a hard base clip (beyond the paper)
        _m("fiberpo_slope", "fiberpo_slope", ("c_plus", "c_minus", "eps")),
        _m("fiberpo_hard", "fiberpo_hard", ("c_plus", "c_minus", "eps")),
    ]
    return {m.name: m for m in ms}


#: the FiberPO parameters with which regimes are labelled for methods that have no gate
REFERENCE_GATE = {"c_plus": 0.12, "c_minus": 0.05, "eps": 0.04}
