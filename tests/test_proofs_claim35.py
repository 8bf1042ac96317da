"""Sampled Claim 3.5 with F1's factor 2, and Remark 3.6's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from fibration_theory.proofs import cert_claim35 as c35
from fibration_theory.proofs.registry import Outcome


def test_passes_on_eq39():
    out = c35.check_claim_35_sampled(np.random.default_rng(0))
    assert out.status == "pass", out.detail
    assert "sqrt(eps/2)=0.0141" in out.detail and "sqrt(2 eps)=0.0283" in out.detail


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_fails_when_the_estimator_is_off_by_two(factor):
    """Halved (eq 37's TV): never above sqrt(eps/2), so F1's factor is not seen; doubled:
    above sqrt(2 eps)."""
    def est(counts, ratios):
        return factor * (counts * np.abs(ratios - 1)).sum(1) / counts.sum(1)

    assert c35.check_claim_35_sampled(np.random.default_rng(0), estimator=est).status == "fail"


def test_numpy_false_fails_an_outcome():
    assert Outcome(residual=0.0, tol=1.0, ok=np.False_).status == "fail"
