"""Every registered objective against a literal float64 formula: value and gradient."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from strategies import batches

from fibration_theory import Hierarchy, losses

#: float64 vectorised vs loop sums
VALUE_TOL = 1e-12
#: central differences with h = 1e-6 on smooth pieces: truncation ~h^2, rounding ~1e-16/h
FD_TOL = 1e-7
FD_STEP = 1e-6

BASELINE_NAMES = ["ppo_clip", "grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "gmpo", "cispo",
                  "sapo", "apc", "fiberpo"]


def _batch(seed: int, b: int = 5, t: int = 6, scale: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    x = (torch.rand(b, t, generator=g, dtype=torch.float64) * 2 - 1) * scale
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    return mask, old, x, adv


def test_registry_lists_the_issue_names():
    need = set(["ppo_clip", "grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "gmpo", "cispo", "apc", "fiberpo", "fiberpo_domain", "sapo"])
    assert need <= set(losses.available())


@pytest.mark.parametrize("name", BASELINE_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_matches_formula(name, seed):
    mask, old, x, adv = _batch(seed)
    out = losses.compute(name, old + x, old, adv, mask)
    want = -ref.objective(name, x.numpy(), adv.numpy(), mask.numpy())
    assert abs(out.loss.item() - want) <= VALUE_TOL * max(1, abs(want)), (name, seed)


# gspo_token's and cispo's values are not functions whose gradient is their own gradient
# (stop-gradients), so the finite-difference check applies to the others
FD_NAMES = [n for n in BASELINE_NAMES if n not in ("gspo_token", "cispo")]


@pytest.mark.parametrize("name", FD_NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences_of_formula(name, seed):
    mask, old, x, adv = _batch(seed)
    lp = (old + x).requires_grad_(True)
    losses.compute(name, lp, old, adv, mask).loss.backward()
    xn, an, mn = x.numpy(), adv.numpy(), mask.numpy()
    fd = np.zeros_like(xn)
    for b, t in zip(*np.nonzero(mn)):
        e = np.zeros_like(xn)
        e[b, t] = FD_STEP
        fd[b, t] = -(ref.objective(name, xn + e, an, mn) - ref.objective(name, xn - e, an, mn)) / (
            2 * FD_STEP)
    assert np.allclose(lp.grad.numpy()[mn], fd[mn], atol=FD_TOL, rtol=0), name


def test_gspo_token_and_cispo_gradients_by_hand():
    """CISPO: dJ/dlog r = mu clip(r) A; GSPO-token: mu s A / T_tau per token where unclipped."""
    mask, old, x, adv = _batch(3, scale=0.5)
    lp = (old + x).requires_grad_(True)
    losses.compute("cispo", lp, old, adv, mask).loss.backward()
    r = x.exp()
    want = -(r.clamp(0, 1.28) * adv * mask) / mask.sum()
    assert torch.allclose(lp.grad, want, atol=1e-15)
    lp.grad = None
    x2 = x * 1e-4  # inside GSPO's clip range
    lp2 = (old + x2).requires_grad_(True)
    losses.compute("gspo_token", lp2, old, adv, mask).loss.backward()
    n = mask.sum(1, keepdim=True).double()
    s = ((x2 * mask).sum(1, keepdim=True) / n).exp()
    want = -(s * adv * mask) / (n * mask.shape[0])
    assert torch.allclose(lp2.grad, want, atol=1e-15)


@dataclasses.dataclass(frozen=True)
class GradCase:
    name: str
    params: dict
    levels: bool = False

    def __str__(self) -> str:
        return f"{self.name}-{'-'.join(f'{k}{v}' for k, v in self.params.items())}"


GRAD_CASES = [GradCase(n, {}) for n in BASELINE_NAMES if n not in ("gspo_token", "cispo")] + [
    GradCase("ppo_clip", {"dual_clip": 3.0}),
    GradCase("apc", {"delta": 0.05}),
    GradCase("fiberpo", {"c_plus": 0.02, "c_minus": 0.01, "eps": 0.05}),
    GradCase("fiberpo_domain", {}, levels=True),
    GradCase("fiberpo_domain", {"c_plus": [0.3, 0.05, 0.02], "c_minus": [0.2, 0.03, 0.01]},
             levels=True),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(case, seed):
    """torch.autograd.gradcheck in float64 (inputs drawn away from kinks almost surely)."""
    mask, old, x, adv = _batch(seed, b=4, t=4)
    h = Hierarchy.from_padded(mask, [0, 0, 1, 2], [0, 0, 0, 1]) if case.levels else None
    lp = (old + x).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda y: losses.compute(case.name, y, old, adv, mask, hierarchy=h, **case.params).loss,
        (lp,), eps=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(batch=batches(allow_empty_rows=True))
def test_on_policy_gradient_equals_ppo_seq_mean(batch):
    """Property: at on-policy the FiberPO and FiberPO-Domain gradients equal PPO-clip's with
    seq-mean-token-mean weights (Thm 4.5), empty rows included."""
    old = torch.zeros_like(batch.log_ratio)
    grads = {}
    for name, kw in [("fiberpo", {}), ("fiberpo_domain", {"hierarchy": batch.hierarchy()}),
                     ("ppo_clip", {"agg": "seq-mean-token-mean"})]:
        lp = old.clone().requires_grad_(True)
        losses.compute(name, lp, old, batch.advantages, batch.mask, **kw).loss.backward()
        grads[name] = lp.grad
    assert torch.allclose(grads["fiberpo"], grads["ppo_clip"], atol=1e-15), batch
    assert torch.allclose(grads["fiberpo_domain"], grads["ppo_clip"], atol=1e-15), batch


def test_api_formulas_ppo_and_gspo():
    """The issue's fixed formulas for ppo_clip (token-mean) and gspo (seq-mean-token-mean)."""
    mask, old, x, adv = _batch(7, scale=1.0)
    lo, hi = 0.1, 0.3
    r = x.exp()
    m = mask.double()
    want = -(m * torch.minimum(r * adv, r.clamp(1 - lo, 1 + hi) * adv)).sum() / m.sum()
    got = losses.compute("ppo_clip", old + x, old, adv, mask, eps_low=lo, eps_high=hi)
    assert torch.allclose(got.loss, want, rtol=1e-14)
    xs = x * 1e-3
    s = ((xs * m).sum(1) / m.sum(1)).exp()
    a = (adv * m).sum(1) / m.sum(1)
    want = -torch.minimum(s * a, s.clamp(1 - lo * 1e-3, 1 + hi * 1e-3) * a).mean()
    got = losses.compute("gspo", old + xs, old, adv, mask, eps_low=lo * 1e-3, eps_high=hi * 1e-3,
                         agg="seq-mean-token-mean")
    assert torch.allclose(got.loss, want, rtol=1e-14)


