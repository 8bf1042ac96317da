"""``fiberpo_clamp``: the public unofficial plugin's FiberPO (alphadl/FibrationPO, 5f048ff).

Checked against hand-computed cases, the literal loops of ``tests/reference.py``,
GRPO's on-policy gradient, and the Jacobian structure the clamps imply.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from fibration_theory import losses
from fibration_theory.losses.fiberpo_clamp import LOG_RATIO_MIN, clamp_gate

F64 = torch.float64


def _loss(x, adv, mask, **p):
    x = torch.as_tensor(x, dtype=F64)
    lp = x.clone().requires_grad_(True)
    out = losses.compute("fiberpo_clamp", lp, torch.zeros_like(x),
                         torch.as_tensor(adv, dtype=F64), torch.as_tensor(mask), **p)
    (g,) = torch.autograd.grad(out.loss, lp)
    return out, g


def test_hand_computed_base_clamped():
    """Row [0.3, 0.1], delta 0.1, eps 0.05: mean 0.2 -> base 0.1; residuals 0.2, 0.0 ->
    clipped 0.05, 0.0; G = (e^0.15, e^0.1); loss = -(e^0.15 + e^0.1)/2 with A = 1. The base is
    clamped (no base gradient), token 0's residual is clipped (no gradient), token 1 keeps
    dG/dx = G = e^0.1, times mu = 1/2."""
    out, g = _loss([[0.3, 0.1]], [[1.0, 1.0]], [[True, True]], delta=0.1, eps=0.05)
    assert out.loss.item() == pytest.approx(-(math.exp(0.15) + math.exp(0.1)) / 2, rel=1e-14)
    assert g[0, 0].item() == 0.0
    assert -g[0, 1].item() == pytest.approx(math.exp(0.1) / 2, rel=1e-14)
    assert out.metrics["base_clamped_frac"] == 1.0
    assert out.metrics["residual_clip_frac"] == 0.5


def test_hand_computed_coupling_of_clipped_tokens():
    """Row [0.05, -0.01], delta 0.2, eps 0.02: mean 0.02 inside the budget -> base 0.02;
    residuals 0.03, -0.03 both clipped -> G = (e^0.04, e^0). Each G_i depends on x only
    through the base (dG_i/dx_j = G_i / 2), so with A = (1, 2) and mu = 1/2:
    dJ/dx_j = (1/2)(e^0.04 * 1 + 1 * 2)/2 for both j."""
    out, g = _loss([[0.05, -0.01]], [[1.0, 2.0]], [[True, True]], delta=0.2, eps=0.02)
    assert out.loss.item() == pytest.approx(-(math.exp(0.04) + 2.0) / 2, rel=1e-14)
    want = (math.exp(0.04) + 2.0) / 4
    assert (-g[0]).tolist() == pytest.approx([want, want], rel=1e-14)


def test_aggregation_is_the_plugins_seq_mean_token_mean():
    """Rows of 3 and 1 tokens and an empty row: the loss is the mean over the 2 non-empty
    rows of each row's token mean (at r = 1, G = 1: -(mean(1, 2, 3) + 4)/2 = -3)."""
    out, _ = _loss(np.zeros((3, 3)), [[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [5.0, 5.0, 5.0]],
                   [[True, True, True], [True, False, False], [False, False, False]])
    assert out.loss.item() == -3.0


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_plugins_rule_read_as_loops(seed):
    gen = np.random.default_rng(seed)
    scale = [0.01, 0.1, 0.5, 2.0, 25.0, 60.0][seed]
    x = gen.normal(0, scale, (5, 7))
    adv = gen.normal(size=(5, 7))
    mask = gen.random((5, 7)) < 0.8
    mask[1] = False
    for delta, eps in [(0.2, 0.2), (0.05, 0.3), (0.4, 0.01)]:
        out, _ = _loss(x, adv, mask, delta=delta, eps=eps)
        want = -ref.objective("fiberpo_clamp", x, adv, mask, delta=delta, eps=eps)
        assert out.loss.item() == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_on_policy_gradient_is_grpos():
    gen = torch.Generator().manual_seed(3)
    old = torch.randn(6, 8, generator=gen, dtype=F64)
    adv = torch.randn(6, 8, generator=gen, dtype=F64)
    mask = torch.rand(6, 8, generator=gen) < 0.7
    grads = {}
    for name in ("fiberpo_clamp", "grpo"):
        lp = old.clone().requires_grad_(True)
        out = losses.compute(name, lp, old, adv, mask)
        grads[name] = torch.autograd.grad(out.loss, lp)[0]
    assert grads["grpo"].abs().max() > 0
    torch.testing.assert_close(grads["fiberpo_clamp"], grads["grpo"], rtol=1e-14, atol=0)


def _jacobian(x: torch.Tensor, mask: torch.Tensor, delta: float, eps: float) -> torch.Tensor:
    lengths = mask.sum(1)
    return torch.autograd.functional.jacobian(
        lambda v: clamp_gate(v, mask, lengths, delta, eps)[0], x)


def test_identity_jacobian_on_policy():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    jac = _jacobian(torch.zeros(2, 3, dtype=F64), mask, 0.2, 0.2).reshape(6, 6)
    torch.testing.assert_close(jac, torch.diag(mask.reshape(-1).to(F64)), rtol=0, atol=0)


def test_jacobian_structure_off_policy():
    """Base inside the budget: an unclipped token has the row dG_i/dx_j = G_i delta_ij (its
    own residual cancels the base), a clipped one G_i / T (the base's coupling only).
    Base clamped: only unclipped tokens keep G_i on the diagonal, clipped ones are zero."""
    mask = torch.ones(1, 4, dtype=torch.bool)
    x = torch.tensor([[0.5, -0.4, 0.01, -0.07]], dtype=F64)  # mean 0.01, inside delta = 0.2
    gated, base_clamped, clipped = clamp_gate(x, mask, mask.sum(1), 0.2, 0.1)
    assert not base_clamped[0] and clipped[0].tolist() == [True, True, False, False]
    jac = _jacobian(x, mask, 0.2, 0.1)[0, :, 0, :]
    G = gated[0]
    want = torch.stack([torch.full((4,), float(G[0]) / 4, dtype=F64),
                        torch.full((4,), float(G[1]) / 4, dtype=F64),
                        G[2] * torch.eye(4, dtype=F64)[2], G[3] * torch.eye(4, dtype=F64)[3]])
    torch.testing.assert_close(jac, want, rtol=1e-14, atol=0)
    y = x + 0.5  # mean 0.51 > delta: base clamped at 0.2
    gated, base_clamped, clipped = clamp_gate(y, mask, mask.sum(1), 0.2, 0.25)
    assert base_clamped[0] and clipped[0].tolist() == [True, False, True, False]
    jac = _jacobian(y, mask, 0.2, 0.25)[0, :, 0, :]
    want = torch.diag(torch.where(clipped[0], torch.zeros(4, dtype=F64), gated[0]))
    torch.testing.assert_close(jac, want, rtol=1e-14, atol=0)


def test_float32_agrees_with_float64():
    gen = torch.Generator().manual_seed(5)
    x = 0.3 * torch.randn(4, 9, generator=gen, dtype=F64)
    adv = torch.randn(4, 9, generator=gen, dtype=F64)
    mask = torch.rand(4, 9, generator=gen) < 0.8
    res = {}
    for dt in (torch.float32, F64):
        lp = x.to(dt).requires_grad_(True)
        out = losses.compute("fiberpo_clamp", lp, torch.zeros_like(lp), adv.to(dt), mask)
        res[dt] = (out.loss.detach().to(F64), torch.autograd.grad(out.loss, lp)[0].to(F64))
    torch.testing.assert_close(res[torch.float32][0], res[F64][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(res[torch.float32][1], res[F64][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_log_ratios_are_finite(dtype):
    """Log-ratios of +-1e4 and +-1e30 gate to finite values; beyond the plugin's clamps
    (20 above, log 1e-8 below) the gradient is exactly zero."""
    x = torch.tensor([[1e4, -1e4, 0.0], [1e30, -1e30, 30.0], [-19.0, 0.1, 0.0]], dtype=dtype)
    lp = x.clone().requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0]] * 3, dtype=dtype)
    out = losses.compute("fiberpo_clamp", lp, torch.zeros_like(x), adv,
                         torch.ones(3, 3, dtype=torch.bool))
    (g,) = torch.autograd.grad(out.loss, lp)
    assert torch.isfinite(out.loss) and torch.isfinite(g).all()
    assert torch.isfinite(out.gated_ratio).all()
    assert g[0, 0] == 0 and g[0, 1] == 0 and g[1, :].abs().sum() == 0 and g[2, 0] == 0
    assert -19.0 < LOG_RATIO_MIN < -18.0


@pytest.mark.parametrize("kw, name", [({"delta": -0.1}, "delta"), ({"eps": -1.0}, "eps"),
                                      ({"delta": float("nan")}, "delta"),
                                      ({"eps": float("inf")}, "eps"),
                                      ({"delta": [0.1, 0.2]}, "delta"),
                                      ({"eps": True}, "eps")])
def test_bad_parameters_are_refused_by_name(kw, name):
    with pytest.raises(ValueError, match=name):
        _loss([[0.1, 0.2]], [[1.0, 1.0]], [[True, True]], **kw)


def test_registered_with_the_plugins_defaults():
    assert losses.parameters("fiberpo_clamp") == {"delta": 0.2, "eps": 0.2,
                                                  "agg": "seq-mean-token-mean"}
    assert losses.coupling("fiberpo_clamp") == "trajectory"
