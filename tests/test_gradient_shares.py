"""The gradient decomposition of :mod:`simulations.gradient_shares`: its paths add up to the
objective's own gradient, and hand-computed rollback and coupling terms."""

from __future__ import annotations

import math

import pytest
import torch
from fibration_theory.simulations import gradient_shares as gs

from fibration_theory import Hierarchy, losses

F64 = torch.float64


def _batch(seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(6, 5, generator=g) < 0.85
    mask[:, 0] = True
    h = Hierarchy.from_padded(mask, levels={"domain": torch.tensor([0, 0, 0, 1, 1, 1]),
                                            "group": torch.tensor([0, 0, 1, 2, 2, 3])})
    adv = torch.randn(6, 1, generator=g, dtype=F64).expand(6, 5) * mask
    x = scale * torch.randn(6, 5, generator=g, dtype=F64)
    return x, adv, h


@pytest.mark.parametrize("scale", [0.0, 0.03, 0.1, 0.3, 2.0])
@pytest.mark.parametrize("name", gs.FIBER_GATES)
def test_base_and_fiber_paths_add_up_to_the_objectives_gradient(name, scale):
    """``total`` is autograd's gradient of the registered objective (its fast path); the
    separately evaluated paths must rebuild it."""
    x, adv, h = _batch(int(scale * 100), scale)
    c = gs.coefficients(name, x, adv, h, {}, with_base=True)
    lp = x.clone().requires_grad_(True)
    out = losses.compute(name, lp, torch.zeros_like(x), adv, h.mask, hierarchy=h)
    (g,) = torch.autograd.grad(-out.loss, lp)
    torch.testing.assert_close(c["total"], g, rtol=0, atol=1e-15)
    torch.testing.assert_close(c["base"] + c["fiber"], g, rtol=0, atol=1e-14)


def _one_row(x, **p):
    x = torch.tensor([x], dtype=F64)
    h = Hierarchy.from_padded(torch.ones_like(x, dtype=torch.bool))
    adv = torch.ones_like(x)
    return x, adv, h


def test_hand_computed_rollback_term():
    """x = (0.14, 0.16), C+ = 0.1, slope 0.5 (k = 1): s+ = 0.15 in rollback, eps wide.
    log w = 2 C+ - s+, so the rollback part is W * d log w/dx_j = -W/2 per token with
    W = sum_i mu_i A_i G_i = (e^0.04 + e^0.06)/2; nothing is clipped, so no coupling."""
    x, adv, h = _one_row([0.14, 0.16])
    c = gs.coefficients("fiberpo_slope", x, adv, h, {"c_plus": 0.1, "c_minus": 0.05,
                                                     "eps": 1.0, "slope": 0.5})
    w = (math.exp(0.04) + math.exp(0.06)) / 2
    assert c["rollback"][0].tolist() == pytest.approx([-w / 2, -w / 2], rel=1e-12)
    assert c["coupling"].abs().max() == 0
    # the hard clip has no rollback term, and its clamped row passes no base gradient
    c = gs.coefficients("fiberpo_hard", x, adv, h, {"c_plus": 0.1, "c_minus": 0.05, "eps": 1.0})
    assert c["rollback"].abs().max() == 0
    torch.testing.assert_close(c["zeroed_traj"], c["total"], rtol=0, atol=0)


def test_hand_computed_coupling_term():
    """x = (0.05, -0.01), C+- = 0.2, eps 0.02: s+ = 0.025, s- = 0.005, pass-through. Token 0
    is clipped (u = 0.025 >= eps), token 1 is not (u = 0.005): the coupling is token 0's
    term through log w = s+ - s-, W_0 d log w/dx_j = W_0 / 2 for both j, W_0 = G_0 / 2 with
    log G_0 = log w + eps - clip(-s-) = 0.02 + 0.02 + 0.005."""
    x, adv, h = _one_row([0.05, -0.01])
    c = gs.coefficients("fiberpo", x, adv, h, {"c_plus": 0.2, "c_minus": 0.2, "eps": 0.02})
    w0 = math.exp(0.045) / 2
    assert c["coupling"][0].tolist() == pytest.approx([w0 / 2, w0 / 2], rel=1e-12)
    assert c["rollback"].abs().max() == 0 and c["zeroed_traj"].abs().max() == 0


def test_plugin_clamp_coupling_is_its_whole_gradient_when_every_token_is_clipped():
    """fiberpo_clamp, x = (0.05, -0.01), delta 0.2, eps 0.02: both residuals clipped (see its
    own tests), so each token's gradient is the base's 1/T coupling only."""
    x, adv, h = _one_row([0.05, -0.01])
    c = gs.coefficients("fiberpo_clamp", x, adv, h, {"delta": 0.2, "eps": 0.02})
    want = (math.exp(0.04) + 1.0) / 4
    assert c["coupling"][0].tolist() == pytest.approx([want, want], rel=1e-12)
    torch.testing.assert_close(c["coupling"], c["total"], rtol=1e-14, atol=0)


def test_zeroed_tokens_of_grpo_are_its_clipped_tokens():
    x, adv, h = _batch(3, 0.4)
    adv = torch.where(h.mask, adv + 0.5 * torch.sign(adv) + (adv == 0) * 1.0, adv)  # A != 0
    c = gs.coefficients("grpo", x, adv, h, {})
    out = losses.compute("grpo", x, torch.zeros_like(x), adv, h.mask)
    assert 0 < out.metrics["clip_frac"] < 1
    assert gs.zeroed_token_frac(c, h.mask) == pytest.approx(out.metrics["clip_frac"], abs=0)
    assert all(c[p].abs().max() == 0 for p in gs.PARTS)


def test_on_policy_every_part_is_zero():
    x, adv, h = _batch(1, 0.0)
    for name in gs.FIBER_GATES + ("fiberpo_clamp",):
        c = gs.coefficients(name, x, adv, h, {})
        assert all(c[p].abs().max() == 0 for p in gs.PARTS), name
        assert gs.zeroed_token_frac(c, h.mask) == 0.0


def test_shares_are_projections_of_the_parameter_gradients():
    """With log-probs linear in the parameters (lp = M theta), g_X = M^T c_X: the share is
    <M^T c_X, M^T c> / |M^T c|^2, computed here directly."""
    x, adv, h = _batch(2, 0.3)
    c = gs.coefficients("fiberpo", x, adv, h, {})
    assert c["rollback"].abs().max() > 0 and c["coupling"].abs().max() > 0
    g = torch.Generator().manual_seed(0)
    M = torch.randn(x.numel(), 7, generator=g, dtype=F64)
    theta = torch.randn(7, generator=g, dtype=F64, requires_grad=True)
    lp = (M @ theta).reshape(x.shape)
    got = gs.shares(c, lp, [theta])
    gt = M.T @ c["total"].reshape(-1)
    for part in gs.PARTS:
        gx = M.T @ c[part].reshape(-1)
        assert got[f"grad/{part}_share"] == pytest.approx(float(gx @ gt / (gt @ gt)), rel=1e-12)
        assert got[f"grad/{part}_norm"] == pytest.approx(float(gx.norm() / gt.norm()), rel=1e-12)


def test_recording_the_shares_leaves_the_training_run_unchanged(monkeypatch):
    """The grad/* metrics only add keys: every other number of a run is the same with and
    without them (no random stream, parameter or gradient is touched)."""
    from fibration_theory.simulations import token_efficiency as te
    from fibration_theory.simulations.methods import all_methods

    cfg = te.SeqConfig(token_budget=1800, epochs=2)
    m = all_methods()["fiberpo"]
    with_shares = te.train(cfg, m, m.params(3.0), seed=1)
    monkeypatch.setattr(gs, "update_metrics", lambda *a, **k: {})
    without = te.train(cfg, m, m.params(3.0), seed=1)
    assert len(with_shares.curve) == len(without.curve) > 2
    for a, b in zip(with_shares.curve, without.curve):
        assert {k: v for k, v in a.items() if not k.startswith("grad/")} == b
    assert any(p.get("grad/coupling_norm", 0) > 0 for p in with_shares.curve)
    extra = {k for k in with_shares.final if k.startswith("mean_grad/")}
    assert extra and {k: v for k, v in with_shares.final.items()
                      if k not in extra and k != "sec_per_update"} == {
        k: v for k, v in without.final.items() if k != "sec_per_update"}


def test_cosines_with_the_ungated_and_grpo_gradients():
    """On-policy every gate is the identity: both cosines are 1. Off-policy they are the
    cosines of M^T c with M^T (mu A) and M^T c_grpo."""
    g = torch.Generator().manual_seed(4)
    x, adv, h = _batch(4, 0.3)
    M = torch.randn(x.numel(), 9, generator=g, dtype=F64)
    theta = torch.randn(9, generator=g, dtype=F64, requires_grad=True)
    lp = (M @ theta).reshape(x.shape)
    on = gs.update_metrics("fiberpo", lp, lp, adv, h, {}, [theta])
    assert on["grad/cos_ungated"] == pytest.approx(1.0, abs=1e-12)
    assert on["grad/cos_grpo"] == pytest.approx(1.0, abs=1e-12)
    off = gs.update_metrics("fiberpo", lp, lp - x, adv, h, {}, [theta])
    c = gs.coefficients("fiberpo", x, adv, h, {})
    cg = gs.coefficients("grpo", x, adv, h, {})["total"]
    gt, gu, gg = (M.T @ v.reshape(-1) for v in (c["total"], c["ungated"], cg))
    assert off["grad/cos_ungated"] == pytest.approx(float(gt @ gu / (gt.norm() * gu.norm())),
                                                    rel=1e-12)
    assert off["grad/cos_grpo"] == pytest.approx(float(gt @ gg / (gt.norm() * gg.norm())),
                                                 rel=1e-12)
    assert off["grad/cos_grpo"] < 0.999


def test_a_step_without_gradient_records_nothing():
    """Every advantage 0: no share, cosine or zeroed fraction is defined, none is recorded
    (so the update's mean runs over the steps that have a gradient)."""
    x, _, h = _batch(5, 0.2)
    theta = torch.zeros(x.shape, dtype=F64, requires_grad=True)
    lp = theta + x
    assert gs.update_metrics("fiberpo", lp, theta.detach(), torch.zeros_like(x), h, {},
                             [theta]) == {}
    c = gs.coefficients("grpo", x, torch.zeros_like(x), h, {})
    assert gs.coefficient_metrics(c, h.mask) == {}


def test_tally_averages_each_key_over_the_steps_that_report_it():
    from fibration_theory.simulations.diagnostics import Tally

    t = Tally()
    t.add({"a": 1.0, "grad/x": 0.5})
    t.add({"a": 3.0})
    assert t.mean() == {"a": 2.0, "grad/x": 0.5} and t.n == 2


def test_tuning_runs_skip_the_shares_and_evaluation_runs_record_them():
    """The runner entry point records grad/* in evaluation runs only; the rest is the same."""
    from fibration_theory.simulations import token_efficiency as te
    from fibration_theory.simulations.methods import all_methods
    from fibration_theory.simulations.runner import RunSpec

    cfg = te.SeqConfig(token_budget=900, epochs=2)
    params = tuple(sorted(all_methods()["fiberpo"].params(3.0).items()))
    runs = {role: te.run_one(cfg, RunSpec("sequence", "fiberpo", "x3", role, 1, params))
            for role in ("tune", "eval")}
    assert not any(k.startswith("grad/") for p in runs["tune"].curve for k in p)
    assert any(k.startswith("grad/") for p in runs["eval"].curve for k in p)
    for a, b in zip(runs["eval"].curve, runs["tune"].curve):
        assert {k: v for k, v in a.items() if not k.startswith("grad/")} == b
