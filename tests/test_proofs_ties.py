"""Ties: APC-Obj's min-norm maximizer, and the tie certificates of V2 and V5 failing on a
wrong tie-break."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from fibration_theory.proofs import cert_ties
from fibration_theory.proofs.runner import certificate_rng

from fibration_theory import trust_region as tr


def test_min_norm_apc_maximizer_on_a_tied_state():
    """A = (1, 1, -2), n = (1, 3, 1): the two best actions tie. The plain search returns a
    vertex (all the positive mass on one of them); the min-norm point splits it as n_a, the
    closed form's ``tie_norm="pairs"`` split, at the same value."""
    adv, n, st = np.array([1.0, 1.0, -2.0]), np.array([1.0, 3.0, 1.0]), np.zeros(3, int)
    sol = tr.solve_tv_trpo(adv, n, st, gamma=0.5)
    vertex = tr.maximize_apc_exact(adv, n, st, radius=sol.t_star)
    tied = tr.maximize_apc_exact(adv, n, st, radius=sol.t_star, tie_break="pairs")
    np.testing.assert_allclose(tied.delta, sol.delta, rtol=0, atol=1e-10)
    assert tied.value == pytest.approx(vertex.value, rel=1e-9)
    assert np.max(np.abs(vertex.delta - sol.delta)) > 1e-3  # another maximizer
    tokens = tr.solve_tv_trpo(adv, n, st, gamma=0.5, tie_norm="tokens")
    by_tokens = tr.maximize_apc_exact(adv, n, st, radius=sol.t_star, tie_break="tokens")
    np.testing.assert_allclose(by_tokens.delta, tokens.delta, rtol=0, atol=1e-9)


def test_min_norm_of_a_flat_state_is_zero():
    res = tr.maximize_apc_state([0.0, 0.0], [3.0, 1.0], 0.1, tie_break="pairs")
    np.testing.assert_array_equal(res.delta, [0.0, 0.0])
    with pytest.raises(ValueError, match="tie_break"):
        tr.maximize_apc_state([1.0, -1.0], [1.0, 1.0], 0.1, tie_break="l1")


def test_tied_instances_have_ties_and_copies():
    inst = cert_ties.draw_tied_instance(np.random.default_rng(0), n_states=12, n_patterns=3)
    assert np.unique(inst.states).shape[0] == 12
    _, counts = np.unique(inst.adv.round(12), return_counts=True)
    assert counts.max() > 12  # many equal advantages across and within states


@pytest.mark.parametrize("cert", [cert_ties.check_tv_trpo_ties, cert_ties.check_apc_ties])
def test_tie_certificates_pass(cert):
    out = cert(certificate_rng(0, cert.__name__))
    assert out.status == "pass", out.detail


def test_v2_ties_fails_on_the_token_tie_break():
    wrong = functools.partial(tr.solve_tv_trpo, tie_norm="tokens")
    out = cert_ties.check_tv_trpo_ties(certificate_rng(0, "x"), closed_form=wrong)
    assert out.status == "fail", out.detail


def test_v5_ties_fails_without_the_tie_break():
    """The plain search returns a vertex of the optimal face: a maximizer of equal value that
    is not the min-norm one, so the comparison of maximizers must fail."""
    def vertex(adv, n, st, *, radius, tie_break=None):
        return tr.maximize_apc_exact(adv, n, st, radius=radius)

    out = cert_ties.check_apc_ties(certificate_rng(0, "x"), exact_search=vertex)
    assert out.status == "fail", out.detail
