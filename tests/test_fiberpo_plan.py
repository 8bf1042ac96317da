"""FiberPO's gate package: the plan (validation, broadcast), the closed form at depth 0, 1, 2
against the generic FBG/FGH reference, the fast path against the closed form, the fast-path
switch, and the API of ``losses.compute`` around it (``metrics=False``, ``state_ids``)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from fibration_theory import Hierarchy, fiberpo, fused, gating, losses
from fibration_theory.bundles import fbg_fiberpo_log_ratio, fgh_fiberpo_domain_log_ratio
from fibration_theory.fiberpo import fast as fast_mod
from fibration_theory.losses.registry import REGISTRY

F64 = torch.float64
# two float64 routes to the same log G differ by O(T) rounded terms of size <= (T+1) C
CLOSED_FORM_TOL = 1e-12
# fast path vs closed form: the same terms, summed in other orders (a few ulps each)
FAST_TOL = 1e-13


def _batch(depth: int, seed: int = 0, b: int = 12, t: int = 7, scale: float = 0.15):
    """A padded batch with empty rows and holes, ``depth`` nested levels above the rows, and
    log-ratios large enough that some channels roll back or are zeroed."""
    rng = np.random.default_rng(seed)
    mask = torch.as_tensor(rng.random((b, t)) < 0.75)
    mask[0] = True
    mask[3] = False  # an empty row
    x = torch.as_tensor(rng.normal(scale=scale, size=(b, t)))
    x[1, :3] = 0.0  # on-policy ties (sign(0) = +1)
    levels = {}
    if depth >= 1:
        levels["domain"] = torch.as_tensor(np.arange(b) // 6)
    if depth >= 2:
        levels["group"] = torch.as_tensor(np.arange(b) // 3)
    h = Hierarchy.from_padded(mask, levels=levels or None)
    return h, x


# ---------------------------------------------------------------------------- the plan
def test_plan_broadcasts_a_shared_pair_and_keeps_per_level_budgets():
    h, _ = _batch(2)
    plan = fiberpo.gate_plan(h, c_plus=0.1, c_minus=0.05, eps=0.02, levels=True)
    assert plan.c_plus == (0.1, 0.1, 0.1) and plan.c_minus == (0.05, 0.05, 0.05)
    assert plan.names == ("domain", "group", "trajectory") and plan.depth == 2
    per = fiberpo.gate_plan(h, c_plus=[0.3, 0.2, 0.1], c_minus=torch.tensor([0.1, 0.1, 0.05], dtype=F64),
                            eps=0.02, levels=True)
    assert per.c_plus == (0.3, 0.2, 0.1) and per.c_minus == (0.1, 0.1, 0.05)
    flat = fiberpo.gate_plan(h, c_plus=0.1, c_minus=0.05, eps=0.02, levels=False)
    assert flat.depth == 0 and flat.names == ("trajectory",) and flat.c_plus == (0.1,)
    counts = plan.counts()
    assert [c.shape for c in counts] == [torch.Size([12])] * 3
    assert torch.equal(counts[-1], h.lengths)


@pytest.mark.parametrize("kwargs,name", [
    ({"c_plus": [0.1, 0.2]}, "c_plus"), ({"c_plus": [0.1, 0.2, 0.3, 0.4]}, "c_plus"),
    ({"c_minus": float("nan")}, "c_minus"), ({"c_plus": -0.1}, "c_plus"),
    ({"c_minus": [0.1, math.inf, 0.1]}, "c_minus"), ({"eps": -0.1}, "eps"),
    ({"eps": math.nan}, "eps"), ({"eps": [0.1, 0.1, 0.1]}, "eps"),
    ({"delta": 0.3}, "delta"), ({"c_plus": "0.1"}, "c_plus"),
])
def test_plan_refuses_bad_budgets_naming_them(kwargs, name):
    h, _ = _batch(2)
    kw = {"c_plus": 0.1, "c_minus": 0.05, "eps": 0.02, **kwargs}
    with pytest.raises(ValueError, match=name):
        fiberpo.gate_plan(h, levels=True, **kw)


def test_plan_accepts_delta_equal_to_the_sum_at_every_level():
    h, _ = _batch(1)
    plan = fiberpo.gate_plan(h, c_plus=[0.2, 0.1], c_minus=[0.1, 0.05], eps=0.02, levels=True,
                             delta=[0.3, 0.15])
    assert plan.c_plus == (0.2, 0.1)
    with pytest.raises(ValueError, match="delta.*at level 1"):
        fiberpo.gate_plan(h, c_plus=[0.2, 0.1], c_minus=[0.1, 0.05], eps=0.02, levels=True,
                          delta=[0.3, 0.3])


@pytest.mark.parametrize("c_plus", [[0.1, 0.2], [0.1]])
def test_fiberpo_refuses_per_level_budgets_naming_c_plus(c_plus):
    """Property: FiberPO gates one level, so a sequence budget is a ValueError naming
    c_plus that points at fiberpo_domain (not a TypeError)."""
    lp = torch.zeros(2, 3, dtype=F64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="c_plus.*fiberpo_domain"):
        losses.compute("fiberpo", lp, lp, lp + 1, mask, c_plus=c_plus)
    with pytest.raises(ValueError, match="c_plus"):
        gating.fiberpo_ratio(lp, Hierarchy.from_padded(mask), c_plus=c_plus, c_minus=0.1,
                             eps=0.1)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("call,name", [
    (lambda: gating.g_agg(float("nan"), 0.1, 3), "x"),
    (lambda: gating.g_agg(torch.tensor([0.1, math.nan]), 0.1, 3), "x"),
    (lambda: gating.g_agg(0.1, -0.1, 3), "c"),
    (lambda: gating.g_agg(0.1, math.nan, 3), "c"),
    (lambda: gating.g_agg(0.1, 0.1, -3), "k"),
    (lambda: gating.g_agg(0.1, 0.1, math.nan), "k"),
    (lambda: gating.logclip(torch.tensor([math.nan]), 0.1), "log_x"),
    (lambda: gating.logclip(torch.zeros(1), -1.0), "eps"),
    (lambda: gating.logclip(torch.zeros(1), math.inf), "eps"),
])
def test_elementwise_helpers_validate(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_regimes_and_aggregates_validate_like_the_entry_points():
    h, x = _batch(1)
    with pytest.raises(ValueError, match="eps"):
        gating.regimes(x, h, c_plus=0.1, c_minus=0.1, eps=-0.1)
    with pytest.raises(ValueError, match="c_minus"):
        gating.regimes(x, h, c_plus=0.1, c_minus=-0.1, eps=0.1, levels=True)
    bad = x.clone()
    bad[0, 0] = math.nan
    for fn in (gating.trajectory_aggregates, gating.level_aggregates):
        with pytest.raises(ValueError, match="log_ratio"):
            fn(bad, h)
    with pytest.raises(ValueError, match="log_ratio"):
        gating.regimes(bad, h, c_plus=0.1, c_minus=0.1, eps=0.1)
    # junk outside the mask is ignored, as everywhere
    junk = x.clone()
    junk[3, 0] = math.inf
    assert torch.equal(gating.trajectory_aggregates(junk, h)[0],
                       gating.trajectory_aggregates(x, h)[0])


def test_dr_grpo_refuses_an_infinite_norm_length():
    lp = torch.zeros(2, 3, dtype=F64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="norm_length"):
        losses.compute("dr_grpo", lp, lp, lp + 1, mask, norm_length=math.inf)


# ---------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_generic_reference(depth, seed):
    """Property: the closed form of one plan equals App E.5.4's FBG (depth 0) or App E.7's
    FGH (depth 1, 2; shared and per-level budgets) computed by the generic machinery."""
    h, x = _batch(depth, seed)
    budgets = [(0.05, 0.04, 0.03)]
    if depth:
        budgets.append(([0.08, 0.05, 0.03][-depth - 1:], [0.02, 0.06, 0.04][-depth - 1:], 0.03))
    for cp, cm, eps in budgets:
        plan = fiberpo.gate_plan(h, c_plus=cp, c_minus=cm, eps=eps, levels=depth > 0)
        got, reg = fiberpo.gate_log_ratio(fiberpo.masked(x, h), plan, stats=True)
        if depth == 0:
            ref = fbg_fiberpo_log_ratio(x, h, c_plus=cp, c_minus=cm, eps=eps)
        else:
            ref = fgh_fiberpo_domain_log_ratio(x, h, c_plus=cp, c_minus=cm, eps=eps)
        gap = float((got - ref)[h.mask].abs().max())
        assert gap <= CLOSED_FORM_TOL, f"depth {depth}, seed {seed}, {cp}: gap {gap:.2e}"
        # the batch exercises more than pass-through
        assert (reg.codes > 0).any()


def test_drifts_are_the_level_aggregates_minus_their_parents():
    h, x = _batch(2)
    aggs = gating.level_aggregates(x, h)
    dr = fiberpo.drifts(aggs)
    assert dr[0][0] is aggs[0][0]
    for k in (1, 2):
        assert torch.equal(dr[k][0], aggs[k][0] - aggs[k - 1][0])
        assert torch.equal(dr[k][1], aggs[k][1] - aggs[k - 1][1])


# ---------------------------------------------------------------------------- fast path
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_fast_path_equals_closed_form_in_value_gradient_and_regimes(depth):
    """Property: over one plan, the fast path's G, gradient of sum(w G), regime statistics
    and drifts equal the closed form's (regime decisions and drifts bit for bit)."""
    h, x = _batch(depth, seed=5)
    w = torch.as_tensor(np.random.default_rng(9).normal(size=x.shape))
    cp = [0.06, 0.05, 0.03][-depth - 1:] if depth else 0.03
    plan = fiberpo.gate_plan(h, c_plus=cp, c_minus=0.03, eps=0.03, levels=depth > 0)
    out = {}
    for fast in (True, False):
        y = x.clone().requires_grad_(True)
        g, reg = fiberpo.gate(y, plan, stats=True, fast=fast)
        (torch.where(h.mask, g, 0.0) * w).sum().backward()
        out[fast] = (g.detach(), y.grad, reg)
    (g1, d1, r1), (g0, d0, r0) = out[True], out[False]
    m = h.mask
    assert torch.allclose(g1[m], g0[m], rtol=FAST_TOL, atol=0)
    assert float((d1 - d0)[m].abs().max()) <= FAST_TOL * float((w.abs() * g0).sum()) * 8
    assert (r0.codes > 0).any()
    np.testing.assert_array_equal(r1.codes, r0.codes)
    for a in ("n_eps", "n_clip", "lengths"):
        np.testing.assert_array_equal(getattr(r1, a), getattr(r0, a))
    for (p1, m1), (p0, m0) in zip(r1.drifts, r0.drifts):
        assert torch.equal(p1, p0) and torch.equal(m1, m0)
    assert r1.occupancy() == r0.occupancy()


