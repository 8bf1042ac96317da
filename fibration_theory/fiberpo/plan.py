"""The gate plan: FiberPO's budgets and levels, validated and broadcast once per call.

FiberPO (Def 5.1, eqs 6-18, 80) gates the trajectory level alone; FiberPO-Domain (Def 6.4,
eqs 30-33) gates a chain of levels above the trajectories (domain, group, ... coarse to fine),
the trajectory level last. A :class:`GatePlan` holds, for one hierarchy, the gated levels, one
``(C+, C-)`` pair per level (a shared pair broadcast, or one entry per level: the per-level
budgets Section 6 describes, finding F4), ``eps``, and the per-row counts; the closed form,
the fast path and the regime statistics all read it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from fibration_theory.hierarchy import Hierarchy, Level
from fibration_theory.validation import check_nonneg

Tensor = torch.Tensor
Budget = float | Sequence[float]

__all__ = ["DELTA_RTOL", "Budget", "GatePlan", "check_delta", "gate_plan", "level_budgets"]

#: relative tolerance of the check ``C+ + C- = delta``: budgets are user floats, so a few ulps
DELTA_RTOL = 1e-9


def _plain(c) -> bool:
    """A Python ``float``/``int`` that is finite and ``>= 0`` (the common case, checked fast)."""
    return type(c) in (float, int) and math.isfinite(c) and c >= 0


def _is_scalar(c) -> bool:
    return isinstance(c, (int, float)) or (isinstance(c, Tensor) and c.dim() == 0) or (
        not isinstance(c, (list, tuple, Tensor)) and getattr(c, "ndim", 1) == 0)


def level_budgets(c: Budget, depth: int, name: str) -> tuple[float, ...]:
    """One finite budget ``>= 0`` per level, coarse to fine, trajectory last (``depth + 1``
    entries): a scalar is shared by every level, a sequence must have one entry per level.

    Raises:
        ValueError: naming ``name``, for a NaN, infinite, negative or non-real entry, or a
            sequence of the wrong length.
    """
    if _plain(c):
        return (float(c),) * (depth + 1)
    check_nonneg(c, name)
    if _is_scalar(c):
        return (float(c),) * (depth + 1)
    values = tuple(float(v) for v in c)
    if len(values) != depth + 1:
        raise ValueError(f"{name} has {len(values)} entries; this hierarchy needs one per level "
                         f"plus the trajectory level ({depth + 1})")
    return values


def check_delta(c_plus: Sequence[float], c_minus: Sequence[float], delta: Budget | None) -> None:
    """``C+ + C- = delta`` at every level (Def 5.1, eq 31), when ``delta`` is given."""
    if delta is None:
        return
    deltas = level_budgets(delta, len(c_plus) - 1, "delta")
    for k, (p, m, d) in enumerate(zip(c_plus, c_minus, deltas)):
        if abs(p + m - d) > DELTA_RTOL * max(1.0, abs(d)):
            raise ValueError(f"delta: c_plus + c_minus = {p} + {m} = {p + m} differs from "
                             f"delta = {d}" + (f" at level {k}" if len(c_plus) > 1 else ""))


@dataclasses.dataclass(frozen=True, eq=False)
class GatePlan:
    """Everything the gate needs besides the log-ratios, validated.

    ``levels``: the gated upper levels of ``hierarchy``, coarse to fine (empty for FiberPO);
    ``c_plus``, ``c_minus``: one budget per gated level plus the trajectory level (last);
    ``eps``: the fiber clip of eq 12; ``slope``: the rollback slope of ``g_agg`` per token,
    ``k = slope * T_k`` in eq 10 (1: the paper's ``k = T_k``; 0: a hard clip with no rollback,
    a variant beyond the paper). ``cache`` holds derived tensors (the fast path's constants per
    dtype), built on first use.
    """

    hierarchy: Hierarchy
    levels: tuple[Level, ...]
    c_plus: tuple[float, ...]
    c_minus: tuple[float, ...]
    eps: float
    slope: float = 1.0
    cache: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def depth(self) -> int:
        """Number of gated upper levels (0 for FiberPO)."""
        return len(self.levels)

    @property
    def names(self) -> tuple[str, ...]:
        """Level names, coarse to fine, ``"trajectory"`` last."""
        return tuple(lv.name for lv in self.levels) + ("trajectory",)

    def counts(self) -> list[Tensor]:
        """``[B]`` token count of each row's node at every gated level (``T_D``, ``T_g``, ...,
        ``T_tau``; the ``k`` of eq 10), not clamped."""
        return [lv.num_tokens[lv.ids] for lv in self.levels] + [self.hierarchy.lengths]


def gate_plan(hierarchy: Hierarchy, *, c_plus: Budget, c_minus: Budget, eps: float,
              levels: bool, delta: Budget | None = None, slope: float = 1.0) -> GatePlan:
    """The plan of FiberPO (``levels=False``: the trajectory level only, one number per
    budget) or of the FGH chain over every level of ``hierarchy`` (``levels=True``).

    ``delta``, when given, must equal ``c_plus + c_minus`` at every level. ``slope``: the
    rollback slope per token (``k = slope * T`` in eq 10; the paper's is 1), a finite number
    ``>= 0``.

    Raises:
        ValueError: naming the argument: a budget or ``eps`` not finite and ``>= 0``, a
            per-level sequence for FiberPO or of the wrong length for the hierarchy, or
            ``c_plus + c_minus != delta``.
    """
    if not isinstance(hierarchy, Hierarchy):
        raise ValueError(f"hierarchy must be a Hierarchy, got {type(hierarchy).__name__}")  # noqa: TRY004
    if not levels:
        for c, name in ((c_plus, "c_plus"), (c_minus, "c_minus")):
            if not _plain(c) and not _is_scalar(c):
                raise ValueError(f"{name} must be one number for FiberPO (the trajectory level "
                                 f"only), got {c!r}; per-level budgets are for fiberpo_domain")
    lvs = tuple(hierarchy.levels) if levels else ()
    cp = level_budgets(c_plus, len(lvs), "c_plus")
    cm = level_budgets(c_minus, len(lvs), "c_minus")
    if not _plain(eps):
        check_nonneg(eps, "eps")
        if not _is_scalar(eps):
            raise ValueError(f"eps must be one number, got {eps!r}")
    check_delta(cp, cm, delta)
    if slope != 1.0:
        check_nonneg(slope, "slope")
        if not _is_scalar(slope):
            raise ValueError(f"slope must be one number, got {slope!r}")
    return GatePlan(hierarchy, lvs, cp, cm, float(eps), float(slope))
