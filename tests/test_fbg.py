"""Generic Fiber Bundle Gating (Def 4.3, eq 4) and FiberPO's App E.5.4 bundle against eq 80."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from fibration_theory.proofs import cert_fbg
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import nested_log_ratios

from fibration_theory import gating
from fibration_theory.bundles import (
    batch_strata,
    fbg_fiberpo_log_ratio,
    fiberpo_bundle,
    flatten_tokens,
    g_agg_reference,
)
from fibration_theory.fbg import FBG, Fibration, ReflectingKernel, identity_gate, pointwise
from fibration_theory.hierarchy import Hierarchy

# Two float64 routes to the same log G differ by O(T) rounded terms of size <= (T+1) C.
CLOSED_FORM_TOL = 1e-12
# Products of 0/1 matrices with probability vectors: a few ulps.
LINEAR_TOL = 1e-13

HYP = settings(deadline=None, derandomize=True, max_examples=40)


@st.composite
def batches(draw, max_domains: int = 3, max_len: int = 6):
    """A padded batch: nested domain > group > row ids, left-aligned masks with at least one
    token in the batch (rows may be empty), log-ratios mixing scales 1e-3..0.5 with exact zeros
    and a finite junk value on padding, and budgets ``C+-`` in [0.01, 0.3], ``eps`` in
    [0.005, 0.3]."""
    h, x = draw(nested_log_ratios(max_domains, max_len, pad=3.0))
    budgets = {"c_plus": draw(st.floats(0.01, 0.3)), "c_minus": draw(st.floats(0.01, 0.3)),
               "eps": draw(st.floats(0.005, 0.3))}
    return h, x, budgets


@st.composite
def chains(draw, max_base: int = 3, max_extra: int = 4):
    """A surjective projection ``E -> B`` and a reflecting Markov kernel with positive
    weights on each fiber; returns ``(fibration, kernel, sigma [n_E])``."""
    n_b = draw(st.integers(1, max_base))
    extra = draw(st.lists(st.integers(0, n_b - 1), max_size=max_extra))
    proj = list(range(n_b)) + extra
    fib = Fibration(torch.tensor(proj), n_b)
    w = torch.tensor([draw(st.floats(0.1, 1.0)) for _ in proj], dtype=torch.float64)
    tot = torch.zeros(n_b, dtype=torch.float64).index_add(0, fib.proj, w)
    kern = ReflectingKernel.from_weights(fib, w / tot[fib.proj])
    sigma = torch.tensor([draw(st.floats(-2, 2)) for _ in proj], dtype=torch.float64)
    return fib, kern, sigma


# --------------------------------------------------------------------------- construction
def test_fibration_rejects_non_surjective_projection():
    with pytest.raises(ValueError, match="surjective"):
        Fibration(torch.tensor([0, 0, 2]), 3)


def test_fibration_rejects_out_of_range_projection():
    with pytest.raises(ValueError, match="proj"):
        Fibration(torch.tensor([0, 3]), 2)


def test_kernel_rejects_leaking_mass():
    fib = Fibration(torch.tensor([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="reflecting"):
        ReflectingKernel.from_weights(fib, torch.tensor([0.5, 0.4, 1.0]))


def test_kernel_rejects_mass_sent_to_another_fiber():
    fib = Fibration(torch.tensor([0, 1]), 2)
    mat = torch.tensor([[1.0, 0.5], [0.0, 0.5]], dtype=torch.float64)
    with pytest.raises(ValueError, match="reflecting"):
        ReflectingKernel(fib, mat)


def test_kernel_rejects_negative_entries_even_if_reflecting():
    fib = Fibration(torch.tensor([0, 0]), 1)
    with pytest.raises(ValueError, match="Markov"):
        ReflectingKernel.from_weights(fib, torch.tensor([1.5, -0.5]))


def test_kernel_rejects_wrong_shape():
    fib = Fibration(torch.tensor([0, 0]), 1)
    with pytest.raises(ValueError, match="shape"):
        ReflectingKernel(fib, torch.ones(1, 2, dtype=torch.float64))


def test_fiberpo_bundle_rejects_negative_budget():
    h = Hierarchy.from_padded(torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="c_minus"):
        fiberpo_bundle(h, 0.1, -0.1, 0.1)


# --------------------------------------------------------------------------- generic FBG
@HYP
@given(chains())
def test_residual_carries_no_base_information(case):
    """Property: pi_*(sigma - K pi_* sigma) = 0 for a reflecting kernel (Def 4.3 item 3)."""
    fib, kern, sigma = case
    res = sigma - kern.reflect(fib.push(sigma))
    assert float(fib.push(res).abs().max()) <= LINEAR_TOL, f"proj={fib.proj.tolist()}"


@HYP
@given(chains())
def test_identity_gates_give_the_identity_map(case):
    """Property: with identity atomic gates, G(sigma) = K pi_* sigma + (sigma - K pi_* sigma)
    = sigma for every density (eq 4)."""
    fib, kern, sigma = case
    fbg = FBG(kern, identity_gate, identity_gate, lambda x: x, lambda s: s)
    assert torch.allclose(fbg.gate(sigma), sigma, atol=LINEAR_TOL, rtol=0), \
        f"proj={fib.proj.tolist()}, sigma={sigma.tolist()}"


@HYP
@given(chains())
def test_pointwise_gate_is_local(case):
    """Property: a gate built by ``pointwise`` has a diagonal Jacobian (locality, FGH (iii))."""
    fib, _, sigma = case
    gate = pointwise(lambda x, c: torch.tanh(x * c), c=torch.linspace(0.5, 2, fib.n_total,
                                                                      dtype=torch.float64))
    jac = torch.autograd.functional.jacobian(lambda s: gate(s, ()), sigma)
    off = jac - torch.diag(torch.diagonal(jac))
    assert float(off.abs().max()) == 0.0, f"sigma={sigma.tolist()}"


def test_batched_densities_match_one_by_one():
    rng = np.random.default_rng(3)
    inst = cert_fbg.random_generic_fgh(rng, 1)
    fbg = inst.fgh.to_fbg()
    sig = inst.sigma0 + torch.tensor(rng.normal(size=(4, inst.sigma0.numel())))
    batched = fbg.gate(sig)
    single = torch.stack([fbg.gate(s) for s in sig])
    assert torch.allclose(batched, single, atol=LINEAR_TOL, rtol=0)


# --------------------------------------------------------------------------- App E.5.4 == eq 80
@HYP
@given(batches())
def test_fbg_with_e54_objects_is_eq80(case):
    """Property: R o G o F with App E.5.4's objects equals gating.fiberpo_log_ratio (eq 80)."""
    h, x, bud = case
    gen = fbg_fiberpo_log_ratio(x, h, **bud)
    ref = gating.fiberpo_log_ratio(x, h, **bud)
    gap = float((gen - ref)[h.mask].abs().max())
    assert gap <= CLOSED_FORM_TOL, f"gap={gap:.3e}, lengths={h.lengths.tolist()}, {bud}, x={x}"


