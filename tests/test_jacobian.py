"""FiberPO's Jacobian (Prop 5.2, eq 20; Properties 5.3-5.5), g_agg (eq 10), Derivation IV and F3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fibration_theory.proofs import cert_fiberpo_jacobian as cj
from fibration_theory.proofs import cert_findings_gates as cg
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fibration_theory import gating
from fibration_theory.bundles import fiberpo_bundle, flatten_tokens, g_agg_reference
from fibration_theory.hierarchy import Hierarchy

# Eq 20 and autograd round differently; relative to 1 + |J| this is ~1e4 ulps.
JACOBIAN_RTOL = 1e-12
# g_agg evaluated by two float64 formulas: (k+1) C - k x with k <= 64 loses <= ~7 bits.
GATE_TOL = 1e-13

HYP = settings(deadline=None, derandomize=True, max_examples=30)


@st.composite
def smooth_trajectories(draw, max_rows: int = 3, max_len: int = 6):
    """Trajectory-only batch (no empty rows) with log-ratios at least ``KINK_MARGIN`` from every
    kink of FiberPO's gate (nonzero, |u|, |v| != eps, aggregates != C, C*); one trajectory's
    positive channel is sometimes pushed into the middle of its rollback window."""
    lengths = [draw(st.integers(1, max_len)) for _ in range(draw(st.integers(1, max_rows)))]
    bud = {"c_plus": draw(st.floats(0.02, 0.3)), "c_minus": draw(st.floats(0.02, 0.3)),
           "eps": draw(st.floats(0.01, 0.3))}
    rows = []
    for n in lengths:
        scale = draw(st.sampled_from([0.01, 0.05, 0.15, 0.4]))
        bias = draw(st.floats(-1, 1)) * scale
        rows.append([bias + scale * draw(st.floats(-1, 1)) for _ in range(n)])
    if draw(st.booleans()):
        pos = [v for v in rows[0] if v > 0]
        if pos:
            f = bud["c_plus"] * (1 + 0.5 / lengths[0]) * lengths[0] / sum(pos)
            rows[0] = [v * f if v > 0 else v for v in rows[0]]
    width = max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)
    h = Hierarchy.from_padded(mask)
    traj, length = cj.flat_layout(h)
    flat = flatten_tokens(x, h)
    assume(cj.kink_distance(flat, traj, length, bud["c_plus"], bud["c_minus"], bud["eps"])
           > cj.KINK_MARGIN)
    return h, x, bud


# --------------------------------------------------------------------------- Prop 5.2
@HYP
@given(smooth_trajectories())
def test_eq20_equals_autograd_of_closed_form_and_fbg(case):
    """Property: eq 20 is the Jacobian dG_i/dr_j of eq 7, for gating's closed form and for the
    generic FBG with App E.5.4's objects, at smooth points."""
    h, x, bud = case
    traj, length = cj.flat_layout(h)
    flat = flatten_tokens(x, h)
    ref, _, _ = cj.jacobian_eq20(flat, traj, length, bud["c_plus"], bud["c_minus"], bud["eps"])
    for name, fn in (("closed", gating.fiberpo_log_ratio), ("fbg", cj._fbg_log_g)):
        jac = cj.autograd_jacobian(lambda y, hh, fn=fn: fn(y, hh, **bud), flat, h)
        gap = float(((jac - ref).abs() / (1 + ref.abs())).max())
        assert gap <= JACOBIAN_RTOL, f"{name}: gap={gap:.2e}, x={x}, {bud}"


@HYP
@given(smooth_trajectories())
def test_jacobian_is_block_diagonal_over_trajectories(case):
    """Property 5.3: dG_i/dr_j = 0 exactly whenever i and j lie in different trajectories."""
    h, x, bud = case
    traj, _ = cj.flat_layout(h)
    jac = cj.autograd_jacobian(lambda y, hh: gating.fiberpo_log_ratio(y, hh, **bud),
                               flatten_tokens(x, h), h)
    cross = jac[traj[:, None] != traj[None, :]]
    assert cross.numel() == 0 or float(cross.abs().max()) == 0.0, f"x={x}"


@HYP
@given(smooth_trajectories())
def test_jacobian_is_identity_at_and_near_on_policy(case):
    """Property 5.4: at r = 1 (and for log-ratios far inside every budget) J = I."""
    h, x, bud = case
    flat = flatten_tokens(x, h)
    small = 1e-3 * min(bud.values())
    for pt in (torch.zeros_like(flat), flat / flat.abs().max() * small):
        for fn in (gating.fiberpo_log_ratio, cj._fbg_log_g):
            jac = cj.autograd_jacobian(lambda y, hh, fn=fn: fn(y, hh, **bud), pt, h)
            gap = float((jac - torch.eye(flat.numel(), dtype=torch.float64)).abs().max())
            assert gap <= JACOBIAN_RTOL, f"point={pt}, gap={gap:.2e}"


