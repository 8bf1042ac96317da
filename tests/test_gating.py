"""FiberPO's gates against literal transcriptions of eqs 7-16, 31-33 and their properties."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batches, budgets

from fibration_theory import Hierarchy, gating

#: float64 closed forms vs a float64 loop: only summation order differs
VALUE_TOL = 1e-12
#: autograd Jacobians in float64, compared with exact 0/1 structure
JAC_TOL = 1e-12

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def test_g_agg_hand_values():
    """g_agg at k = 2, C = 0.2 (Fig 2a): identity, rollback line, zero."""
    x = torch.tensor([0.0, 0.1, -0.2, 0.25, -0.25, 0.3, 0.5, -0.31], dtype=torch.float64)
    got = gating.g_agg(x, 0.2, 2.0)
    # rollback: sign(x) 3 * 0.2 - 2 x ; C* = 0.3
    want = torch.tensor([0.0, 0.1, -0.2, 0.6 - 0.5, -0.6 + 0.5, 0.0, 0.0, 0.0],
                        dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-15), got


@SETTINGS
@given(x=st.floats(-2, 2), c=st.floats(0.001, 1), k=st.floats(1, 64))
def test_g_agg_matches_eq10_and_slopes(x, c, k):
    """Property: g_agg equals eq 10 and its derivative is 1, -k or 0 by regime."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = gating.g_agg(xt, c, k)
    y.backward()
    assert abs(y.item() - ref.g_agg(x, c, k)) <= VALUE_TOL, (x, c, k)
    if abs(x) <= c:
        assert float(xt.grad) == 1.0
    elif abs(x) < (1 + 1 / k) * c:
        assert float(xt.grad) == -k
    else:
        assert float(xt.grad) == 0.0


@SETTINGS
@given(batch=batches(allow_empty_rows=True), b=budgets())
def test_fiberpo_ratio_equals_eq80(batch, b):
    """Property: fiberpo_ratio equals a token-by-token reading of eq 80 (float64)."""
    cp, cm, eps = b
    got = gating.fiberpo_ratio(batch.log_ratio, batch.hierarchy(False), c_plus=cp, c_minus=cm,
                               eps=eps)
    want = ref.fiberpo_G(batch.log_ratio.numpy(), batch.mask.numpy(), cp, cm, eps)
    m = batch.mask
    assert np.allclose(got[m].numpy(), want[m.numpy()], rtol=VALUE_TOL, atol=0), (batch, b)


@SETTINGS
@given(batch=batches(allow_empty_rows=True, scale=0.5), b=budgets())
def test_fiberpo_domain_ratio_equals_eq31(batch, b):
    """Property: fiberpo_domain_ratio equals eqs 31-33 read literally (group and domain
    aggregates built as eq 33 writes them, not through the tower property)."""
    cp, cm, eps = b
    got = gating.fiberpo_domain_ratio(batch.log_ratio, batch.hierarchy(), c_plus=cp,
                                      c_minus=cm, eps=eps)
    want = ref.fiberpo_domain_G(batch.log_ratio.numpy(), batch.mask.numpy(),
                                batch.group_ids.tolist(), batch.domain_ids.tolist(), cp, cm, eps)
    m = batch.mask
    assert np.allclose(got[m].numpy(), want[m.numpy()], rtol=VALUE_TOL, atol=0), (batch, b)


@SETTINGS
@given(batch=batches(), b=budgets())
def test_domain_without_levels_is_fiberpo(batch, b):
    """Property: with no level above the trajectories, FiberPO-Domain is FiberPO."""
    cp, cm, eps = b
    h = batch.hierarchy(False)
    a = gating.fiberpo_domain_ratio(batch.log_ratio, h, c_plus=cp, c_minus=cm, eps=eps)
    f = gating.fiberpo_ratio(batch.log_ratio, h, c_plus=cp, c_minus=cm, eps=eps)
    assert torch.equal(a, f), batch


@SETTINGS
@given(batch=batches(), b=budgets())
def test_per_level_budgets_equal_shared_pair_when_equal(batch, b):
    """Property: per-level budgets that repeat one pair give eq 31 exactly; changing only the
    domain pair leaves trajectories whose domain gate passes unchanged."""
    cp, cm, eps = b
    h = batch.hierarchy()
    shared = gating.fiberpo_domain_ratio(batch.log_ratio, h, c_plus=cp, c_minus=cm, eps=eps)
    listed = gating.fiberpo_domain_ratio(batch.log_ratio, h, c_plus=[cp] * 3, c_minus=[cm] * 3,
                                         eps=eps)
    assert torch.equal(shared, listed), batch


def _jacobian(fn, x):
    return torch.autograd.functional.jacobian(fn, x).reshape(x.numel(), x.numel())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(batch=batches(max_rows=4, max_len=4), b=budgets())
def test_identity_jacobian_on_policy(batch, b):
    """Property: at r = 1, G(r) = 1 and dG/dr = I on the masked tokens (Property 5.4),
    for FiberPO and FiberPO-Domain; this needs the sign(0) = +1 convention."""
    cp, cm, eps = b
    x = torch.zeros_like(batch.log_ratio)
    m = batch.mask.reshape(-1)
    for fn in (gating.fiberpo_ratio, gating.fiberpo_domain_ratio):
        h = batch.hierarchy(fn is gating.fiberpo_domain_ratio)
        G = fn(x, h, c_plus=cp, c_minus=cm, eps=eps)
        J = _jacobian(lambda y: fn(y, h, c_plus=cp, c_minus=cm, eps=eps), x)[m][:, m]
        assert torch.equal(G[batch.mask], torch.ones(int(m.sum()), dtype=torch.float64))
        assert torch.allclose(J, torch.eye(int(m.sum()), dtype=torch.float64), atol=JAC_TOL), (
            batch, fn.__name__)


