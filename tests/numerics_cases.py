"""Shared pieces of the dtype and extreme-ratio tests: batches, runs, tolerances, errors.

An objective is run on inputs rounded to a dtype; its float64 counterpart runs on the *same
rounded inputs* converted exactly to float64, so the only differences measured are those of
the computation, never of the input rounding.

Errors are normwise, which is what a gradient step sees:

* value: ``|loss - loss64| / S`` with ``S = sum_i |mu_i G_i A_i|`` (float64), the size of the
  terms the loss sums, so that cancellation in the sum does not inflate the error;
* gradient: ``max_i |g_i - g64_i| / max_i |g64_i|``.
"""

from __future__ import annotations

import dataclasses
import math
from unittest import mock

import numpy as np
import reference as ref
import torch

from fibration_theory import Hierarchy, losses

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = (F16, BF16, F32, F64)
DTYPE_IDS = {F16: "float16", BF16: "bfloat16", F32: "float32", F64: "float64"}

#: float32 work: sums of at most 30 terms, n u = 30 * 2^-24 = 1.8e-6 (measured worst 4.9e-7)
TOL_F32 = 2e-6
#: half inputs run in float32, then the loss and each gradient entry are rounded once to
#: float16: half an ulp, 2^-11 relative, plus the float32 work (measured worst 4.3e-4)
TOL_F16 = 2.0**-11 + 1e-5
#: the same for bfloat16, whose 8-bit significand makes half an ulp 2^-8 (measured 3.6e-3)
TOL_BF16 = 2.0**-8 + 1e-5
#: float64 against the literal loops: summation orders differ, n u = 30 * 2^-53 = 3.3e-15
#: (measured worst 3.8e-16)
TOL_F64 = 1e-14
TOLERANCE = {F16: TOL_F16, BF16: TOL_BF16, F32: TOL_F32, F64: TOL_F64}

#: a result within this factor of a dtype's largest value may either overflow or not, since
#: the library and the float64 reference round differently at the edge
EDGE_SLACK = 2.0


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The documented compute precision: float32 for half inputs, else the input dtype."""
    return F32 if dtype in (F16, BF16) else dtype


@dataclasses.dataclass(frozen=True)
class Case:
    """A padded batch in float64 before rounding (``mask`` ``[B, T]``; the rest alike)."""

    mask: torch.Tensor
    log_prob: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    group_ids: tuple[int, ...]
    domain_ids: tuple[int, ...]

    def rounded(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_prob, old_log_prob, advantages)`` rounded to ``dtype`` (no grad)."""
        return (self.log_prob.to(dtype), self.old_log_prob.to(dtype), self.advantages.to(dtype))


@dataclasses.dataclass(frozen=True)
class Run:
    """One ``losses.compute`` and its backward; ``error`` is the ValueError text if it raised."""

    error: str | None
    loss: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    out: losses.LossOutput | None = None

    @property
    def terms(self) -> torch.Tensor:
        """``[B, T]`` ``mu G A`` in float64."""
        rgf = self.out.rgf
        return (rgf.weights * rgf.gated_ratio * rgf.advantages).detach().double()


def hierarchy_for(name: str, case: Case) -> Hierarchy | None:
    if name != "fiberpo_domain":
        return None
    return Hierarchy.from_padded(case.mask, list(case.group_ids), list(case.domain_ids))


def run(name: str, case: Case, dtype: torch.dtype, inputs=None, **params) -> Run:
    """``compute`` on ``case`` rounded to ``dtype`` (or on the given rounded ``inputs``, cast
    exactly to ``dtype``), then ``backward``."""
    lp, old, adv = case.rounded(dtype) if inputs is None else (t.to(dtype) for t in inputs)
    lp = lp.detach().requires_grad_(True)
    try:
        out = losses.compute(name, lp, old, adv, case.mask, hierarchy=hierarchy_for(name, case),
                             **params)
    except ValueError as e:
        return Run(str(e))
    out.loss.backward()
    return Run(None, out.loss.detach(), lp.grad, out)


def float64_run(name: str, case: Case, dtype: torch.dtype, **params) -> Run:
    """The float64 computation on ``case``'s inputs rounded to ``dtype``."""
    return run(name, case, F64, inputs=case.rounded(dtype), **params)


def literal_objective(name: str, case: Case, dtype: torch.dtype) -> float:
    """``J`` of tests/reference.py (float64 loops) on the inputs rounded to ``dtype``;
    ``inf``/``-inf`` where the float64 formula itself overflows."""
    lp, old, adv = (t.double() for t in case.rounded(dtype))
    x, a, m = (lp - old).numpy(), adv.numpy(), case.mask.numpy()
    # the loops use math.exp, which raises past e^709; here it returns inf like np.exp, so
    # a clipped sequence ratio of e^2500 still gives the clipped value
    with np.errstate(over="ignore", invalid="ignore"), \
            mock.patch.object(ref, "math", _InfMath()):
        if name == "fiberpo_domain":
            g = ref.fiberpo_domain_G(x, m, case.group_ids, case.domain_ids, .12, .05, .04)
            return float(ref.seq_mean_token_mean(g * a, m))
        return float(ref.objective(name, x, a, m))


class _InfMath:
    """``math`` whose ``exp`` overflows to ``inf`` instead of raising."""

    def __getattr__(self, attr):
        return getattr(math, attr)

    @staticmethod
    def exp(v: float) -> float:
        return float(np.exp(v))


def value_error(got: Run, want: Run) -> float:
    scale = float(want.terms.abs().sum())
    diff = abs(float(got.loss) - float(want.loss))
    return diff / scale if scale > 0 else diff


def grad_error(got: Run, want: Run) -> float:
    g, w = got.grad.double(), want.grad
    scale = float(w.abs().max())
    diff = float((g - w).abs().max())
    return diff / scale if scale > 0 else diff


def max_abs(t: torch.Tensor, mask: torch.Tensor) -> float:
    return float(t.detach().double()[mask].abs().max())


def must_overflow(want: Run, dtype: torch.dtype, mask: torch.Tensor) -> tuple[bool, bool]:
    """``(may, must)``: whether the float64 result on the rounded inputs lies beyond the range
    the documented contract requires (the gated ratio in the work dtype; the terms, the loss
    and the gradient in the input dtype), within :data:`EDGE_SLACK` of it, or inside it."""
    if want.error is not None:
        return True, True
    big_work = torch.finfo(work_dtype(dtype)).max
    big_in = torch.finfo(dtype).max
    ratios = [max_abs(want.out.gated_ratio, mask) / big_work,
              max_abs(want.terms, mask) / big_in, abs(float(want.loss)) / big_in,
              max_abs(want.grad, mask) / big_in]
    worst = max(ratios)
    return worst > 1 / EDGE_SLACK, worst > EDGE_SLACK