@HYP
@given(smooth_trajectories())
def test_coupling_term_scales_as_one_over_length_outside_rollback(case):
    """Property 5.5 (qualified): T |(b)_ij| <= 1 when neither channel of the trajectory rolls
    back; in rollback, (b)_ij for j in the rolling channel is in [-1 - 1/T, -1] (order one)."""
    h, x, bud = case
    traj, length = cj.flat_layout(h)
    flat = flatten_tokens(x, h)
    args = (flat, traj, length, bud["c_plus"], bud["c_minus"], bud["eps"])
    _, _, b = cj.jacobian_eq20(*args)
    terms = cj.eq20_terms(*args)
    rolling_traj = (terms.gamma < 0).any(1)
    t_row = length[traj]
    for i in range(flat.numel()):
        same = traj == traj[i]
        if not bool(rolling_traj[traj[i]]):
            assert float((t_row[i] * b[i, same]).abs().max()) <= 1 + 1e-12, f"x={x}"
        else:
            chan = torch.where(terms.sign > 0, 0, 1)
            rolls = terms.gamma[traj[i], chan] < 0
            vals = b[i, same & rolls]
            assert bool(((vals <= -1 + 1e-12) & (vals >= -1 - 1 / t_row[i] - 1e-12)).all()), \
                f"x={x}, b={vals}"


@dataclasses.dataclass(frozen=True)
class GradCase:
    """One smooth point of FiberPO's gate for ``torch.autograd.gradcheck``."""

    name: str
    x: tuple[tuple[float, ...], ...]
    c_plus: float = 0.1
    c_minus: float = 0.08
    eps: float = 0.05


GRAD_CASES = [
    GradCase("G-I/L-I", ((0.01, -0.02, 0.015), (0.005, -0.01, 0.0))),
    GradCase("plus-rollback", ((0.3, 0.15, -0.02, 0.0),)),
    GradCase("minus-zeroed", ((-0.4, -0.3, 0.02),)),
    GradCase("fiber-clipped", ((0.2, -0.1, 0.01, 0.02, -0.005),), eps=0.03),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_gradcheck_fbg_and_closed_form(case: GradCase):
    rows = [list(r) for r in case.x]
    width = max(len(r) for r in rows)
    mask = torch.tensor([[j < len(r) for j in range(width)] for r in rows])
    x = torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)
    # shift exact zeros off the kink at log r = 0: gradcheck needs a smooth point
    x = torch.where(x == 0, torch.full_like(x, 1e-3), x)
    h = Hierarchy.from_padded(mask)
    bud = {"c_plus": case.c_plus, "c_minus": case.c_minus, "eps": case.eps}
    traj, length = cj.flat_layout(h)
    flat = flatten_tokens(x, h).clone().requires_grad_(True)
    assert cj.kink_distance(flat.detach(), traj, length, **bud) > 1e-5, case.name
    fbg = fiberpo_bundle(h, **bud)
    assert torch.autograd.gradcheck(fbg.log_ratio_map, (flat,))

    def closed(f):
        y = torch.zeros_like(x).masked_scatter(mask, f)
        return gating.fiberpo_log_ratio(y, h, **bud)[mask]
    assert torch.autograd.gradcheck(closed, (flat,))


# --------------------------------------------------------------------------- g_agg (V12)
@st.composite
def gate_points(draw):
    """``(x, C, k)`` with C in [0.01, 0.5], integer k in [1, 64], x anywhere in +-2.5 C*,
    sometimes exactly on a regime boundary."""
    c = draw(st.floats(0.01, 0.5))
    k = float(draw(st.integers(1, 64)))
    star = (1 + 1 / k) * c
    x = draw(st.one_of(st.floats(-2.5 * star, 2.5 * star),
                       st.sampled_from([c, -c, star, -star, 0.0])))
    return x, c, k


@settings(deadline=None, derandomize=True, max_examples=200)
@given(gate_points())
def test_g_agg_matches_reference_and_regime_slopes(pt):
    """Property: gating.g_agg equals the independent reference, and its autograd slope is 1 in
    pass-through, -k in rollback and 0 when zeroed (eq 10)."""
    x, c, k = pt
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    got = gating.g_agg(xt, c, k)
    ref = g_agg_reference(xt.detach(), c, k)
    assert abs(float(got.detach()) - float(ref)) <= GATE_TOL, f"x={x}, C={c}, k={k}"
    (slope,) = torch.autograd.grad(got, xt)
    want = 1.0 if abs(x) <= c else (-k if abs(x) < (1 + 1 / k) * c else 0.0)
    assert float(slope) == want, f"x={x}, C={c}, k={k}, slope={float(slope)}"