def test_switch_context_manager_and_argument(monkeypatch):
    """Property: ``fast_path(False)`` (and the explicit ``fast=False``, and the older
    ``fused.disabled()``) keep the fused Function from running; the setting is restored on
    exit, also after an exception; ``compiled`` is set and restored with it."""
    h, x = _batch(1)
    lp = x.clone().requires_grad_(True)
    calls = []
    real = fast_mod.FiberGate.apply
    monkeypatch.setattr(fast_mod.FiberGate, "apply",
                        lambda *a: calls.append(1) or real(*a))

    def run(**kw):
        return losses.compute("fiberpo_domain", lp, torch.zeros_like(x), torch.ones_like(x),
                              h.mask, hierarchy=h, **kw)

    ref = run()
    assert calls == [1] and fiberpo.fast_enabled()
    with fiberpo.fast_path(False):
        assert not fiberpo.fast_enabled()
        slow = run()
        with fiberpo.fast_path(True, compiled=False):
            assert fiberpo.fast_enabled()
        assert not fiberpo.fast_enabled()
    with fused.disabled():
        run()
    assert calls == [1] and fiberpo.fast_enabled() and not fiberpo.compile_enabled()
    assert math.isclose(float(slow.loss.detach()), float(ref.loss.detach()), rel_tol=1e-13)
    plan = fiberpo.gate_plan(h, c_plus=0.1, c_minus=0.1, eps=0.1, levels=True)
    fiberpo.gate(x, plan, fast=False)
    assert calls == [1]
    with pytest.raises(RuntimeError), fiberpo.fast_path(False, compiled=True):
        assert fiberpo.compile_enabled()
        raise RuntimeError
    assert fiberpo.fast_enabled() and not fiberpo.compile_enabled()


