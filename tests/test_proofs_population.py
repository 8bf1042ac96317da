"""F7: the population form of Lemmas B.2/D.12 over real policies."""

from __future__ import annotations

import numpy as np
from fibration_theory.proofs import cert_population as cp
from fibration_theory.proofs.runner import certificate_rng


def test_population_form_leaves_the_region():
    out = cp.finding_population_trust_region(certificate_rng(0, "t"))
    assert out.status == "pass", out.detail


def test_not_reproduced_when_the_update_stays_put():
    def zero(pi, n, adv, *, gamma):
        return np.zeros_like(pi)

    out = cp.finding_population_trust_region(certificate_rng(0, "t"), solver=zero)
    assert out.status == "fail", out.detail


def test_true_tv_has_the_half():
    pi = np.array([[0.5, 0.5]])
    assert cp.true_tv(pi, np.array([[0.2, -0.2]]))[0] == 0.1
