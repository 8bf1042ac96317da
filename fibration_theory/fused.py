"""The fast path's switch under its earlier name; the fast path is
:mod:`fibration_theory.fiberpo.fast`, the switch :func:`fibration_theory.fiberpo.fast_path`.

``with fused.disabled():`` runs the closed form inside the block (the reference, and what
double backward needs); ``set_compile(True)`` turns on the ``torch.compile``d kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fibration_theory.fiberpo.fast import FiberGate, supported
from fibration_theory.fiberpo.gate import compile_enabled, fast_enabled, fast_path, set_compile

__all__ = ["FiberGate", "compile_enabled", "disabled", "enabled", "set_compile", "supported"]


def enabled() -> bool:
    """Whether ``losses`` route FiberPO / FiberPO-Domain through the fast path."""
    return fast_enabled()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use the closed form (autograd) inside the block: ``fiberpo.fast_path(False)``."""
    with fast_path(False):
        yield
