"""Every objective at any finite log-ratio in every floating dtype: a finite value and gradient
equal to float64 on the same rounded inputs, or a ValueError naming ``log_prob``; never NaN,
never a silent inf.

The grid is objectives x dtypes x log-ratios (magnitudes up to 1e4, both signs) x advantage
signs; one token of row 0 carries the extreme log-ratio, the rest are moderate.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from numerics_cases import (
    DTYPE_IDS,
    DTYPES,
    F64,
    TOLERANCE,
    Case,
    float64_run,
    grad_error,
    literal_objective,
    must_overflow,
    run,
    value_error,
)

from fibration_theory import losses

#: 12 passes float16's e^11.09, 89 float32's e^88.7, 700 stays below float64's e^709.8
MAGNITUDES = (0.5, 5.0, 12.0, 20.0, 89.0, 100.0, 700.0, 1e4)
LOG_RATIOS = tuple(s * m for m in MAGNITUDES for s in (1.0, -1.0))
ADV_SIGNS = (1.0, -1.0)
OBJECTIVES = tuple(losses.available())
#: the extreme token: row 0, token 1
EXTREME = (0, 1)
#: central-difference step in log space (float64): truncation ~h^2, rounding ~1e-16/h
FD_STEP = 1e-6
#: relative to the size of the terms; 1e-16/h = 1e-10 rounding, 1e-3 headroom
FD_TOL = 1e-7
#: objectives whose value is not a function with their gradient (stop-gradients)
NO_FD = ("gspo_token", "cispo")

MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
OLD = torch.tensor([[-1.25, -0.5, -2.0, -0.75], [-1.5, -0.25, -3.0, 0.0],
                    [-0.5, -1.0, 0.0, 0.0]], dtype=F64)
MODERATE = torch.tensor([[0.1, 0.0, -0.15, 0.05], [-0.05, 0.2, 0.1, 0.0],
                         [0.15, -0.1, 0.0, 0.0]], dtype=F64)


@functools.cache
def case(x: float, adv_sign: float) -> Case:
    """Row 0 token 1 has log-ratio ``x``; row 0's advantages are ``adv_sign``, row 1's
    ``-adv_sign / 2``, row 2's ``0.75`` (every row one advantage, as for outcome rewards)."""
    lp = OLD + MODERATE
    lp[EXTREME] = OLD[EXTREME] + x
    adv = torch.tensor([[adv_sign] * 4, [-adv_sign / 2] * 4, [0.75] * 4], dtype=F64)
    return Case(MASK, lp, OLD.clone(), adv, (0, 0, 1), (0, 0, 0))


def _check_float64(name: str, c: Case, got) -> None:
    """float64 has no wider reference run: compare with the literal loops instead."""
    want = literal_objective(name, c, F64)
    if got.error is not None:
        assert not math.isfinite(want) or abs(want) > 1e300, \
            f"raised although the literal float64 value {want} is finite: {got.error}"
        return
    assert math.isfinite(want), f"literal float64 value {want}, library {got.loss}"
    scale = float(got.terms.abs().sum())
    assert abs(float(got.loss) + want) <= TOLERANCE[F64] * max(scale, 1e-300), \
        f"loss {float(got.loss)} vs literal {-want}"
    if name in NO_FD:
        return
    b, t = EXTREME
    shifted = []
    for h in (FD_STEP, -FD_STEP):
        lp = c.log_prob.clone()
        lp[b, t] += h
        shifted.append(literal_objective(name, Case(c.mask, lp, c.old_log_prob, c.advantages,
                                                    c.group_ids, c.domain_ids), F64))
    fd = -(shifted[0] - shifted[1]) / (2 * FD_STEP)
    assert abs(float(got.grad[b, t]) - fd) <= FD_TOL * max(scale, 1.0), \
        f"gradient {float(got.grad[b, t])} vs central difference {fd}"


def check(name: str, dtype: torch.dtype, x: float, adv_sign: float) -> str | None:
    """The property for one grid point: ``None`` when it holds, else what failed."""
    label = f"{name} {DTYPE_IDS[dtype]} log r={x:g} A{'+' if adv_sign > 0 else '-'}"
    c = case(x, adv_sign)
    try:
        got = run(name, c, dtype)
        if got.error is not None:
            assert got.error.startswith("log_prob"), f"error names no argument: {got.error}"
        else:
            assert got.loss.dtype == dtype and got.grad.dtype == dtype, \
                f"loss {got.loss.dtype}, gradient {got.grad.dtype}"
            assert torch.isfinite(got.loss), f"loss {got.loss}"
            assert torch.isfinite(got.grad).all(), f"gradient {got.grad.tolist()}"
        if dtype == F64:
            _check_float64(name, c, got)
            return None
        want = float64_run(name, c, dtype)
        may, must = must_overflow(want, dtype, c.mask)
        if got.error is not None:
            assert may, f"raised although the float64 result fits: {got.error}"
            return None
        assert not must, f"finite {got.loss} although float64 says it overflows"
        assert value_error(got, want) <= TOLERANCE[dtype], \
            f"loss {float(got.loss)} vs float64 {float(want.loss)}"
        assert grad_error(got, want) <= TOLERANCE[dtype], \
            f"gradient {got.grad.tolist()} vs float64 {want.grad.tolist()}"
    except Exception as e:  # noqa: BLE001 -- every failure of a grid point is collected
        return f"{label}: {type(e).__name__}: {e}"
    return None


GRID = [(x, a) for x in LOG_RATIOS for a in ADV_SIGNS]


@pytest.mark.parametrize("dtype", DTYPES, ids=[DTYPE_IDS[d] for d in DTYPES])
@pytest.mark.parametrize("name", OBJECTIVES)
def test_finite_exact_or_named(name, dtype):
    """Property: at every log-ratio of the grid and either advantage sign, the loss and the
    gradient are finite, in the input dtype, and equal float64 on the same rounded inputs
    within the dtype's tolerance; or, exactly where the float64 result does not fit the dtype,
    a ValueError names ``log_prob``."""
    failures = [f for x, a in GRID if (f := check(name, dtype, x, a)) is not None]
    assert not failures, f"{len(failures)} of {len(GRID)} grid points fail:\n" + "\n".join(failures)


if __name__ == "__main__":  # count the grid's cases and failures
    results = [check(n, d, x, a) for n in OBJECTIVES for d in DTYPES for x, a in GRID]
    bad = [r for r in results if r is not None]
    print(f"{len(results)} cases, {len(bad)} failures")
    for r in bad:
        print(" ", r)


def test_ratio_metrics_report_overflowing_trajectory_tv_as_inf_without_warning():
    """A trajectory whose mean log-ratio is past float64's range has TV ``inf``, silently."""
    import warnings

    from fibration_theory.hierarchy import Hierarchy
    from fibration_theory.metrics import ratio_metrics

    mask = torch.ones(2, 3, dtype=torch.bool)
    log_ratio = torch.tensor([[1e4, 1e4, 1e4], [0.0, 0.1, -0.1]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ratio_metrics(log_ratio, Hierarchy.from_padded(mask))
    assert out["tv/trajectory"] == math.inf
    assert out["ratio/max"] == math.inf
