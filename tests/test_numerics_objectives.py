"""Closed-form checks of the numerics of single objectives at extreme log-ratios: the clipped
branch without NaN, the named overflow and its two remedies, APC's budget without
cancellation, SAPO's saturation, CISPO's and GSPO-token's exact values, half precision."""

from __future__ import annotations

import math

import pytest
import torch
from docs_examples import run_example

from fibration_theory import losses
from fibration_theory.losses.apc import apc_gate

F32, F64 = torch.float32, torch.float64
#: float32 closed forms: a few ulps of float32 (2^-24 = 6e-8 relative each)
F32_ULPS = 4 * 2.0**-24
#: float64 closed forms: a few ulps of float64
F64_ULPS = 4 * 2.0**-53


def one_token(x: float, adv: float, dtype=F32, **params):
    """``compute`` on a ``[1, 1]`` batch with log-ratio ``x``; returns ``(output, grad)``."""
    lp = torch.tensor([[x]], dtype=dtype, requires_grad=True)
    out = losses.compute(params.pop("name", "ppo_clip"), lp, torch.zeros(1, 1, dtype=dtype),
                         torch.tensor([[adv]], dtype=dtype), torch.ones(1, 1, dtype=torch.bool),
                         **params)
    out.loss.backward()
    return out, lp.grad


def test_clipped_token_at_89_in_float32_has_zero_gradient():
    """float32 PPO-clip at log r = 89 with A = +1 is clipped: loss -1.2, gradient exactly 0."""
    out, grad = one_token(89.0, 1.0)
    assert out.loss.item() == pytest.approx(-1.2, rel=F32_ULPS)
    assert grad.item() == 0.0


@pytest.mark.parametrize("name", ["ppo_clip", "grpo", "dr_grpo", "dapo", "gspo", "gmpo"])
def test_unclipped_overflow_names_log_prob_row_token_and_fixes(name):
    """A = -1 leaves exp(log r) unclipped; at log r in 270..300 (row means too) it is beyond
    float32: a ValueError names log_prob, the row and the token with the largest log-ratio,
    and both remedies."""
    lp = torch.zeros(2, 3, dtype=F32)
    lp[1] = torch.tensor([270.0, 270.0, 300.0])
    lp.requires_grad_(True)
    adv = -torch.ones(2, 3, dtype=F32)
    with pytest.raises(ValueError) as info:
        losses.compute(name, lp, torch.zeros(2, 3, dtype=F32), adv,
                       torch.ones(2, 3, dtype=torch.bool))
    msg = str(info.value)
    assert msg.startswith("log_prob: ") and "log_prob[1, 2] (row 1, token 2)" in msg, msg
    assert "dual_clip=3" in msg and "log_ratio_clamp=20.0" in msg, msg


@pytest.mark.parametrize("name", ["ppo_clip", "grpo", "dr_grpo", "dapo"])
def test_dual_clip_bounds_a_huge_negative_advantage_ratio(name):
    """With ``dual_clip=3`` the same token is gated to 3: finite loss, zero gradient."""
    out, grad = one_token(89.0, -1.0, name=name, dual_clip=3.0)
    assert out.gated_ratio.item() == 3.0 and grad.item() == 0.0
    assert math.isfinite(out.loss.item())


def test_log_ratio_clamp_is_off_by_default_and_bounds_when_on():
    """Off by default (the overflow raises); ``log_ratio_clamp=20`` gates e^89 to e^20 with a
    zero gradient and reports the clamped fraction; inside the clamp nothing changes."""
    with pytest.raises(ValueError, match="^log_prob: "):
        one_token(89.0, -1.0)
    out, grad = one_token(89.0, -1.0, log_ratio_clamp=20.0)
    assert out.gated_ratio.item() == pytest.approx(math.exp(20.0), rel=F32_ULPS)
    assert grad.item() == 0.0 and out.metrics["log_ratio/clamped_frac"] == 1.0
    inside, g_in = one_token(5.0, -1.0, log_ratio_clamp=20.0)
    plain, g_plain = one_token(5.0, -1.0)
    assert inside.loss.item() == plain.loss.item() and g_in.item() == g_plain.item() != 0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "20", True, [20.0]])
def test_log_ratio_clamp_must_be_a_positive_real(bad):
    with pytest.raises(ValueError, match="^log_ratio_clamp "):
        one_token(1.0, 1.0, log_ratio_clamp=bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", losses.available())
def test_half_inputs_keep_their_dtype_and_get_a_gradient(name, dtype):
    """The loss has the input dtype and its gradient reaches the half-precision log_prob; the
    RGF triple is the float32 it was computed in."""
    g = torch.Generator().manual_seed(0)
    lp = (torch.rand(3, 4, generator=g) * 0.2 - 1.0).to(dtype).requires_grad_(True)
    old = torch.full((3, 4), -1.0, dtype=dtype)
    adv = torch.tensor([[1.0], [-0.5], [0.25]]).expand(3, 4).to(dtype)
    out = losses.compute(name, lp, old, adv, torch.ones(3, 4, dtype=torch.bool))
    out.loss.backward()
    assert out.loss.dtype == dtype and lp.grad.dtype == dtype
    assert out.rgf.gated_ratio.dtype == F32
    assert torch.isfinite(lp.grad).all() and lp.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [F64, F32, torch.bfloat16])
