"""The experiment modules: exact solver vs cvxpy on simulated samples, and short runs."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from fibration_theory.simulations import exact_settings as ex
from fibration_theory.simulations import tabular_mdp as tm
from fibration_theory.simulations import token_efficiency as te
from fibration_theory.simulations.methods import all_methods
from fibration_theory.simulations.runner import RunSpec
from fibration_theory.simulations.tuning import levels

from fibration_theory.trust_region import solve_tv_trpo, solve_tv_trpo_cvxpy

#: CLARABEL's interior-point solution of eq 68 agrees with the vertex closed form to ~1e-8
#: (brief section 7); the update is compared relative to its largest entry
CVXPY_RTOL = 1e-6


@pytest.mark.parametrize("env,gamma,seed", [("bandit", 0.9, 0), ("mdp", 0.9, 1),
                                            ("mdp", 0.99, 2)])
def test_exact_update_is_what_cvxpy_gives(env, gamma, seed):
    """On samples drawn by the experiment's own simulator, the closed-form TV-TRPO update
    (Thm D.3) maximizes eq 68 as cvxpy does: same objective, same update."""
    cfg = ex.ExactConfig(env=env, gamma=gamma, n_traj=6, horizon=5)
    mdp = ex.make_env(cfg, seed)
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    s, a = tm.sample_trajectories(mdp, pi, cfg.n_traj, cfg.horizon, rng)
    table = tm.sample_table(s, a, gamma)
    adv = tm.advantage(mdp, pi)[table.states, table.actions]
    sol = solve_tv_trpo(adv, table.counts, table.states, gamma=gamma)
    # no two sampled actions of a state share an advantage here, so eq 68 has one maximizer
    # and the min-norm tie-break stage of Def D.1 is not needed
    ref = solve_tv_trpo_cvxpy(adv, table.counts, table.states, gamma=gamma)
    assert ref.status == "optimal", ref.status
    scale = max(np.abs(sol.delta).max(), 1e-300)
    assert np.abs(sol.delta - ref.delta).max() <= CVXPY_RTOL * scale, (sol.delta, ref.delta)
    assert ref.max_tv == pytest.approx(sol.t_star, rel=CVXPY_RTOL)


def test_exact_radius_vanishes_as_gamma_goes_to_one():
    """Thm 2.1 seen in the run: t* <= delta_TRPO = (1 - gamma)/(8 gamma) at every step, and
    exact TV-TRPO closes less of the gap the closer gamma is to 1."""
    gaps = {}
    for gamma in (0.9, 0.999):
        cfg = ex.ExactConfig(gamma=gamma, iterations=8)
        res = ex.run_method(cfg, "tv_trpo", seed=0)
        dt = (1 - gamma) / (8 * gamma)
        assert all(p["t_star"] <= dt * (1 + 1e-12) for p in res.curve[1:]), gamma
        gaps[gamma] = res.final["final_gap"]
    assert gaps[0.999] > gaps[0.9], gaps


def test_exact_methods_share_the_environment_and_report_finite_metrics():
    cfg = ex.ExactConfig(env="bandit", iterations=3)
    finals = {m: ex.run_one(cfg, RunSpec("exact", m, "v", "eval", 4)).final for m in ex.METHODS}
    assert len({f["J_star"] for f in finals.values()}) == 1
    for m, f in finals.items():
        assert 0.0 <= f["final_gap"] <= 1.0 + 1e-9, (m, f)
        assert math.isfinite(f["auc_gap"]), (m, f)


TINY = te.SeqConfig(token_budget=1500, epochs=2)


@pytest.mark.parametrize("method", sorted(all_methods()))
def test_every_sequence_method_runs_and_counts_tokens(method):
    m = all_methods()[method]
    res = te.train(TINY, m, m.params(1.0, 2, dict.fromkeys(m.tuned, max(levels(4)))), seed=5)
    tokens = [p["tokens"] for p in res.curve]
    assert tokens[0] == 0 and all(b > a for a, b in itertools.pairwise(tokens))
    assert tokens[-1] >= TINY.token_budget
    for p in res.curve[1:]:
        for key in ("tv/token", "tv/tj", "tv/tj_exact", "regime/G-I", "regime/L-I"):
            assert math.isfinite(p[key]) and p[key] >= 0, (method, key, p[key])
        occupancy = sum(p[f"regime/{g}"] for g in ("G-I", "G-II,r", "G-II", "G-III,r", "G-III"))
        assert occupancy == pytest.approx(1.0), (method, p)
        if "grad/cos_grpo" in p:  # absent from an update without any gradient
            assert 0.0 <= p["grad/zeroed_token_frac"] <= 1.0, (method, p)
            assert -1.0 - 1e-9 <= p["grad/cos_grpo"] <= 1.0 + 1e-9, (method, p)
            for part in ("rollback", "coupling", "zeroed_traj"):
                assert math.isfinite(p[f"grad/{part}_share"]) and p[f"grad/{part}_norm"] >= 0
    assert "grad/cos_grpo" in res.curve[1], method  # the first update has a gradient
    assert not res.final["nonfinite"]


def test_tokens_to_threshold_needs_the_success_to_hold():
    curve = [{"tokens": t, "success": s} for t, s in
             [(0, 0.1), (10, 0.9), (20, 0.5), (30, 0.8), (40, 0.85), (50, 0.9), (60, 0.7)]]
    assert te.tokens_to_threshold(curve, 0.75, hold=3) == 30
    assert te.tokens_to_threshold(curve, 0.75, hold=1) == 10
    assert te.tokens_to_threshold(curve, 0.95, hold=1) == math.inf
    assert te.collapsed(curve, drop=0.3) and not te.collapsed(curve, drop=0.45)


def test_level_tv_of_an_on_policy_update_is_zero_and_matches_a_hand_count():
    from fibration_theory.hierarchy import Hierarchy

    mask = torch.tensor([[True, True, False], [True, True, True]])
    h = Hierarchy.from_padded(mask, levels={"group": torch.tensor([0, 0])})
    zero = te.level_tv(torch.zeros(2, 3, dtype=torch.float64), h)
    assert all(v == 0 for v in zero.values()), zero
    lr = torch.log(torch.tensor([[1.2, 0.8, 5.0], [1.0, 1.0, 1.3]], dtype=torch.float64))
    tv = te.level_tv(lr, h)
    # eq 51 with the 1/2: row 1 (|0.2| + |0.2|)/2, row 2 (0 + 0 + 0.3)/3
    assert tv["tv/tj"] == pytest.approx(0.5 * (0.2 + 0.1) / 2)
    assert tv["tv/token"] == pytest.approx(0.5 * (0.2 + 0.2 + 0.3) / 5)


def test_gspo_tv_and_depth_runs():
    from fibration_theory.simulations import depth, gspo_tv

    cfg = gspo_tv.GspoTvConfig(seq=dataclasses.replace(TINY))
    res = gspo_tv.run_one(cfg, RunSpec("gspo_tv", "gspo", "eps0.01", "eval", 1, (("eps", 0.01),)))
    assert res.final["bound"] == pytest.approx(math.sqrt(0.005))
    assert res.final["max_tv_tj"] >= res.final["mean_tv_tj"] > 0
    m = all_methods()["fiberpo_domain"]
    for d in (0, 4):
        dcfg = depth.DepthConfig(seq=TINY, depth=d)
        out = depth.run_one(dcfg, RunSpec("depth", f"depth{d}", "x1", "eval", 1,
                                          tuple(sorted(m.params(1.0, d).items()))))
        assert out.final["depth"] == d
