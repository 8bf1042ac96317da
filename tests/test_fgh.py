"""Fibration Gating Hierarchy (Defs 6.1-6.2, eqs 21-29) and FiberPO-Domain's App E.7 objects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fibration_theory.proofs import cert_fbg, cert_fgh, cert_findings_gates
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import nested_log_ratios

from fibration_theory import gating
from fibration_theory.bundles import (
    batch_strata,
    fgh_fiberpo_domain_log_ratio,
    fiberpo_bundle,
    fiberpo_domain_fgh,
    flatten_tokens,
)
from fibration_theory.fbg import Fibration, ReflectingKernel, identity_gate
from fibration_theory.fgh import FGH, kernel_chain, push_chain
from fibration_theory.hierarchy import Hierarchy

# Two float64 routes to the same log G differ by O(T) rounded terms of size <= (T+1) C.
CLOSED_FORM_TOL = 1e-12
# Products of a few 0/1 matrices and probability vectors: a few ulps.
LINEAR_TOL = 1e-13

HYP = settings(deadline=None, derandomize=True, max_examples=30)


@st.composite
def domain_batches(draw, max_domains: int = 3, max_len: int = 5):
    """A padded batch with nested domain > group > row ids (at least one token overall, some
    rows possibly empty), log-ratios mixing scales 1e-3..0.5 with exact zeros, and budgets
    either one pair (eq 31) or one pair per level (domain, group, trajectory)."""
    h, x = draw(nested_log_ratios(max_domains, max_len, pad=-2.0))
    budget = st.floats(0.01, 0.3)
    if draw(st.booleans()):
        cp, cm = draw(budget), draw(budget)
    else:
        cp, cm = [draw(budget) for _ in range(3)], [draw(budget) for _ in range(3)]
    bud = {"c_plus": cp, "c_minus": cm, "eps": draw(st.floats(0.005, 0.3))}
    return h, x, bud


@st.composite
def generic_fghs(draw):
    """A generic FGH of depth 1..4 (random chain, reflecting kernels, jet gates reading their
    context) with a density sigma near its on-policy point; returns ``(instance, sigma)``."""
    seed = draw(st.integers(0, 2**31 - 1))
    depth = draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    inst = cert_fbg.random_generic_fgh(rng, depth, coupling=draw(st.sampled_from([0.0, 0.7])))
    sigma = inst.sigma0 + torch.tensor(rng.normal(size=inst.sigma0.numel()))
    return inst, sigma


# --------------------------------------------------------------------------- construction
def _one_kernel():
    fib = Fibration(torch.tensor([0, 0, 1]), 2)
    return ReflectingKernel.from_weights(fib, torch.tensor([0.5, 0.5, 1.0]))


def test_fgh_needs_n_plus_one_gates():
    with pytest.raises(ValueError, match="gates"):
        FGH((_one_kernel(),), (identity_gate,), lambda x: x, lambda s: s)


def test_fgh_needs_matching_strata():
    k = _one_kernel()
    with pytest.raises(ValueError, match="stratum"):
        FGH((k, k), (identity_gate,) * 3, lambda x: x, lambda s: s)


def test_fgh_needs_a_kernel():
    with pytest.raises(ValueError, match="depth"):
        FGH((), (identity_gate,), lambda x: x, lambda s: s)


def test_deep_fgh_is_not_an_fbg():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="depth"):
        cert_fbg.random_generic_fgh(rng, 2).fgh.to_fbg()


def test_per_level_budget_list_must_match_depth():
    h = Hierarchy.from_padded(torch.ones(2, 2, dtype=torch.bool), group_ids=[0, 1],
                              domain_ids=[0, 0])
    with pytest.raises(ValueError, match="c_plus"):
        fiberpo_domain_fgh(h, [0.1, 0.1], 0.1, 0.1)


# --------------------------------------------------------------------------- generic FGH
@HYP
@given(generic_fghs())
def test_compact_form_equals_eq26(case):
    """Property: the level-by-level form (eqs 27-28) equals eq 26 with composed maps."""
    inst, sigma = case
    gap = float((inst.fgh.gate(sigma) - inst.fgh.gate_eq26(sigma)).abs().max())
    assert gap <= LINEAR_TOL, f"sizes={inst.fgh.sizes}, gap={gap:.2e}"


@HYP
@given(generic_fghs())
def test_composed_kernels_reflect(case):
    """Property: pi_{k<-m,*} K_{m<-k} = id for all k < m (reflecting kernels compose)."""
    inst, _ = case
    fgh = inst.fgh
    for k in range(fgh.depth):
        for m in range(k + 1, fgh.depth + 1):
            prod = push_chain(fgh.fibrations, k, m) @ kernel_chain(fgh.kernels, m, k)
            gap = float((prod - torch.eye(fgh.sizes[k], dtype=torch.float64)).abs().max())
            assert gap <= LINEAR_TOL, f"sizes={fgh.sizes}, k={k}, m={m}"


@HYP
@given(generic_fghs())
def test_identity_gates_telescope_to_identity(case):
    """Property: with identity gates sum_k K_{n<-k}(p_k - K_{k-1} p_{k-1}) telescopes to sigma."""
    inst, sigma = case
    fgh = dataclasses.replace(inst.fgh, gates=(identity_gate,) * (inst.fgh.depth + 1))
    assert torch.allclose(fgh.gate(sigma), sigma, atol=LINEAR_TOL, rtol=0), \
        f"sizes={fgh.sizes}"


@HYP
@given(generic_fghs())
def test_depth_one_fgh_is_fbg(case):
    """Property: Remark 6.3, an FGH of depth 1 and its FBG give the same G."""
    inst, sigma = case
    if inst.fgh.depth != 1:
        return
    fbg = inst.fgh.to_fbg()
    assert torch.equal(FGH.from_fbg(fbg).gate(sigma), fbg.gate(sigma)), f"sizes={inst.fgh.sizes}"


@HYP
@given(st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_first_order_agreement_at_any_depth(seed, depth):
    """Property: gates meeting the identity conditions (context-free) give G(1) = 1 and an
    identity Jacobian at r = 1 at every depth (Thm 4.5 for FGH)."""
    rng = np.random.default_rng(seed)
    inst = cert_fbg.random_generic_fgh(rng, depth)
    defect = cert_fbg.first_order_defect(inst.fgh, inst.n_x, rng)
    assert defect <= LINEAR_TOL * 10, f"seed={seed}, depth={depth}, defect={defect:.2e}"


# --------------------------------------------------------------------------- App E.7 == eq 31
@HYP
@given(domain_batches())
def test_fgh_with_e7_objects_is_eq31(case):
    """Property: R o G o F with App E.7's objects equals gating.fiberpo_domain_log_ratio
    (eqs 31-32), for one budget pair and for per-level budgets."""
    h, x, bud = case
    gen = fgh_fiberpo_domain_log_ratio(x, h, **bud)
    ref = gating.fiberpo_domain_log_ratio(x, h, **bud)
    gap = float((gen - ref)[h.mask].abs().max())
    assert gap <= CLOSED_FORM_TOL, f"gap={gap:.2e}, lengths={h.lengths.tolist()}, {bud}, x={x}"


@HYP
@given(domain_batches())
def test_domain_fgh_without_levels_is_fiberpo(case):
    """Property: App E.7's construction over a hierarchy with no level above the trajectories
    is App E.5.4's FBG (n = 1)."""
    h, x, bud = case
    h0 = Hierarchy.from_padded(h.mask)
    cp = bud["c_plus"] if isinstance(bud["c_plus"], float) else bud["c_plus"][-1]
    cm = bud["c_minus"] if isinstance(bud["c_minus"], float) else bud["c_minus"][-1]
    flat = flatten_tokens(x, h0)
    a = fiberpo_domain_fgh(h0, cp, cm, bud["eps"]).log_ratio_map(flat)
    b = fiberpo_bundle(h0, cp, cm, bud["eps"]).log_ratio_map(flat)
    assert float((a - b).abs().max()) <= CLOSED_FORM_TOL, f"{bud}, x={x}"


