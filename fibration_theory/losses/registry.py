"""One registry of objectives, one signature.

An objective is a pure function ``fn(batch: Batch, **params) -> Surrogate`` registered with
:func:`register`; it builds the RGF triple (``mu``, ``G(r)``, ``A``) and its own metrics.
:func:`fibration_theory.losses.compute` validates the input once, calls it, and turns the
RGF objective into a loss. Adding an objective is one decorated function.

Registration happens when the decorator runs, that is when the module defining the function
is imported. The toolkit's own objectives are imported by ``fibration_theory.losses``; an
objective in a new module of the toolkit needs its module added to the import line of
``fibration_theory/losses/__init__.py``, and one in a user's own module is registered by
importing that module (``import my_objectives``) before calling ``compute`` with its name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Literal, get_args

import torch

from fibration_theory.hierarchy import Hierarchy
from fibration_theory.rgf import RGF

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class Batch:
    """Validated input of an objective.

    ``log_ratio``: ``[B, T]`` ``log pi_theta - log pi_old`` (0 outside the mask; differentiable);
    ``advantages``: ``[B, T]`` (detached; 0 outside the mask); ``hierarchy``: its mask is the
    index set ``E``; ``state_ids``: ``[B, T]`` integer state of each token, or ``None`` (each
    token its own state), given only to objectives registered with ``states=True``;
    ``with_metrics``: whether the caller wants the objective's metrics (``False`` in hot
    loops: an objective may then skip them).
    """

    log_ratio: Tensor
    advantages: Tensor
    hierarchy: Hierarchy
    state_ids: Tensor | None = None
    with_metrics: bool = True

    @property
    def mask(self) -> Tensor:
        return self.hierarchy.mask

    @property
    def dtype(self) -> torch.dtype:
        return self.log_ratio.dtype


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """What an objective returns: its RGF instance, its own metrics, and (FiberPO's gate
    only) the gate's regime statistics (a :class:`fibration_theory.fiberpo.Regimes`)."""

    rgf: RGF
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    regimes: object | None = None


Objective = Callable[..., Surrogate]

#: How far a token's gradient reaches, finest first: the finest level outside which the
#: gradient at a token does not depend on other tokens' log-ratios (``token``: on its own
#: log-ratio only; ``trajectory``: block-diagonal over trajectories, Property 5.3; ``group``,
#: ``domain``: over prompt groups, domains; ``batch``: anywhere in the batch).
Coupling = Literal["token", "trajectory", "group", "domain", "batch"]
COUPLINGS: tuple[str, ...] = get_args(Coupling)


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    fn: Objective
    summary: str
    states: bool = False
    coupling: Coupling | None = None  # declared by the objective; None: undeclared

    @functools.cached_property
    def params(self) -> dict[str, object]:
        """Hyperparameters and their defaults (read once: ``compute`` checks them every call)."""
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in list(sig.parameters.values())[1:]}


REGISTRY: dict[str, Entry] = {}


def register(name: str, summary: str, *, states: bool = False,
             coupling: Coupling | None = None) -> Callable[[Objective], Objective]:
    """Register ``fn`` under ``name`` when the decorated definition runs (on import of its
    module; see the module docstring); a duplicate name is an error, never an overwrite.

    ``states=True``: the objective reads ``batch.state_ids`` (``compute(..., state_ids=)``);
    other objectives refuse state ids. ``coupling`` declares the coarsest level through which
    the objective's gradient at a token may depend on other tokens' log-ratios with its
    default hyperparameters (one of :data:`COUPLINGS`; ``fibration certify`` checks it against
    the measured Jacobian).
    """
    if coupling is not None and coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS} or None, got {coupling!r}")

    def wrap(fn: Objective) -> Objective:
        if name in REGISTRY:
            raise ValueError(f"objective {name!r} is already registered "
                             f"(by {REGISTRY[name].fn.__module__})")
        REGISTRY[name] = Entry(name, fn, summary, states, coupling)
        return fn

    return wrap


def get(name: str) -> Entry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"name: unknown objective {name!r}; available: "
                         f"{', '.join(sorted(REGISTRY))}") from None
