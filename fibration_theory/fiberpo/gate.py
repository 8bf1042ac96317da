"""Which path computes FiberPO's gate: the fast path by default, the closed form on request.

The switch is explicit: the ``fast`` argument of :func:`gate`, or the context manager
:func:`fast_path` for everything inside a block (the FiberPO objectives of
:mod:`fibration_theory.losses` read it). The closed form is the reference and what double
backward, data-parallel hierarchies and functorch transforms need; the fast path gives the
same values, gradients and regime statistics to float64 rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fibration_theory.fiberpo import closed
from fibration_theory.fiberpo import fast as _fast
from fibration_theory.fiberpo.plan import GatePlan
from fibration_theory.fiberpo.stats import Regimes

Tensor = torch.Tensor

__all__ = ["compile_enabled", "fast_enabled", "fast_path", "gate", "set_compile"]

_STATE = {"fast": True, "compiled": False}


def fast_enabled() -> bool:
    """Whether :func:`gate` (and so ``losses.compute``) takes the fast path by default."""
    return _STATE["fast"]


def compile_enabled() -> bool:
    """Whether the fast path uses its ``torch.compile``d kernels."""
    return _STATE["compiled"]


def set_compile(flag: bool) -> None:
    """Use ``torch.compile``d token kernels from now on (first call per shape compiles:
    seconds); :func:`fast_path` sets it for a block instead."""
    _STATE["compiled"] = bool(flag)


@contextlib.contextmanager
def fast_path(enabled: bool = True, *, compiled: bool | None = None) -> Iterator[None]:
    """Inside the block, :func:`gate` takes the fast path (``enabled=True``) or the closed
    form (``False``); ``compiled``, when given, turns the ``torch.compile``d kernels on or
    off. The previous setting is restored on exit."""
    old = dict(_STATE)
    _STATE["fast"] = bool(enabled)
    if compiled is not None:
        _STATE["compiled"] = bool(compiled)
    try:
        yield
    finally:
        _STATE.update(old)


def gate(log_ratio: Tensor, plan: GatePlan, *, stats: bool = False, fast: bool | None = None,
         masked: bool = False) -> tuple[Tensor, Regimes | None]:
    """``([B, T] G(r), regimes or None)``: the gated ratio of ``plan`` (eq 7 at depth 0, eqs
    31-32 deeper) and, with ``stats=True``, its regime statistics.

    ``fast``: the fast path (``True``, where :func:`.fast.supported` allows it), the closed form
    (``False``) or the current :func:`fast_path` setting (``None``); a plan with another
    rollback slope than the paper's (``plan.slope != 1``) takes the closed form. ``masked=True``
    promises ``log_ratio`` is 0 outside the mask and that the caller masks the gradient there
    (``losses.compute`` does both); otherwise it is masked here. ``log_ratio`` is not checked
    for finiteness: the callers validate it once.
    """
    x = log_ratio if masked else closed.masked(log_ratio, plan.hierarchy)
    use_fast = (fast_enabled() if fast is None else fast) and plan.slope == 1.0
    if use_fast and _fast.supported(x, plan.hierarchy):
        return _fast.fiber_gate(x, plan, stats=stats, compiled=compile_enabled())
    log_g, reg = closed.gate_log_ratio(x, plan, stats=stats)
    return log_g.exp(), reg
