"""Property 5.5 in V11 is read off autograd, so a gate with a stronger coupling shows it."""

from __future__ import annotations

import re

import numpy as np
from fibration_theory.proofs import cert_fiberpo_jacobian as cj

from fibration_theory import gating


def coupled_twice(log_ratio, h, *, c_plus, c_minus, eps):
    """FiberPO's log G plus the trajectory's mean log-ratio: (b) grows by 1/T everywhere."""
    mask = h.mask.to(log_ratio.dtype)
    mean = (log_ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
    return gating.fiberpo_log_ratio(log_ratio, h, c_plus=c_plus, c_minus=c_minus,
                                    eps=eps) + mean


def _tb(detail: str) -> float:
    return float(re.search(r"max T\|\(b\)\| outside rollback ([0-9.]+)", detail).group(1))


def test_property_5_5_from_autograd():
    good = cj.check_jacobian(np.random.default_rng(0), n_instances=6)
    bad = cj.check_jacobian(np.random.default_rng(0), n_instances=6, closed_fn=coupled_twice,
                            jacobian_fn=lambda *a: cj.jacobian_eq20(*a)[0])
    assert good.status == "pass" and _tb(good.detail) <= 1.0
    assert bad.status == "fail" and _tb(bad.detail) > 1.0, bad.detail