@HYP
@given(batches())
def test_fbg_components_are_base_weight_and_gated_residual(case):
    """Property: log R of the base part K(g_Base(pi_* sigma)) is log w_base (eq 8) and log R of
    the fiber part is log r~_fiber (eq 11); their sum is eq 7."""
    h, x, bud = case
    fbg = fiberpo_bundle(h, **bud)
    flat = flatten_tokens(x, h)
    _, base, fiber = fbg.components(fbg.decompose(flat))
    xm = torch.where(h.mask, x, torch.zeros_like(x))
    plus, minus = gating.trajectory_aggregates(xm, h)
    log_w = gating.base_log_weight([(plus, minus)], [h.lengths], [bud["c_plus"]],
                                   [bud["c_minus"]])
    log_f, _, _ = gating.fiber_log_residual(xm, plus, minus, bud["eps"])
    gap_w = float((fbg.recover_log(base) - flatten_tokens(log_w[:, None].expand_as(x), h))
                  .abs().max())
    gap_f = float((fbg.recover_log(fiber) - flatten_tokens(log_f, h)).abs().max())
    assert max(gap_w, gap_f) <= CLOSED_FORM_TOL, f"base {gap_w:.2e}, fiber {gap_f:.2e}, {bud}"


@HYP
@given(batches())
def test_recovery_is_left_inverse_of_decomposition(case):
    """Property: R(F(r)) = r for the sign-channel maps (Def 4.3 item 2)."""
    h, x, bud = case
    fbg = fiberpo_bundle(h, **bud)
    assert fbg.recovery_residual(flatten_tokens(x, h)) <= LINEAR_TOL, f"x={x}"


def test_e54_kernel_is_one_over_length():
    h = Hierarchy.from_padded(torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]]))
    fbg = fiberpo_bundle(h, 0.1, 0.1, 0.1)
    weights = batch_strata(h, levels=False).exact_weights()[-1]
    assert weights == [Fraction(1, 3)] * 3 + [Fraction(1, 1)] + [Fraction(1, 3)] * 3 + [1]
    assert fbg.kernel.defect() == 0.0


def test_g_agg_reference_regimes_by_hand():
    x = torch.tensor([0.05, -0.1, 0.11, -0.115, 0.125, 0.5], dtype=torch.float64)
    got = g_agg_reference(x, 0.1, 4.0)
    want = torch.tensor([0.05, -0.1, 5 * 0.1 - 4 * 0.11, -(5 * 0.1 - 4 * 0.115), 0.0, 0.0],
                        dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-15, rtol=0)


# --------------------------------------------------------------------------- certificates
def _rng():
    return np.random.default_rng(11)


def test_v8_passes():
    rec = cert_fbg.check_fbg_first_order.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