@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_apc_keeps_its_budget_at_log_ratio_40(dtype, adv):
    """delta = 0.2, each token its own state: B = delta, so G = 1 + 0.2 at log r = 40 (a
    cancelling ``delta - |d| + |d|`` gives 1.0), with a zero gradient."""
    out, grad = one_token(40.0, adv, dtype=dtype, name="apc", delta=0.2)
    tol = F64_ULPS if dtype == F64 else F32_ULPS
    assert out.gated_ratio.item() == pytest.approx(1.2, rel=tol)
    assert out.loss.item() == pytest.approx(-1.2 * adv, rel=tol if dtype != torch.bfloat16
                                            else 2.0**-8)
    assert grad.item() == 0.0


def _apc_loop(x: list[list[float]], states: list[list[int]], delta: float) -> list[list[float]]:
    """Eq 3 token by token: ``B_i = T_s delta - sum of the others' |r - 1|`` summed directly."""
    flat = [(b, t) for b in range(len(x)) for t in range(len(x[0]))]
    out = [[0.0] * len(x[0]) for _ in x]
    for b, t in flat:
        mates = [(c, u) for c, u in flat if states[c][u] == states[b][t]]
        others = sum(abs(math.expm1(x[c][u])) for c, u in mates if (c, u) != (b, t))
        bound = max(len(mates) * delta - others, 0.0)
        out[b][t] = 1 + min(max(math.expm1(x[b][t]), -bound), bound)
    return out


def test_apc_shared_states_at_extreme_ratios_match_the_loop():
    """Tokens sharing a state with a huge deviation are zeroed, the huge one keeps the budget
    the others leave it; equal to the literal loop to float64 rounding, gradient finite."""
    x = torch.tensor([[40.0, math.log(1.05), -3.0], [math.log(0.9), 600.0, 0.1]], dtype=F64,
                     requires_grad=True)
    states = [[0, 0, 1], [1, 2, 2]]
    mask = torch.ones(2, 3, dtype=torch.bool)
    g, _, zeroed = apc_gate(x, mask, torch.tensor(states), 0.2)
    want = torch.tensor(_apc_loop(x.tolist(), states, 0.2), dtype=F64)
    assert torch.allclose(g, want, rtol=F64_ULPS, atol=0), (g, want)
    assert g[0, 0].item() == pytest.approx(1 + 0.4 - 0.05, rel=F64_ULPS)
    assert bool(zeroed[0, 1]) and bool(zeroed[1, 2])
    g.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("x", [1e4, 700.0, -1e4])
@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_sapo_saturates_without_nan(x, adv):
    """float64 SAPO at log r = +-1e4: the gate is 4/tau (or 4/tau sigmoid(-tau)) and its
    gradient 0 to float64 rounding, never 0 * inf."""
    out, grad = one_token(x, adv, dtype=F64, name="sapo")
    tau = 1.0 if adv > 0 else 1.05
    want = 4 / tau / (1 + math.exp(-tau * math.expm1(x))) if x < 0 else 4 / tau
    assert out.gated_ratio.item() == pytest.approx(want, rel=F64_ULPS)
    assert math.isfinite(grad.item()) and abs(grad.item()) < 1e-300


def test_cispo_value_is_the_clip_exactly_at_large_ratios():
    """CISPO's gated value is ``clip(r)`` to float32 rounding at log r = 700 (a ``c - x + x``
    construction loses 1e-5 of it there)."""
    out, grad = one_token(700.0, 1.0, name="cispo")
    assert out.gated_ratio.item() == pytest.approx(1.28, rel=F32_ULPS)
    assert grad.item() == pytest.approx(-1.28, rel=F32_ULPS)


def test_gspo_token_value_is_the_sequence_ratio_at_large_token_ratios():
    """GSPO-token's value is ``s = exp(mean log r)`` even when the token log-ratios are large
    and cancel (a ``(log s + x) - x`` construction loses 3e-5 of it in float32)."""
    lp = torch.tensor([[1000.3, -1000.1]], dtype=F32, requires_grad=True)
    out = losses.compute("gspo_token", lp, torch.zeros(1, 2, dtype=F32),
                         -torch.ones(1, 2, dtype=F32), torch.ones(1, 2, dtype=torch.bool))
    want = math.exp(sum(lp.tolist()[0]) / 2)  # the float32 inputs, exactly in float64
    assert torch.allclose(out.gated_ratio.double(), torch.full((1, 2), want, dtype=F64),
                          rtol=F32_ULPS, atol=0), out.gated_ratio


def test_docs_overflow_example_runs_as_written(tmp_path):
    """docs/api.md's overflow example prints what its comments say."""
    proc = run_example("api.md", "overflow", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "log_prob: objective 'ppo_clip' overflows at log_prob[0, 1]",
        "[[1.0, 3.0]] [[0.5, 0.0]]"], proc.stdout