@SETTINGS
@given(batch=batches(scale=1.0), b=budgets())
def test_block_diagonal(batch, b):
    """Property: FiberPO's Jacobian is block-diagonal over trajectories (Property 5.3) and
    FiberPO-Domain's over domains (Section 6)."""
    cp, cm, eps = b
    x = batch.log_ratio
    rows = torch.arange(x.shape[0])[:, None].expand_as(x).reshape(-1)
    dom = batch.domain_ids[:, None].expand_as(x).reshape(-1)
    h0, h2 = batch.hierarchy(False), batch.hierarchy()
    J1 = _jacobian(lambda y: gating.fiberpo_ratio(y, h0, c_plus=cp, c_minus=cm, eps=eps), x)
    J2 = _jacobian(lambda y: gating.fiberpo_domain_ratio(y, h2, c_plus=cp, c_minus=cm, eps=eps), x)
    assert torch.all(J1[rows[:, None] != rows[None, :]] == 0), batch
    assert torch.all(J2[dom[:, None] != dom[None, :]] == 0), batch


@SETTINGS
@given(batch=batches(), b=budgets(), data=st.data())
def test_permutation_and_relabel_invariance(batch, b, data):
    """Property: permuting rows permutes G; relabeling group and domain ids changes nothing."""
    cp, cm, eps = b
    perm = torch.as_tensor(data.draw(st.permutations(range(batch.mask.shape[0]))))
    h = batch.hierarchy()
    G = gating.fiberpo_domain_ratio(batch.log_ratio, h, c_plus=cp, c_minus=cm, eps=eps)
    hp = Hierarchy.from_padded(batch.mask[perm], batch.group_ids[perm] * 5 + 11,
                               100 - batch.domain_ids[perm])
    Gp = gating.fiberpo_domain_ratio(batch.log_ratio[perm], hp, c_plus=cp, c_minus=cm, eps=eps)
    assert torch.allclose(Gp, G[perm], rtol=VALUE_TOL, atol=0), (batch, perm)


def test_sign_zero_is_positive():
    """sign(0) = +1: an on-policy token is labelled positive and counted in s+."""
    x = torch.tensor([[0.0, -0.0, 0.1]], dtype=torch.float64)
    assert gating.sign_label(x).tolist() == [[1.0, 1.0, 1.0]]


def test_log_ratios_of_700_do_not_overflow():
    """Log-ratios of magnitude 700 give finite gated ratios and gradients."""
    x = torch.tensor([[700.0, -700.0, 0.0], [699.0, 1.0, -3.0]], dtype=torch.float64,
                     requires_grad=True)
    h = Hierarchy.from_padded(torch.ones(2, 3, dtype=torch.bool), [0, 0], [0, 0])
    for fn in (gating.fiberpo_ratio, gating.fiberpo_domain_ratio):
        G = fn(x, h, c_plus=0.1, c_minus=0.05, eps=0.02)
        G.sum().backward()
        assert torch.isfinite(G).all() and torch.isfinite(x.grad).all()
        x.grad = None


def test_regime_labels_by_hand():
    """Hand-built trajectories land in the regimes the definitions give (T = 4, C+ = 0.2,
    C- = 0.1, so C*+ = 0.25 and C*- = 0.125)."""
    mask = torch.ones(5, 4, dtype=torch.bool)
    h = Hierarchy.from_padded(mask)
    x = torch.tensor([
        [0.1, 0.1, 0.0, -0.1],      # s+ = .05, s- = .025: G-I
        [0.9, 0.0, 0.0, 0.0],       # s+ = .225 rollback, s- = 0: G-II,r
        [2.0, 0.0, 0.0, 0.0],       # s+ = .5 zeroed, s- = 0: G-II
        [0.9, -0.45, 0.0, 0.0],     # s+ = .225 R, s- = .1125 R: G-III,r
        [2.0, -2.0, 0.0, 0.0],      # both zeroed: G-III
    ], dtype=torch.float64)
    reg = gating.regimes(x, h, c_plus=0.2, c_minus=0.1, eps=0.5)
    glob, _ = reg.labels()
    assert glob == ["G-I", "G-II,r", "G-II", "G-III,r", "G-III"]
    G = gating.fiberpo_ratio(x, h, c_plus=0.2, c_minus=0.1, eps=10.0)
    # G-III: both channels zeroed, base weight exactly 1; fiber unclipped => G = r / r_tau
    assert torch.allclose(G[4], torch.exp(x[4] - x[4].mean()), rtol=1e-15)


@pytest.mark.parametrize("eps,want", [(1.0, "L-I"), (0.1, "L-II"), (1e-4, "L-III")])
def test_local_regimes(eps, want):
    # s+ = 0.5/3, so |u| = (0.067, 0.067, 0.133)
    x = torch.tensor([[0.1, 0.1, 0.3]], dtype=torch.float64)
    reg = gating.regimes(x, Hierarchy.from_padded(torch.ones(1, 3, dtype=torch.bool)),
                         c_plus=1.0, c_minus=1.0, eps=eps)
    assert reg.labels()[1] == [want]
