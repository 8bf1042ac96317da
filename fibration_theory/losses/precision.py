"""Precision policy of ``losses.compute``: the work dtype, the opt-in log-ratio clamp, and the
check that names a ratio whose exact value does not fit the dtype.

* **Work dtype.** float16 and bfloat16 inputs are computed in float32 and the loss is cast
  back to the input dtype (its gradient reaches the half-precision ``log_prob`` through the
  cast). bfloat16 cannot represent GSPO's band (``1 + 4e-4`` rounds to 1), float32 can; the
  returned RGF triple stays in the work dtype. float32 and float64 are computed as given.
* **Overflow.** Every objective forms its gated ratio without evaluating an ``exp`` on a
  branch it selects away, so a clipped token at any log-ratio is finite with a zero gradient.
  Where the exact value itself does not fit (an unclipped ``e^1e4 * A``), :func:`check_fits`
  raises a ``ValueError`` naming ``log_prob``, the row and the token, and the two remedies.
* **Clamp.** ``log_ratio_clamp=c`` clamps ``log_prob - old_log_prob`` to ``[-c, c]`` before
  the objective sees it, as verl does with ``c = 20``. It is off by default: it changes the
  objective (a clamped token's ratio is ``e^c`` and its gradient 0).
"""

from __future__ import annotations

import math

import torch

from fibration_theory.losses.registry import REGISTRY
from fibration_theory.rgf import RGF
from fibration_theory.validation import check_positive

Tensor = torch.Tensor

#: dtypes computed in float32 (float32's 24-bit significand resolves a 1e-4 band; 8 bits don't)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ``losses.compute`` computes in for inputs of ``dtype``."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def clamp_log_ratio(log_ratio: Tensor, clamp) -> Tensor:
    """``log_ratio`` clamped to ``[-clamp, clamp]`` (``clamp=None``: unchanged)."""
    if clamp is None:
        return log_ratio
    c = check_positive(clamp, "log_ratio_clamp")
    return log_ratio.clamp(-c, c)


def check_fits(name: str, rgf: RGF, loss: Tensor, log_ratio: Tensor, mask: Tensor,
               dtype: torch.dtype) -> None:
    """Raise where the objective's value does not fit: a gated ratio ``G`` beyond the work
    dtype, or a term ``mu G A`` or the loss beyond the input ``dtype``.

    Every objective's gradient entry is at most the largest ``|mu G A|`` of its row (``dG/d
    log r`` is ``G`` or ``G / T_tau`` on a passing token and 0 on a clipped one; soft gates are
    smaller still), so a finite term bounds the gradient too. One host sync.
    """
    big = torch.finfo(dtype).max
    with torch.no_grad():
        g = rgf.gated_ratio.detach()
        term = (rgf.weights * g * rgf.advantages).detach()
        g_bad = mask & ~torch.isfinite(g)
        bad = g_bad | (mask & (~torch.isfinite(term) | (term.abs() > big)))
        if not bool(bad.any() | ~torch.isfinite(loss.detach().to(dtype))):
            return
        # name the token with the largest log-ratio among the offending ones (where only the
        # sum overflows: among those whose term is within 2x of the largest)
        size = term.abs().nan_to_num(nan=math.inf)
        if not bool(bad.any()):
            bad = mask & (size >= 0.5 * size[mask].max())
        score = torch.where(bad, log_ratio.detach().abs(), torch.full_like(g, -1.0))
        b, t = (int(i) for i in divmod(int(score.argmax()), mask.shape[1]))
        x, a = float(log_ratio[b, t]), float(rgf.advantages[b, t])
        gi, ti = float(g[b, t]), float(term[b, t])
    kind, work = str(dtype).removeprefix("torch."), str(g.dtype).removeprefix("torch.")
    if bool(g_bad[b, t]):
        what = f"its gated ratio G(r) overflows {work}, the dtype it is computed in"
    elif not math.isfinite(ti) or abs(ti) > big:
        what = (f"its term mu*G*A = {ti:.4g} (G = {gi:.4g}) exceeds {kind}'s largest value "
                f"{big:.4g}")
    else:
        what = f"the loss, a sum of such terms ({ti:.4g} here), exceeds {kind}'s range {big:.4g}"
    dual_clip_objectives = [n for n, e in sorted(REGISTRY.items()) if "dual_clip" in e.params]
    if name in dual_clip_objectives:
        dual = "pass dual_clip=3 (Ye et al. 2020) to bound the ratio of negative advantages"
    else:
        dual = (f"use an objective with a dual clip ({', '.join(dual_clip_objectives)} take "
                f"dual_clip=3, Ye et al. 2020)")
    raise ValueError(
        f"log_prob: objective {name!r} overflows at log_prob[{b}, {t}] (row {b}, token {t}): "
        f"log_prob - old_log_prob = {x:.6g} with advantage {a:.6g}, and {what}. The exact "
        f"value does not fit {kind}, so no finite loss would be right. Either {dual}, or clamp "
        f"the log-ratio with losses.compute(..., log_ratio_clamp=20.0) as verl does (off by "
        f"default: it changes the objective and zeroes the gradient of clamped tokens).")
