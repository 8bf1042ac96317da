"""F8: Remark E.2's product structure needs equal fibers (Remark 4.1's padding)."""

from __future__ import annotations

import numpy as np
from fibration_theory.proofs import cert_triviality as ct


def test_fibers_have_the_trajectory_lengths():
    sizes = ct.fiber_sizes(ct.batch([3, 1, 2], [0, 0, 1], pad=False))
    assert sorted(sizes.tolist()) == [1, 1, 2, 2, 3, 3]  # each trajectory in both channels
    assert set(ct.fiber_sizes(ct.batch([3, 1, 2], [0, 0, 1], pad=True)).tolist()) == {3}


def test_finding_reproduces_and_fails_on_a_product():
    assert ct.finding_triviality(np.random.default_rng(0)).status == "pass"
    product = ct.finding_triviality(np.random.default_rng(0), sizes_fn=lambda h: np.ones(4))
    assert product.status == "fail"