def test_empty_rows_are_dropped_and_counted():
    """A row without tokens gets weight 0, |Tj| counts only rows with tokens."""
    mask, old, x, adv = _batch(4)
    mask[2] = False
    out = losses.compute("fiberpo", old + x, old, adv, mask)
    keep = torch.tensor([0, 1, 3, 4])
    sub = losses.compute("fiberpo", (old + x)[keep], old[keep], adv[keep], mask[keep])
    assert torch.allclose(out.loss, sub.loss, rtol=1e-15)
    assert out.metrics["empty_rows"] == 1.0
    assert torch.all(out.weights[2] == 0)


def test_no_overflow_at_700():
    mask, old, x, adv = _batch(5)
    x = torch.sign(x) * 700.0
    for name in losses.available():
        lp = (old + x).requires_grad_(True)
        out = losses.compute(name, lp, old, adv, mask)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(lp.grad).all(), name
        assert all(np.isfinite(v) for v in out.metrics.values()), (name, out.metrics)


def test_apc_shared_states_couple_tokens():
    """Two tokens at one state share T_s delta: B_i = 2 delta - |r_j - 1|."""
    mask = torch.ones(1, 2, dtype=torch.bool)
    x = torch.log(torch.tensor([[1.3, 1.05]], dtype=torch.float64))
    adv = torch.ones(1, 2, dtype=torch.float64)
    out = losses.compute("apc", x, torch.zeros_like(x), adv, mask, delta=0.1,
                         state_ids=torch.tensor([[7, 7]]))
    # B_0 = 0.2 - 0.05 = 0.15 -> 1.15; B_1 = 0.2 - 0.3 < 0 -> zeroed -> 1.0
    assert torch.allclose(out.gated_ratio, torch.tensor([[1.15, 1.0]], dtype=torch.float64))
    assert out.metrics["apc/zeroed_frac"] == 0.5


def test_metrics_present():
    mask, old, x, adv = _batch(6)
    h = Hierarchy.from_padded(mask, [0, 0, 1, 1, 2], [0, 0, 0, 0, 1])
    out = losses.compute("fiberpo_domain", old + x, old, adv, mask, hierarchy=h)
    for key in ("clip_frac", "approx_kl/k1", "approx_kl/k3", "tv/token", "tv/trajectory",
                "tv/group", "tv/domain", "ratio/mean", "ratio/max", "regime/G-I", "regime/L-I",
                "regime/domain/G-I", "rollback_frac/trajectory"):
        assert key in out.metrics, key
    assert abs(sum(out.metrics[f"regime/{k}"] for k in
                   ("G-I", "G-II,r", "G-II", "G-III,r", "G-III")) - 1) < 1e-12