# ---------------------------------------------------------------------------- compute API
@pytest.mark.parametrize("name", ["fiberpo", "fiberpo_domain", "apc", "grpo"])
def test_metrics_false_keeps_loss_and_gradient(name):
    """Property: ``metrics=False`` returns the same loss, gated ratio and gradient, with no
    metrics and no regimes."""
    h, x = _batch(2 if name == "fiberpo_domain" else 0, seed=3)
    adv = torch.as_tensor(np.random.default_rng(1).normal(size=x.shape))
    outs, grads = [], []
    for metrics in (True, False):
        lp = x.clone().requires_grad_(True)
        out = losses.compute(name, lp, torch.zeros_like(x), adv, h.mask, hierarchy=h,
                             metrics=metrics)
        out.loss.backward()
        outs.append(out)
        grads.append(lp.grad)
    full, bare = outs
    assert bare.metrics == {} and bare.regimes is None
    assert "loss" in full.metrics
    assert (full.regimes is not None) == name.startswith("fiberpo")
    assert torch.equal(full.loss, bare.loss) and torch.equal(grads[0], grads[1])
    assert torch.equal(full.gated_ratio, bare.gated_ratio)
    with pytest.raises(ValueError, match="metrics"):
        losses.compute(name, x, torch.zeros_like(x), adv, h.mask, hierarchy=h, metrics=1)


