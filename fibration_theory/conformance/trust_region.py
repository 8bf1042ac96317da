"""The ``trust_region`` property: what the gradient does as a ratio leaves the budget.

One trajectory of ``SWEEP_LENGTH`` tokens, every advantage ``A = +1`` (or ``-1``). Either
every token's log-ratio (``trajectory``) or the first token's alone (``token``) moves from 0
in the direction its advantage favours (up for ``A > 0``, down for ``A < 0``) to
``|log r| = SWEEP_LIMIT``. At each point the drift gradient

    phi(r) = sum_{moved t} dJ/d log r_t  /  sum_{moved t} mu_t r_t A_t      (J = -loss)

compares the objective's gradient along the drift with the unclipped importance-sampling
gradient of the same weights (``phi = 1`` for it at every ``r``). A sweep's class:
``restorative`` when ``phi < -ZERO_TOL`` somewhere (ascent pushes the ratio back toward 1,
the rollback of Sec 5.1 and App C.2), else ``hard`` when ``|phi| <= ZERO_TOL`` somewhere (the
gradient vanishes, a clip), else ``soft`` when ``phi < 1 - SOFT_TOL`` somewhere (attenuated,
never zero), else ``none``. Thresholds are located on the grid and refined between grid points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fibration_theory import losses
from fibration_theory.conformance import strategies as S
from fibration_theory.conformance.properties import Property
from fibration_theory.conformance.search import Budget, Objective, Result, error_text

#: length of the swept trajectory (long enough that one token is not the whole trajectory)
SWEEP_LENGTH = 4

#: the sweep reaches |log r| = 3 (r from 1/20 to 20): far past every usual budget, short of
#: where soft gates underflow to an exact 0
SWEEP_LIMIT = 3.0

#: grid of |log r|: log-spaced from 1e-5 (below GSPO's 3e-4 band) to the limit
GRID = np.geomspace(1e-5, SWEEP_LIMIT, 240)

#: |phi| at or below this is a vanished gradient (a clipped token gives an exact 0; rounding
#: of a sum of cancelling terms stays near 1e-16)
ZERO_TOL = 1e-12

#: phi below 1 - SOFT_TOL is attenuated (float64 rounding of phi is ~1e-15)
SOFT_TOL = 1e-9

#: a threshold is refined by REFINE_ROUNDS rounds of REFINE_POINTS points between the last
#: grid point without and the first with the behaviour: the grid's 5 % spacing shrinks to
#: 5e-2 / 16^5 ~ 5e-8, and ratios are reported to 7 digits
REFINE_POINTS, REFINE_ROUNDS = 15, 5

CLASSES = ("none", "soft", "hard", "restorative")  # weakest to strongest control

TESTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "restorative": lambda p: p < -ZERO_TOL,
    "hard": lambda p: np.abs(p) <= ZERO_TOL,
    "soft": lambda p: p < 1 - SOFT_TOL,
}


def drift_gradients(objective: Objective, mode: str, sign: float, ys: np.ndarray,
                    together: bool) -> np.ndarray:
    """``phi`` at each ``|log r| = ys[k]``.

    ``together``: one batch whose row ``k`` is the trajectory at ``ys[k]``, each row its own
    group and domain (exact for an objective that couples no more than domains: ``mu``'s
    batch-wide counts cancel in ``phi``); otherwise one batch per point.
    """
    if not together:
        return np.concatenate([drift_gradients(objective, mode, sign, ys[k:k + 1], True)
                               for k in range(len(ys))])
    n = len(ys)
    mask = torch.ones(n, SWEEP_LENGTH, dtype=torch.bool)
    moved = mask.clone() if mode == "trajectory" else \
        (torch.arange(SWEEP_LENGTH)[None] == 0).expand(n, SWEEP_LENGTH)
    y = torch.as_tensor(ys, dtype=torch.float64)[:, None].expand(n, SWEEP_LENGTH)
    x = torch.where(moved, sign * y, torch.zeros_like(y))
    ids = torch.arange(n)
    case = S.Case(x, torch.full((n, SWEEP_LENGTH), sign, dtype=torch.float64), mask, ids, ids)
    ev = objective.evaluate(case)
    zero = torch.zeros_like(x)
    drift = -torch.where(moved, ev.grad, zero).sum(1)
    vanilla = torch.where(moved, ev.weights * x.exp() * sign, zero).sum(1)
    return (drift / vanilla).numpy()


def _threshold(phi: Callable[[np.ndarray], np.ndarray], test, phis: np.ndarray,
               sign: float) -> float:
    """The ratio where ``test`` first holds along the sweep, refined between grid points."""
    i = int(np.argmax(test(phis)))
    if i == 0:
        return _ratio(sign, float(GRID[0]))
    lo, hi = float(GRID[i - 1]), float(GRID[i])
    for _ in range(REFINE_ROUNDS):
        ys = np.linspace(lo, hi, REFINE_POINTS + 2)[1:-1]
        hit = test(phi(ys))
        k = int(np.argmax(hit)) if hit.any() else len(ys)
        lo, hi = (float(ys[k - 1]) if k > 0 else lo), (float(ys[k]) if k < len(ys) else hi)
    return _ratio(sign, hi)


def sweep(objective: Objective, mode: str, sign: float, together: bool = True
          ) -> dict[str, Any]:
    """Class and thresholds (as ratios ``r``) of one sweep."""
    def phi(ys: np.ndarray) -> np.ndarray:
        return drift_gradients(objective, mode, sign, ys, together)

    phis = phi(GRID)
    if not np.all(np.isfinite(phis)):
        y = float(GRID[int(np.argmin(np.isfinite(phis)))])
        return {"class": "invalid", "non_finite_at_ratio": _ratio(sign, y)}
    cls = next((c for c in ("restorative", "hard", "soft") if TESTS[c](phis).any()), "none")
    out: dict[str, Any] = {"class": cls, "min_phi": _round(float(phis.min()))}
    if cls == "none":
        return out
    out["onset_ratio"] = _threshold(phi, TESTS["soft"], phis, sign)
    if cls == "restorative":
        out["restore_from_ratio"] = _threshold(phi, TESTS["restorative"], phis, sign)
    if TESTS["hard"](phis).any():
        out["zero_from_ratio"] = _threshold(phi, TESTS["hard"], phis, sign)
    return out


def _ratio(sign: float, y: float) -> float:
    return _round(math.exp(sign * y))


def _round(v: float) -> float:
    return float(f"{v:.7g}") + 0.0


SWEEPS = (("trajectory", 1.0), ("trajectory", -1.0), ("token", 1.0), ("token", -1.0))


def run(objective: Objective, budget: Budget) -> Result:
    del budget  # a deterministic sweep
    declared = losses.coupling(objective.name)
    together = declared is not None and declared != "batch"
    try:
        sweeps = {f"{mode}, A{'>' if s > 0 else '<'}0": sweep(objective, mode, s, together)
                  for mode, s in SWEEPS}
    except Exception as exc:  # noqa: BLE001 -- raising on a one-row batch fails
        return Result("fails", None, {"message": error_text(exc)})
    bad = [k for k, v in sweeps.items() if v["class"] == "invalid"]
    if bad:
        return Result("fails", {"class": "invalid", "sweeps": sweeps},
                      {"message": f"non-finite drift gradient in sweep {bad[0]}",
                       "sweep": bad[0], **sweeps[bad[0]]})
    cls = max((v["class"] for v in sweeps.values()), key=CLASSES.index)
    value = {"class": cls, "sweeps": sweeps}
    if cls == "none":
        return Result("fails", value, {
            "message": f"the drift gradient is never attenuated up to |log r| = {SWEEP_LIMIT}",
            "ratio": _ratio(1.0, SWEEP_LIMIT), "phi": min(v["min_phi"] for v in sweeps.values())})
    return Result("holds", value, None)


TRUST_REGION = Property(
    "trust_region", "the gradient is controlled once a ratio leaves the budget",
    "Sec 5.1 (eq 10), App C.2 (eqs 60-63)",
    "What happens to a token's (or its whole trajectory's) gradient as its ratio leaves the "
    "budget in the direction its advantage favours. On one trajectory of 4 tokens with "
    "advantage +1 (or -1), the log-ratio of every token (or of the first one) is swept from "
    "0 to `|log r| = 3`, and the drift gradient `phi`, the objective's gradient along the "
    "move divided by the unclipped importance-sampling gradient `sum mu r A`, is read at 240 "
    "log-spaced points (as the rows of one batch, each its own domain, when the objective "
    "declares a coupling finer than `batch`), thresholds refined to about 1e-7. The class "
    "is `restorative` when `phi < 0` somewhere (gradient ascent pushes the ratio back toward 1: the rollback "
    "regime of `g_agg`, slope `-T_tau`, Sec 5.1 eq 10, lifted from APC-Obj's regime (R), App "
    "C.2 eq 62), `hard` when `phi = 0` somewhere (the gradient vanishes: a clip, or the "
    "zeroed regimes (Z), eq 63), `soft` when it is attenuated but never 0, `none` when "
    "`phi` stays 1; the strongest over the four sweeps is reported, with each sweep's onset "
    "ratio (attenuation begins), restoring ratio and zeroing ratio. It holds unless the "
    "class is `none` (no trust region).",
    run)
