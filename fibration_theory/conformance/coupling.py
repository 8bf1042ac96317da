"""The ``coupling`` property: how far a token's gradient reaches (Properties 5.3-5.5).

For a drawn batch, the Jacobian of the gradient ``H_ij = d g_i / d x_j`` (``g = d loss /
d log_prob``, ``x`` the log-ratios) is estimated column by column with central differences
of the autograd gradient, ``(g(x + h e_j) - g(x - h e_j)) / 2h``. Differences rather than
double backward: a fused gate may be differentiable once only, and a coupling through a
regime switch (a jump of ``g_i`` as ``x_j`` crosses a budget) is a dependence that a
second derivative, zero almost everywhere, would miss. Each entry above ``COUPLING_RTOL``
of the largest gradient entry couples tokens ``i`` and ``j`` at the finest level that holds
both; the batch's level is the coarsest such level.
"""

from __future__ import annotations

from typing import Any

import torch

from fibration_theory import losses
from fibration_theory.conformance import strategies as S
from fibration_theory.conformance.properties import Property
from fibration_theory.conformance.search import Budget, Objective, Result, Violation, search

Tensor = torch.Tensor

#: the levels, finest first (``losses.COUPLINGS``)
LEVELS: tuple[str, ...] = losses.COUPLINGS

#: step of the central differences: large against the float64 rounding of ``g`` (an
#: uncoupled entry then reads ~1e-16 / 1e-6 = 1e-10 of ``|g|``), small against the budgets
STEP = 1e-6

#: an entry ``|H_ij| > COUPLING_RTOL * max |g|`` is a coupling; real couplings are
#: ``O(|g| / T_tau)`` (Property 5.5) and rounding noise ~1e-10 ``|g|``
COUPLING_RTOL = 1e-6


def pair_level(case: S.Case, i_row: int, j_row: int) -> int:
    """Index in :data:`LEVELS` of the finest level holding rows ``i_row`` and ``j_row``
    (tokens of one row: ``trajectory``)."""
    if i_row == j_row:
        return 1
    if int(case.group_ids[i_row]) == int(case.group_ids[j_row]):
        return 2
    if int(case.domain_ids[i_row]) == int(case.domain_ids[j_row]):
        return 3
    return 4


def measure(objective: Objective, case: S.Case) -> tuple[int, dict[str, Any] | None]:
    """``(level index, witness)``: the coarsest coupling seen in ``case`` and the entry that
    shows it (``None`` for ``token``)."""
    base = objective.evaluate(case).grad
    scale = float(base.abs().max())
    if scale == 0.0:
        return 0, None
    tokens = case.mask.nonzero().tolist()
    level, witness = 0, None
    for b, t in tokens:
        up, down = case.log_ratio.clone(), case.log_ratio.clone()
        up[b, t] += STEP
        down[b, t] -= STEP
        col = (objective.evaluate(case.replace(log_ratio=up)).grad
               - objective.evaluate(case.replace(log_ratio=down)).grad) / (2 * STEP)
        col[b, t] = 0.0
        col = torch.where(case.mask, col, torch.zeros_like(col))
        for bi, ti in (col.abs() > COUPLING_RTOL * scale).nonzero().tolist():
            lv = pair_level(case, bi, b)
            if lv > level:
                level, witness = lv, {"gradient_at": [bi, ti], "log_ratio_moved": [b, t],
                                      "d_gradient": float(col[bi, ti]), "max_gradient": scale}
    return level, witness


def run(objective: Objective, budget: Budget) -> Result:
    declared = losses.coupling(objective.name)
    limit = LEVELS.index(declared) if declared is not None else len(LEVELS) - 1

    def check(case: S.Case) -> int:
        level, witness = measure(objective, case)
        if level > limit:
            raise Violation(f"the gradient couples tokens at the {LEVELS[level]} level; the "
                            f"objective declares {declared}", measured=LEVELS[level],
                            declared=declared, **(witness or {}))
        return level

    counter, observed = search(S.batches(), check, budget, lambda c: {"batch": c.to_dict()})
    seen = max(observed, default=0)
    if counter is not None:
        return Result("fails", counter["measured"], counter)
    return Result("holds" if declared is not None else "n/a", LEVELS[seen], None)


COUPLING = Property(
    "coupling", "the finest level outside which a token's gradient is independent",
    "Properties 5.3-5.5, Prop 5.2 (eq 20)",
    "The finest of `token`, `trajectory`, `group`, `domain`, `batch` outside which the "
    "gradient at a token does not depend on other tokens' log-ratios. It is measured from "
    "the Jacobian of the gradient, `d g_i / d log r_j`, estimated by central differences of "
    "the autograd gradient (step `1e-6`, so that a dependence through a regime switch counts "
    "too) on drawn batches with domains and prompt groups; an entry above `COUPLING_RTOL` of "
    "the largest gradient entry couples `i` and `j` at the finest level holding both. The "
    "value is the coarsest level seen; it is checked against the level the objective "
    "declares (`register(..., coupling=...)`): a batch that couples more coarsely fails, "
    "with the entry that shows it; an undeclared objective gets `n/a` and the measured "
    "level. FiberPO is block-diagonal over trajectories (Property 5.3), identity on-policy "
    "(Property 5.4), and couples tokens of a trajectory at `1/T_tau` (Property 5.5); "
    "FiberPO-Domain is block-diagonal over domains (Sec 6, eq 33).",
    run)