def test_compute_returns_the_regimes_gating_labels():
    """Property: the regimes ``compute`` returns for FiberPO(-Domain) are those
    ``gating.regimes`` labels on the same log-ratios (labels, occupancy, drifts)."""
    for name, levels in (("fiberpo", False), ("fiberpo_domain", True)):
        h, x = _batch(2, seed=4)
        out = losses.compute(name, x, torch.zeros_like(x), torch.ones_like(x), h.mask,
                             hierarchy=h, c_plus=0.04, c_minus=0.03, eps=0.03)
        ref = gating.regimes(x, h, c_plus=0.04, c_minus=0.03, eps=0.03, levels=levels)
        assert out.regimes.labels() == ref.labels()
        assert out.regimes.occupancy() == ref.occupancy()
        assert out.regimes.names == ref.names
        for (a, b), (c, d) in zip(out.regimes.drifts, ref.drifts):
            assert torch.equal(a, c) and torch.equal(b, d)
        for (a, b), (c, d) in zip(out.regimes.channel, ref.channel):
            assert torch.equal(a, c) and torch.equal(b, d)


def test_state_ids_are_batch_data():
    """Property: ``state_ids`` is an argument of ``compute`` that reaches the objective as
    ``Batch.state_ids`` (not a hyperparameter); shared states change APC's clip; objectives
    without states refuse it, naming it."""
    mask = torch.ones(1, 2, dtype=torch.bool)
    lp = torch.tensor([[0.3, 0.0]], dtype=F64)
    old, adv = torch.zeros(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    assert "state_ids" not in REGISTRY["apc"].params and REGISTRY["apc"].states
    own = losses.compute("apc", lp, old, adv, mask, delta=0.2)
    mine = losses.compute("apc", lp, old, adv, mask, delta=0.2,
                          state_ids=torch.tensor([[0, 1]]))
    shared = losses.compute("apc", lp, old, adv, mask, delta=0.2,
                            state_ids=torch.tensor([[7, 7]]))
    assert torch.equal(own.gated_ratio, mine.gated_ratio)
    # token 0: r - 1 = 0.35 > delta alone, within T_s delta = 0.4 shared with a token at r = 1
    assert float(own.gated_ratio[0, 0]) == pytest.approx(1.2)
    assert float(shared.gated_ratio[0, 0]) == pytest.approx(math.exp(0.3))
    seen = []

    @losses.register("_test_states", "records its batch", states=True)
    def _rec(batch, *, agg="token-mean"):
        seen.append(batch.state_ids)
        return _plain(batch, agg)

    try:
        ids = torch.tensor([[3, 4]])
        losses.compute("_test_states", lp, old, adv, mask, state_ids=ids)
        assert seen[0] is ids
    finally:
        del REGISTRY["_test_states"]
    with pytest.raises(ValueError, match="state_ids"):
        losses.compute("grpo", lp, old, adv, mask, state_ids=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="state_ids"):
        losses.compute("apc", lp, old, adv, mask, state_ids=torch.tensor([[0.5, 1.0]]))


def _plain(batch, agg):
    from fibration_theory import aggregation
    from fibration_theory.rgf import RGF

    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)
    return losses.Surrogate(RGF(mu, batch.log_ratio.exp(), batch.advantages))


