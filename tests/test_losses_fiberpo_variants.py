"""``fiberpo_slope`` and ``fiberpo_hard``: FiberPO's gate with another rollback slope
(beyond the paper), against hand-computed cases, the literal loops of ``tests/reference.py``
and the paper's FiberPO at ``slope = 1``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from fibration_theory import Hierarchy, fiberpo, losses

F64 = torch.float64


def _log_gate_jacobian(x, slope, c_plus=0.1, c_minus=0.05, eps=1.0):
    x = torch.tensor(x, dtype=F64)
    h = Hierarchy.from_padded(torch.ones_like(x, dtype=torch.bool))
    plan = fiberpo.gate_plan(h, c_plus=c_plus, c_minus=c_minus, eps=eps, levels=False,
                             slope=slope)
    log_g = fiberpo.gate(x, plan)[0].log()
    jac = torch.autograd.functional.jacobian(lambda v: fiberpo.gate(v, plan)[0].log(), x)
    return log_g, jac[0, :, 0, :]


def test_hand_computed_half_slope_rollback():
    """x = (0.14, 0.16): s+ = 0.15 inside the rollback band (0.1, 0.2) of slope 0.5 (k = 1),
    s- = 0, eps wide: log w = 2 C+ - s+ = 0.05, log G_i = log w + x_i - s+ = 0.2 - x_other,
    so d log G_i / d x_j = -1 off the diagonal and 0 on it."""
    log_g, jac = _log_gate_jacobian([[0.14, 0.16]], 0.5)
    assert log_g[0].tolist() == pytest.approx([0.04, 0.06], rel=1e-12)
    torch.testing.assert_close(jac, torch.tensor([[0.0, -1.0], [-1.0, 0.0]], dtype=F64),
                               rtol=0, atol=1e-14)


def test_hand_computed_hard_clip():
    """Same x, slope 0: log w = C+ = 0.1 held, log G_i = 0.1 + x_i - s+; only the fiber
    residual's gradient remains (d/dx_j = delta_ij - 1/2)."""
    log_g, jac = _log_gate_jacobian([[0.14, 0.16]], 0.0)
    assert log_g[0].tolist() == pytest.approx([0.09, 0.11], rel=1e-12)
    torch.testing.assert_close(jac, torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=F64),
                               rtol=0, atol=1e-14)
    # the paper's slope is zeroed there (s+ = 0.15 >= (1 + 1/2) C+): base weight 1
    log_g, jac = _log_gate_jacobian([[0.14, 0.16]], 1.0)
    assert log_g[0].tolist() == pytest.approx([-0.01, 0.01], rel=1e-9)


def _case(seed, scale):
    gen = np.random.default_rng(seed)
    x = gen.normal(0, scale, (5, 7))
    adv = gen.normal(size=(5, 7))
    mask = gen.random((5, 7)) < 0.8
    mask[2] = False
    return x, adv, mask


def _compute(name, x, adv, mask, **p):
    lp = torch.tensor(x, dtype=F64, requires_grad=True)
    out = losses.compute(name, lp, torch.zeros_like(lp), torch.tensor(adv, dtype=F64),
                         torch.tensor(mask), **p)
    return out, torch.autograd.grad(out.loss, lp)[0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name,p", [("fiberpo_slope", {}), ("fiberpo_slope", {"slope": 2.0}),
                                    ("fiberpo_slope", {"slope": 0.1}), ("fiberpo_hard", {})])
def test_values_equal_the_literal_loops(seed, name, p):
    x, adv, mask = _case(seed, [0.02, 0.08, 0.2, 1.0][seed])
    out, _ = _compute(name, x, adv, mask, **p)
    assert out.loss.item() == pytest.approx(-ref.objective(name, x, adv, mask, **p), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_slope_one_is_the_papers_fiberpo(seed):
    x, adv, mask = _case(seed, [0.02, 0.08, 0.2, 1.0][seed])
    a, ga = _compute("fiberpo", x, adv, mask)
    b, gb = _compute("fiberpo_slope", x, adv, mask, slope=1.0)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-13)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,p", [("fiberpo_slope", {"slope": 0.5}), ("fiberpo_hard", {})])
def test_gradient_equals_central_differences_of_the_loops(name, p):
    """Away from the kinks, autograd's gradient is the derivative of the literal loops."""
    x, adv, mask = _case(7, 0.08)
    _, g = _compute(name, x, adv, mask, **p)
    h = 1e-7
    num = np.zeros_like(x)
    for b, t in zip(*np.nonzero(mask)):
        xp, xm = x.copy(), x.copy()
        xp[b, t] += h
        xm[b, t] -= h
        num[b, t] = -(ref.objective(name, xp, adv, mask, **p)
                      - ref.objective(name, xm, adv, mask, **p)) / (2 * h)
    np.testing.assert_allclose(g.numpy(), num, rtol=1e-5, atol=1e-8)


def test_on_policy_gradient_is_grpos():
    x, adv, mask = _case(1, 0.0)
    _, g0 = _compute("grpo", x, adv, mask)
    for name in ("fiberpo_slope", "fiberpo_hard"):
        _, g = _compute(name, x, adv, mask)
        torch.testing.assert_close(g, g0, rtol=1e-14, atol=0)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), "1", [0.5, 1.0]])
def test_bad_slope_is_refused_by_name(bad):
    x, adv, mask = _case(0, 0.1)
    with pytest.raises(ValueError, match="slope"):
        _compute("fiberpo_slope", x, adv, mask, slope=bad)
    h = Hierarchy.from_padded(torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="slope"):
        fiberpo.gate_plan(h, c_plus=0.1, c_minus=0.1, eps=0.1, levels=False, slope=bad)


def test_hard_clip_never_zeroes_the_base_weight():
    """Far beyond the budget the paper's base weight is 1 (zeroed), the hard clip's exp(C)."""
    x = np.full((1, 4), 3.0)
    G = ref.fiberpo_G(x, np.ones((1, 4), bool), 0.12, 0.05, 0.04, slope=0.0)
    out, g = _compute("fiberpo_hard", x, np.ones((1, 4)), np.ones((1, 4), bool))
    assert out.gated_ratio[0].tolist() == pytest.approx([math.exp(0.12)] * 4, rel=1e-14)
    assert G[0].tolist() == pytest.approx([math.exp(0.12)] * 4, rel=1e-14)
    assert g.abs().max() < 1e-16  # uniform row: the fiber residual's gradient sums to 0
