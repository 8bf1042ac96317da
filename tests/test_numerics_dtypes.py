"""Per-dtype accuracy of every objective on moderate batches: float16, bfloat16 and float32
against float64 on the same rounded inputs, float64 against the literal loops.

``python tests/test_numerics_dtypes.py`` prints the worst errors per dtype and objective.
"""

from __future__ import annotations

import functools

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
    run,
    value_error,
)

from fibration_theory import losses

OBJECTIVES = tuple(losses.available())
SEEDS = (0, 1, 2, 3)
#: log-ratio half-widths: near-on-policy (GSPO's band matters) and far off-policy (clips active)
SCALES = (3e-3, 0.3, 1.5)


@functools.cache
def random_case(seed: int, scale: float, b: int = 5, t: int = 6) -> Case:
    """A ``[5, 6]`` batch with ragged rows (every row at least one token), log-ratios uniform
    in ``[-scale, scale]``, one advantage per row, nested group and domain ids."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    old = -torch.rand(b, t, generator=g, dtype=F64) * 3
    x = (torch.rand(b, t, generator=g, dtype=F64) * 2 - 1) * scale
    adv = torch.randn(b, 1, generator=g, dtype=F64).expand(b, t).clone()
    return Case(mask, old + x, old, adv, (0, 0, 1, 2, 2), (0, 0, 0, 1, 1))


def measure(dtype: torch.dtype) -> dict[str, tuple[float, float]]:
    """Worst ``(value error, gradient error)`` per objective over the seeds and scales (float64:
    value against the literal loops, gradient not measured, reported as 0)."""
    out = {}
    for name in OBJECTIVES:
        worst_v = worst_g = 0.0
        for seed in SEEDS:
            for scale in SCALES:
                c = random_case(seed, scale)
                got = run(name, c, dtype)
                assert got.error is None, f"{name} {DTYPE_IDS[dtype]} seed {seed}: {got.error}"
                if dtype == F64:
                    want = literal_objective(name, c, F64)
                    err = abs(float(got.loss) + want) / float(got.terms.abs().sum())
                    worst_v = max(worst_v, err)
                    continue
                want = float64_run(name, c, dtype)
                worst_v = max(worst_v, value_error(got, want))
                worst_g = max(worst_g, grad_error(got, want))
        out[name] = (worst_v, worst_g)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=[DTYPE_IDS[d] for d in DTYPES])
def test_every_objective_within_its_dtype_tolerance(dtype):
    """Property: on moderate random batches each objective's loss and gradient in ``dtype``
    equal float64 on the same rounded inputs (float64: the literal loops) within the dtype's
    named tolerance."""
    errors = measure(dtype)
    bad = {n: e for n, e in errors.items() if max(e) > TOLERANCE[dtype]}
    assert not bad, f"{DTYPE_IDS[dtype]} tolerance {TOLERANCE[dtype]:.3g} exceeded: {bad}"


def test_gspo_band_survives_bfloat16():
    """Property: GSPO's 3e-4 / 4e-4 band is resolved in bfloat16 as in float64: rows whose mean
    log-ratio lies outside it are clipped, those inside are not, and the gradients agree."""
    mask = torch.ones(4, 2, dtype=torch.bool)
    # row means 4.9e-4 (out), 1.2e-4 (in), -3.7e-4 (out), -0.6e-4 (in); old log-prob -2^-8, so
    # that log_prob = old + x is exact in bfloat16 (multiples of 2^-16 below 2^-8, of 2^-15
    # up to 2^-7) and the rounded inputs carry the intended log-ratios
    x = torch.tensor([[2 ** -11, 2 ** -11], [2 ** -12, 0.0], [-2 ** -11, -2 ** -12],
                      [-2 ** -13, 0.0]], dtype=F64)
    old = torch.full((4, 2), -2.0 ** -8, dtype=F64)
    adv = torch.tensor([[1.0] * 2, [1.0] * 2, [-1.0] * 2, [-1.0] * 2], dtype=F64)
    c = Case(mask, old + x, old, adv, (0, 1, 2, 3), (0, 0, 0, 0))
    for name in ("gspo", "gspo_token"):
        got, want = run(name, c, torch.bfloat16), float64_run(name, c, torch.bfloat16)
        assert got.out.metrics["clip_frac"] == want.out.metrics["clip_frac"] == 0.5, \
            (name, got.out.metrics["clip_frac"], want.out.metrics["clip_frac"])
        assert grad_error(got, want) <= TOLERANCE[torch.bfloat16], (name, got.grad, want.grad)
        assert torch.equal(got.out.rgf.gated_ratio.double() == 1.0, torch.zeros(4, 2) == 1), \
            (name, got.out.rgf.gated_ratio)  # no ratio rounded to 1
        assert got.grad[0].abs().max() == 0 and got.grad[1].abs().min() > 0, (name, got.grad)
    lp, old_b, _ = c.rounded(torch.bfloat16)
    assert torch.equal((lp.double() - old_b.double()), x), "the rounded inputs moved"


if __name__ == "__main__":  # the measured worst errors, for the record
    for d in DTYPES:
        errs = measure(d)
        worst = max(max(e) for e in errs.values())
        print(f"{DTYPE_IDS[d]}: tolerance {TOLERANCE[d]:.3g}, worst {worst:.3g}")
        for name, (v, g) in errs.items():
            print(f"  {name:15s} value {v:.3g}  gradient {g:.3g}")