def test_an_objective_in_a_users_module_registers_on_import(tmp_path, monkeypatch):
    """Property: what the registry's docstring says: importing a user's module that runs
    ``register`` makes its objective available to ``compute``."""
    (tmp_path / "my_objectives_mod.py").write_text(
        "from fibration_theory import aggregation\n"
        "from fibration_theory.losses import Batch, Surrogate, register\n"
        "from fibration_theory.rgf import RGF\n\n"
        "@register('_user_plain_is', 'unclipped importance sampling')\n"
        "def plain_is(batch: Batch, *, agg='token-mean') -> Surrogate:\n"
        "    mu = aggregation.weights(batch.hierarchy, agg, batch.dtype)\n"
        "    return Surrogate(RGF(mu, batch.log_ratio.exp(), batch.advantages))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "_user_plain_is" not in losses.available()
    try:
        import my_objectives_mod  # noqa: F401
        assert "_user_plain_is" in losses.available()
        lp = torch.tensor([[0.1, -0.1]], dtype=F64)
        out = losses.compute("_user_plain_is", lp, torch.zeros_like(lp), torch.ones_like(lp),
                             torch.ones(1, 2, dtype=torch.bool))
        assert float(out.loss) == pytest.approx(-(math.exp(0.1) + math.exp(-0.1)) / 2)
    finally:
        REGISTRY.pop("_user_plain_is", None)
        sys.modules.pop("my_objectives_mod", None)


def test_package_docstring_example_runs():
    """Property: the example in ``fibration_theory.fiberpo``'s docstring runs as written."""
    import doctest

    result = doctest.testmod(fiberpo, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_losses_cli_names_state_ids_as_batch_data(capsys):
    from fibration_theory.cli import main

    assert main(["losses", "--params"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    apc = lines[next(k for k, line in enumerate(lines) if line.startswith("apc ")) + 1]
    assert "delta=0.2" in apc and "batch data: state_ids" in apc and "state_ids=None" not in apc