@settings(deadline=None, derandomize=True, max_examples=10)
@given(domain_batches(max_len=3))
def test_fiberpo_domain_is_block_diagonal_over_domains(case):
    """Property: d log G_i / d log r_j = 0 exactly when i and j lie in different domains, for
    the closed form and for the generic FGH."""
    h, x, bud = case
    closed = cert_fgh.cross_domain_jacobian(
        lambda y, hh: gating.fiberpo_domain_log_ratio(y, hh, **bud), x, h)
    generic = cert_fgh.cross_domain_jacobian(
        lambda y, hh: fgh_fiberpo_domain_log_ratio(y, hh, **bud), x, h)
    assert closed == 0.0 and generic == 0.0, f"closed={closed}, generic={generic}, x={x}"


def test_e7_kernels_by_hand():
    # domain 0: group 0 (rows 0, 1), group 1 (row 2); row lengths 2, 1, 3
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    h = Hierarchy.from_padded(mask, group_ids=[0, 0, 1], domain_ids=[0, 0, 0])
    w = batch_strata(h).exact_weights()
    assert [str(v) for v in w[0][:2]] == ["2/3", "1/3"]          # K0 = |Tj(g)| / |Tj(D)|
    assert [str(v) for v in w[1][:3]] == ["1/2", "1/2", "1"]     # K1 = 1 / |Tj(g)|
    assert [str(v) for v in w[2][:6]] == ["1/2", "1/2", "1", "1/3", "1/3", "1/3"]  # K2 = 1/T


# --------------------------------------------------------------------------- certificates
def _rng():
    return np.random.default_rng(5)


def test_v14_passes():
    rec = cert_fgh.check_fgh.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


@pytest.mark.parametrize("override", [{"slope": 0.95}, {"gate_mixing": True}])
def test_v14_fails_on_broken_gates(override):
    rec = cert_fgh.check_fgh.certificate.run(_rng(), **override)
    assert rec.status == "fail", rec.detail


def test_v14_fails_when_the_closed_form_mixes_domains():
    def broken(x, h, *, c_plus, c_minus, eps):
        out = gating.fiberpo_domain_log_ratio(x, h, c_plus=c_plus, c_minus=c_minus, eps=eps)
        return out + 1e-3 * torch.where(h.mask, x, 0.0).sum()
    rec = cert_fgh.check_fgh.certificate.run(_rng(), closed_fgh=broken)
    assert rec.status == "fail", rec.detail


def test_f4_passes():
    rec = cert_findings_gates.check_per_level_budgets.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_f4_fails_when_per_level_budgets_are_ignored():
    def broken(x, h, *, c_plus, c_minus, eps):
        cp = c_plus if isinstance(c_plus, float) else c_plus[-1]
        cm = c_minus if isinstance(c_minus, float) else c_minus[-1]
        return gating.fiberpo_domain_log_ratio(x, h, c_plus=cp, c_minus=cm, eps=eps)
    rec = cert_findings_gates.check_per_level_budgets.certificate.run(_rng(), closed_fgh=broken)
    assert rec.status == "fail", rec.detail