@settings(deadline=None, derandomize=True, max_examples=200)
@given(gate_points())
def test_g_agg_is_continuous_odd_and_bounded(pt):
    """Property: |g(x +- d) - g(x)| <= k d (Lipschitz, so continuous), g(-x) = -g(x), |g| <= C."""
    x, c, k = pt
    d = 1e-9
    g = [float(gating.g_agg(torch.tensor(v, dtype=torch.float64), c, k)) for v in (x - d, x, x + d)]
    assert max(abs(g[0] - g[1]), abs(g[2] - g[1])) <= k * d * (1 + 1e-6) + GATE_TOL, f"{pt}"
    neg = float(gating.g_agg(torch.tensor(-x, dtype=torch.float64), c, k))
    assert neg == -g[1] and abs(g[1]) <= c + GATE_TOL, f"{pt}"


@settings(deadline=None, derandomize=True, max_examples=25)
@given(st.integers(0, 2**31 - 1))
def test_rollback_gradient_is_restorative_for_aligned_advantage(seed):
    """Property: Section 5.1, with the advantage's sign equal to the drifting channel's, the
    gradient of J along the drift is negative in rollback and positive in pass-through."""
    counts = cg.restorative_signs(np.random.default_rng(seed), n=1)
    assert counts.get("rollback/aligned/+", 0) == 0 and counts.get("pass/aligned/-", 0) == 0, \
        f"seed={seed}: {counts}"


# --------------------------------------------------------------------------- certificates
def _rng():
    return np.random.default_rng(7)


def test_v11_passes():
    rec = cj.check_jacobian.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_v11_fails_on_eq20_with_the_channel_budgets_swapped():
    def broken(x, traj, length, c_plus, c_minus, eps):
        return cj.jacobian_eq20(x, traj, length, c_minus, c_plus, eps)[0]
    rec = cj.check_jacobian.certificate.run(_rng(), jacobian_fn=broken)
    assert rec.status == "fail", rec.detail


def test_v11_fails_on_a_closed_form_coupling_trajectories():
    def broken(x, h, *, c_plus, c_minus, eps):
        out = gating.fiberpo_log_ratio(x, h, c_plus=c_plus, c_minus=c_minus, eps=eps)
        return out + 1e-4 * torch.where(h.mask, x, 0.0).sum()
    rec = cj.check_jacobian.certificate.run(_rng(), closed_fn=broken)
    assert rec.status == "fail", rec.detail


def test_v12_passes():
    rec = cg.check_g_agg.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_v12_fails_on_a_gate_with_the_wrong_rollback_slope():
    def broken(x, c, k):
        return gating.g_agg(x, c, k + 1)
    rec = cg.check_g_agg.certificate.run(_rng(), g_agg_fn=broken)
    assert rec.status == "fail", rec.detail


def test_v13_passes_and_plots():
    rec = cg.check_derivation_iv.certificate.run(_rng())
    assert rec.status == "pass", rec.detail
    fig, ax = cg.plot_v13(cg.v13_curves())
    assert len(ax.get_lines()) == 6
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_v13_fails_on_a_wrong_error_evaluation():
    def broken(t, c, eps, a):
        e = cg.derivation_iv_error(t, c, eps, a)
        return dataclasses.replace(e, sup=e.sup / 2)
    rec = cg.check_derivation_iv.certificate.run(_rng(), error_fn=broken)
    assert rec.status == "fail", rec.detail


def test_v13_sup_error_does_not_vanish_with_length():
    sups = [cg.derivation_iv_error(float(t), 0.1, 0.02, 0.0).sup for t in (4, 64, 1024)]
    assert all(abs(s - 0.1) <= 1e-15 for s in sups), sups


def test_f3_passes():
    rec = cg.check_sign_zero.certificate.run(_rng())
    assert rec.status == "pass", rec.detail


def test_f3_fails_when_the_library_uses_sign_zero_minus_one():
    def broken(x, h, *, c_plus, c_minus, eps):
        # the same closed form, evaluated as the left limit at every zero token
        return gating.fiberpo_log_ratio(torch.where(x == 0, -1e-300 * torch.ones_like(x), x),
                                        h, c_plus=c_plus, c_minus=c_minus, eps=eps)
    rec = cg.check_sign_zero.certificate.run(_rng(), closed_fn=broken)
    assert rec.status == "fail", rec.detail


def test_naive_fbg_form_gets_the_on_policy_gradient_wrong():
    table = cg.on_policy_table()
    assert table["FBG F=max(l log r,0)/T via relu"] == pytest.approx(1.0)   # J = 0
    assert table["FBG F=max(l log r,0)/T via clamp(min=0)"] == pytest.approx(1.0)  # J = 2 I
    assert table["FBG toolkit F (sign(0)=+1)"] == 0.0
