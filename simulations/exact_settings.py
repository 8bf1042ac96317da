"""Exact settings: policy iteration on bandits and small MDPs where TV-TRPO is solvable.

Every iteration samples ``n_traj`` rollouts of ``pi_old``, attaches the *exact* advantage
``A(s, a)`` of ``pi_old`` to every sampled token, and forms an update from the samples only:

* ``tv_trpo``: the closed-form maximizer of sample-based TV-TRPO (Thm D.3,
  ``Delta* = t* Delta_hat*``), applied to the policy as ratios (``apply_ratio_update``);
* ``apc``: APC-Obj (eq 3) at its exact radius ``delta(APC-Obj) = t*`` (App D.4), maximized
  by gradient ascent on the policy logits;
* ``apc_relaxed``, ``ppo_clip``, ``grpo``, ``gspo``, ``fiberpo``: the same inner loop at one
  matched, relaxed budget ``delta`` on the sample TV of eq 39 (no 1/2): PPO/GRPO clip
  ``|r - 1| <= delta``; FiberPO ``C+ + C- = delta`` and token budget ``eps = delta``; GSPO
  ``eps = 2 delta^2`` (Claim 3.5 read as ``delta ~ sqrt(eps/2)``); APC radius ``delta``.

The policy is scored exactly (``J`` by a linear solve), so learning curves carry only the
sampling noise of the updates. As ``gamma -> 1`` the TRPO radius ``(1 - gamma)/(8 gamma)``
(Lemma B.2) and with it ``t*`` vanish (Thm 2.1): the exact methods stall while the relaxed
ones do not. All sample estimators use the undiscounted state weights ``T_s / T`` of a
horizon-``H`` rollout (App D.1 at ``Gamma(s) = T_s``), the same for every method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from fibration_theory.simulations import tabular_mdp as tm
from fibration_theory.simulations.runner import RunResult, RunSpec
from fibration_theory.simulations.streams import numpy_rng

from fibration_theory import losses
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.trust_region import delta_trpo, solve_tv_trpo

Array = np.ndarray

#: methods of this experiment, in plotting order
METHODS = ("tv_trpo", "apc", "apc_relaxed", "ppo_clip", "grpo", "gspo", "fiberpo")

#: iterations over which ``early_improvement`` (gap closed per iteration) is measured
EARLY = 5

#: a sample TV counts as inside its budget up to this slack: the closed form reaches the
#: budget exactly, so only float64 rounding separates it from the boundary
ADHERENCE_SLACK = 1e-9


@dataclasses.dataclass(frozen=True)
class ExactConfig:
    """One policy-iteration run in an exact tabular setting."""

    #: ``bandit`` (one state, one-step episodes) or ``mdp`` (a random sparse MDP)
    env: Literal["bandit", "mdp"] = "mdp"
    #: discount; sets the TRPO radius (and the MDP's horizon of credit)
    gamma: float = 0.9
    #: states of the MDP (ignored by the bandit)
    n_states: int = 6
    #: actions (arms)
    n_actions: int = 4
    #: successors of each (s, a) in the MDP
    branching: int = 2
    #: rollouts per iteration
    n_traj: int = 16
    #: steps per rollout (1 for the bandit)
    horizon: int = 20
    #: policy-iteration steps
    iterations: int = 40
    #: Adam steps of the inner maximization of the gradient-based methods
    inner_steps: int = 10
    #: Adam learning rate of the inner maximization per unit of budget: the step is
    #: ``inner_lr_per_budget * budget``, so every method moves the same fraction of its
    #: own budget per step (APC at its exact, vanishing radius included)
    inner_lr_per_budget: float = 0.5
    #: the matched relaxed budget delta on the sample TV of eq 39
    relaxed_delta: float = 0.05

    @property
    def cost(self) -> float:
        return self.iterations * self.inner_steps * self.n_traj * self.horizon / 4e5


def make_env(cfg: ExactConfig, seed: int) -> tm.TabularMDP:
    """The environment of ``seed`` (the same for every method: paired comparisons)."""
    rng = numpy_rng("exact/env", seed)
    if cfg.env == "bandit":
        return tm.bandit(rng.uniform(0.0, 1.0, size=cfg.n_actions), cfg.gamma)
    if cfg.env == "mdp":
        return tm.random_mdp(rng, cfg.n_states, cfg.n_actions, cfg.gamma, cfg.branching)
    raise ValueError(f"env must be 'bandit' or 'mdp', got {cfg.env!r}")


def method_params(method: str, delta: float) -> tuple[str, dict[str, Any]]:
    """``(loss name, params)`` of a gradient-based method at the matched budget ``delta``."""
    table: dict[str, tuple[str, dict[str, Any]]] = {
        "apc_relaxed": ("apc", {"delta": delta}),
        "ppo_clip": ("ppo_clip", {"eps_low": delta, "eps_high": delta}),
        "grpo": ("grpo", {"eps_low": delta, "eps_high": delta}),
        "gspo": ("gspo", {"eps_low": 2 * delta**2, "eps_high": 2 * delta**2}),
        "fiberpo": ("fiberpo", {"c_plus": 0.6 * delta, "c_minus": 0.4 * delta, "eps": delta}),
    }
    if method not in table:
        raise ValueError(f"method: unknown {method!r}; known: {list(table)} and tv_trpo, apc")
    return table[method]


def _ascent(pi_old: Array, states: Array, actions: Array, adv_tok: Array, loss: str,
            params: dict[str, Any], cfg: ExactConfig, budget: float) -> Array:
    """Maximize the objective over softmax logits from ``pi_old``; returns the new policy."""
    theta = torch.tensor(np.log(np.maximum(pi_old, 1e-300)), dtype=torch.float64,
                         requires_grad=True)
    st_t = torch.as_tensor(states)
    ac_t = torch.as_tensor(actions)
    old_lp = torch.log_softmax(theta.detach(), -1)[st_t, ac_t]
    adv = torch.as_tensor(adv_tok, dtype=torch.float64)
    mask = torch.ones(states.shape, dtype=torch.bool)
    h = Hierarchy.from_padded(mask, group_ids=torch.zeros(states.shape[0], dtype=torch.long))
    extra = {"state_ids": st_t} if loss == "apc" else {}
    if budget <= 0:
        return pi_old.copy()
    opt = torch.optim.Adam([theta], lr=cfg.inner_lr_per_budget * budget)
    for _ in range(cfg.inner_steps):
        lp = torch.log_softmax(theta, -1)[st_t, ac_t]
        out = losses.compute(loss, lp, old_lp, adv, mask, hierarchy=h, **params, **extra)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.softmax(theta, -1).numpy()


def sample_tv(pi_new: Array, pi_old: Array, table: tm.SampleTable) -> float:
    """``max_s D(s)`` of eq 39 (no 1/2) for the realised ratios at the sampled pairs."""
    ratio = pi_new[table.states, table.actions] / pi_old[table.states, table.actions]
    num: dict[int, float] = {}
    den: dict[int, float] = {}
    for s, n, r in zip(table.states.tolist(), table.counts.tolist(), ratio.tolist()):
        num[s] = num.get(s, 0.0) + n * abs(r - 1.0)
        den[s] = den.get(s, 0.0) + n
    return max(num[s] / den[s] for s in num)


def run_method(cfg: ExactConfig, method: str, seed: int) -> RunResult:
    """Policy iteration of ``method`` on the environment of ``seed``."""
    mdp = make_env(cfg, seed)
    rng = numpy_rng("exact/run", seed)
    j_star, _ = tm.optimal_value(mdp)
    pi = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
    j0 = tm.expected_return(mdp, pi)
    scale = max(j_star - j0, 1e-12)
    curve = [{"iter": 0, "gap": 1.0, "J": j0}]
    inside, ratios_tv, true_tv, moving = [], [], [], []
    for it in range(1, cfg.iterations + 1):
        states, actions = tm.sample_trajectories(mdp, pi, cfg.n_traj, cfg.horizon, rng)
        table = tm.sample_table(states, actions, cfg.gamma)
        adv_sa = tm.advantage(mdp, pi)
        sol = solve_tv_trpo(adv_sa[table.states, table.actions], table.counts, table.states,
                            gamma=min(cfg.gamma, 1.0))
        if method == "tv_trpo":
            budget = sol.t_star
            pi_new = tm.apply_ratio_update(pi, table, np.asarray(sol.delta))
        else:
            if method == "apc":
                loss, params, budget = "apc", {"delta": sol.t_star}, sol.t_star
            else:
                loss, params = method_params(method, cfg.relaxed_delta)
                budget = cfg.relaxed_delta
            pi_new = _ascent(pi, states, actions, adv_sa[states, actions], loss, params, cfg,
                             budget)
        tv_s = sample_tv(pi_new, pi, table)
        moving.append(sol.M > 0)  # some sampled state still has two actions to trade
        ratios_tv.append(tv_s / budget if budget > 0 else (0.0 if tv_s == 0 else np.inf))
        inside.append(tv_s <= budget * (1 + ADHERENCE_SLACK) + ADHERENCE_SLACK)
        true_tv.append(float(tm.tv_per_state(pi_new, pi)[np.unique(table.states)].max()))
        j_new = tm.expected_return(mdp, pi_new)
        curve.append({"iter": it, "gap": (j_star - j_new) / scale, "J": j_new,
                      "improvement": (j_new - tm.expected_return(mdp, pi)) / scale,
                      "sample_max_tv": tv_s, "budget": budget, "t_star": sol.t_star,
                      "true_max_tv": true_tv[-1]})
        pi = pi_new
    gaps = np.array([p["gap"] for p in curve])
    final = {
        "final_gap": float(gaps[-1]),
        "auc_gap": float(gaps.mean()),
        "mean_improvement": float((gaps[0] - gaps[-1]) / cfg.iterations),
        # improvement per iteration while there is still much to gain
        "early_improvement": float((gaps[0] - gaps[min(EARLY, cfg.iterations)])
                                   / min(EARLY, cfg.iterations)),
        # over the iterations where an update is possible at all (M > 0)
        "adherence": _masked_mean(inside, moving),
        "mean_tv_over_budget": _masked_mean(ratios_tv, moving),
        "max_tv_over_budget": float(max((r for r, m in zip(ratios_tv, moving) if m),
                                        default=0.0)),
        "max_true_tv": float(np.max(true_tv)),
        "delta_trpo": delta_trpo(min(cfg.gamma, 1.0)),
        "J_star": j_star,
        "J0": j0,
    }
    return RunResult(curve, final)


def _masked_mean(values: list, keep: list[bool]) -> float:
    sel = [float(v) for v, k in zip(values, keep) if k]
    return float(np.mean(sel)) if sel else float("nan")


def run_one(config: ExactConfig, spec: RunSpec) -> RunResult:
    """Runner entry point (``spec.method`` in :data:`METHODS`)."""
    if spec.method not in METHODS:
        raise ValueError(f"method: unknown {spec.method!r}; known: {METHODS}")
    return run_method(config, spec.method, spec.seed)