@pytest.mark.parametrize("override", [{"slope": 1.05}, {"shift": 1e-3}])
def test_v8_fails_on_gates_breaking_identity_conditions(override):
    rec = cert_fbg.check_fbg_first_order.certificate.run(_rng(), **override)
    assert rec.status == "fail", rec.detail


def test_fiber_gate_reading_p_b_breaks_thm45_when_identity_holds_only_on_policy():
    """Thm 4.5 read as in App E.4 (identity conditions only at p_B = pi_* F(1)) is not enough:
    a fiber gate with d g / d p_B != 0 there shifts the Jacobian (symbolic and autograd)."""
    rng = _rng()
    _, jac, _ = cert_fbg.sym_first_order(rng, 1, coupling=True, tag="t")
    assert cert_fbg.sym_residual([jac], rng) > 0.0
    assert cert_fbg._coupled_numeric(rng) > 1e-3


def test_v9_passes():
    rec = cert_fbg.check_reflecting_exact.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_v9_fails_on_a_kernel_weighting_by_one_over_length_plus_one():
    def broken(st):
        return [[Fraction(1, w.denominator + 1) for w in ws] for ws in st.exact_weights()]
    rec = cert_fbg.check_reflecting_exact.certificate.run(_rng(), weights_fn=broken)
    assert rec.status == "fail", rec.detail


def test_v10_passes():
    rec = cert_fbg.check_closed_forms.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_v10_fails_when_the_closed_form_swaps_a_budget():
    def broken(x, h, *, c_plus, c_minus, eps):
        return gating.fiberpo_log_ratio(x, h, c_plus=c_plus, c_minus=c_plus, eps=eps)
    rec = cert_fbg.check_closed_forms.certificate.run(_rng(), closed_fbg=broken)
    assert rec.status == "fail", rec.detail


def test_v10_fails_when_the_domain_form_drops_the_group_level():
    def broken(x, h, *, c_plus, c_minus, eps):
        h2 = Hierarchy.from_padded(h.mask, domain_ids=h.level("domain").ids)
        cp = c_plus if isinstance(c_plus, float) else [c_plus[0], c_plus[2]]
        cm = c_minus if isinstance(c_minus, float) else [c_minus[0], c_minus[2]]
        return gating.fiberpo_domain_log_ratio(x, h2, c_plus=cp, c_minus=cm, eps=eps)
    rec = cert_fbg.check_closed_forms.certificate.run(_rng(), closed_fgh=broken)
    assert rec.status == "fail", rec.detail


def test_thm45_minimal_example_with_a_p_dependent_fiber_gate():
    """docs/theory.md, Part III, V8 item 2: E = {0, 1} over one base point, K = (1/2, 1/2),
    F(x) = (x, 0), g_Fiber,0,p(z) = z + h p. The gate is the identity with slope 1 at the
    on-policy p = 0, yet log G(F(x)) = (1 + h) x: value agrees, gradient is off by 1 + h."""
    h_coef = 0.5
    fib = Fibration(torch.tensor([0, 0]), 1)
    kern = ReflectingKernel.from_weights(fib, torch.tensor([0.5, 0.5], dtype=torch.float64))

    def g_fiber(z, context):
        (p,) = context
        return z + h_coef * torch.cat([p, torch.zeros_like(p)], -1)

    fbg = FBG(kern, identity_gate, g_fiber, lambda x: torch.cat([x, torch.zeros_like(x)], -1),
              lambda s: s[..., :1])
    x0 = torch.zeros(1, dtype=torch.float64)
    assert float(fbg.log_ratio_map(x0)) == 0.0
    jac = torch.autograd.functional.jacobian(fbg.log_ratio_map, x0)
    assert float(jac) == pytest.approx(1 + h_coef)


@settings(deadline=None, derandomize=True, max_examples=20)
@given(batches(), st.integers(0, 2**31 - 1))
def test_fbg_surrogate_is_minus_the_fiberpo_loss(case, seed):
    """Property: the FBG surrogate (eq 5 with eq 6's weights 1/(|Tj| T_tau)) built from App
    E.5.4's objects equals -losses.compute("fiberpo").loss."""
    from fibration_theory import losses

    h, x, bud = case
    adv = torch.tensor(np.random.default_rng(seed).normal(size=x.shape), dtype=torch.float64)
    st_ = batch_strata(h, levels=False)
    lens = torch.tensor(st_.traj_len, dtype=torch.float64)[st_.token_traj]
    mu = 1.0 / (h.num_traj * lens)
    fbg = fiberpo_bundle(h, **bud)
    j = fbg.surrogate(flatten_tokens(x, h), flatten_tokens(adv, h), mu)
    old = torch.zeros_like(x)
    out = losses.compute("fiberpo", x, old, adv, h.mask, hierarchy=h, **bud)
    assert abs(float(j) + float(out.loss)) <= CLOSED_FORM_TOL * (1 + abs(float(j))), \
        f"J={float(j)}, loss={float(out.loss)}, {bud}"
