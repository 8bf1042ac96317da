"""The simulators of ``simulations/``: tabular MDPs, bandits and the sequence task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fibration_theory.simulations import sequence_task as sq
from fibration_theory.simulations import tabular_mdp as tm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

#: float64 linear solves of <= 10 states; residuals are a few ulps times the condition number
EXACT_TOL = 1e-10
#: Monte Carlo check with n samples: 5 standard errors of a Bernoulli mean (p(1-p) <= 1/4)
def mc_tol(n: int) -> float:
    return 5 * 0.5 / math.sqrt(n)


# ---------------------------------------------------------------- tabular MDP
def chain_mdp(n: int, gamma: float) -> tm.TabularMDP:
    """Action 1 moves right, action 0 stays; reward 1 for staying in the last state."""
    p = np.zeros((n, 2, n))
    for s in range(n):
        p[s, 0, s] = 1.0
        p[s, 1, min(s + 1, n - 1)] = 1.0
    r = np.zeros((n, 2))
    r[n - 1, 0] = 1.0
    mu0 = np.zeros(n)
    mu0[0] = 1.0
    return tm.TabularMDP(p, r, mu0, gamma)


def test_chain_optimal_value_is_known():
    """The optimal chain policy walks right, then stays: J* = gamma^n / (1 - gamma)."""
    n, gamma = 5, 0.9
    mdp = chain_mdp(n, gamma)
    j_star, pi_star = tm.optimal_value(mdp)
    # n - 1 moves to reach the end, then reward 1 from step n - 1 on
    expected = gamma ** (n - 1) / (1 - gamma)
    assert abs(j_star - expected) < EXACT_TOL, (j_star, expected)
    assert pi_star[:-1, 1].tolist() == [1.0] * (n - 1)
    assert pi_star[-1, 0] == 1.0


def test_bandit_greedy_gets_best_arm_and_advantages_are_centred():
    means = np.array([0.1, 0.7, 0.4])
    mdp = tm.bandit(means, gamma=0.9)
    j_star, _ = tm.optimal_value(mdp)
    assert j_star == pytest.approx(0.7, abs=EXACT_TOL)
    uni = np.full((1, 3), 1 / 3)
    a = tm.advantage(mdp, uni)
    np.testing.assert_allclose(a[0], means - means.mean(), atol=EXACT_TOL)
    assert abs((uni * a).sum()) < EXACT_TOL


@settings(deadline=None, derandomize=True, max_examples=15)
@given(seed=st.integers(0, 10_000), gamma=st.sampled_from([0.5, 0.9, 0.99]))
def test_advantage_centred_and_bellman(seed, gamma):
    """Property: for any policy, sum_a pi A = 0 and V solves the Bellman equation."""
    rng = np.random.default_rng(seed)
    mdp = tm.random_mdp(rng, 5, 3, gamma)
    pi = rng.dirichlet(np.ones(3), size=5)
    v, q = tm.evaluate(mdp, pi)
    a = q - v[:, None]
    assert np.abs((pi * a).sum(-1)).max() < 1e-9, (seed, gamma)
    bellman = (pi * (mdp.reward + gamma * mdp.transition @ v)).sum(-1)
    assert np.abs(bellman - v).max() < 1e-9 * max(1.0, np.abs(v).max()), (seed, gamma)


def test_sample_table_counts_every_sampled_pair():
    rng = np.random.default_rng(0)
    mdp = tm.random_mdp(rng, 4, 3, 0.9)
    pi = np.full((4, 3), 1 / 3)
    s, a = tm.sample_trajectories(mdp, pi, 7, 9, rng)
    table = tm.sample_table(s, a, 0.9)
    assert table.counts.sum() == s.size
    for st_, ac, n in zip(table.states, table.actions, table.counts):
        assert n == ((s == st_) & (a == ac)).sum()
    disc = sum(0.9**t for t in range(9)) * 7
    assert table.gamma_weight.sum() == pytest.approx(disc)


def test_apply_ratio_update_keeps_a_policy():
    pi = np.array([[0.5, 0.3, 0.2]])
    table = tm.SampleTable(np.array([0, 0]), np.array([0, 1]), np.array([2.0, 1.0]),
                           np.array([2.0, 1.0]))
    new = tm.apply_ratio_update(pi, table, np.array([0.1, -2.0]))  # r = -1 on action 1 (F5)
    assert new.min() > 0 and new.sum() == pytest.approx(1.0)
    assert new[0, 0] / new[0, 2] == pytest.approx(0.55 / 0.2)


# ---------------------------------------------------------------- sequence task
@pytest.fixture(scope="module")
def task() -> sq.SequenceTask:
    return sq.SequenceTask(sq.TaskConfig(), seed=3)


def oracle_logits(task: sq.SequenceTask, big: float = 60.0) -> torch.Tensor:
    """Puts probability 1 - O(e^-60) on the target token at every state."""
    onehot = torch.nn.functional.one_hot(task.targets, task.vocab).to(torch.float64)
    table = big * onehot[:, :, None, :].expand(-1, -1, task.n_err, -1)
    return table.reshape(-1, task.vocab).contiguous()


def test_known_optimal_policy_gets_reward_one(task):
    logits = oracle_logits(task)
    succ = sq.success_prob(task, logits)
    assert torch.allclose(succ, torch.ones_like(succ), atol=1e-12), succ
    ro = sq.sample(task, logits, torch.arange(task.n_prompts).repeat(4),
                   torch.Generator().manual_seed(0))
    assert bool((ro.reward == 1).all())
    assert bool((ro.errors == 0).all())


def test_uniform_policy_success_is_binomial(task):
    """A uniform policy errs w.p. (V-1)/V per token: success = P(Bin(L, (V-1)/V) <= k)."""
    logits = torch.zeros(task.n_states, task.vocab, dtype=torch.float64)
    succ = sq.success_prob(task, logits)
    q = (task.vocab - 1) / task.vocab
    expected = torch.tensor([binom.cdf(int(k), int(n), q) for n, k in
                             zip(task.lengths, task.tolerance)], dtype=torch.float64)
    assert torch.allclose(succ, expected, atol=EXACT_TOL), (succ, expected)


def test_exact_success_matches_sampling(task):
    n = 3000
    prompts = torch.arange(task.n_prompts).repeat_interleave(n)
    ro = sq.sample(task, task.init_logits, prompts, torch.Generator().manual_seed(1))
    emp = torch.zeros(task.n_prompts, dtype=torch.float64).index_add(0, prompts, ro.reward) / n
    exact = sq.success_prob(task, task.init_logits)
    assert (emp - exact).abs().max() < mc_tol(n), (emp, exact)


def test_visitation_is_a_distribution_per_position(task):
    occ, _ = sq.visitation(task, task.init_logits)
    per_t = occ.sum(-1)
    live = torch.arange(task.max_len)[None, :] < task.lengths[:, None]
    assert torch.allclose(per_t[live], torch.ones(int(live.sum()), dtype=torch.float64))
    assert float(per_t[~live].abs().max()) == 0.0


def test_token_counter_counts_what_was_sampled(task):
    prompts = torch.tensor([0, 0, 7, 13, 13, 13])
    ro = sq.sample(task, task.init_logits, prompts, torch.Generator().manual_seed(2))
    assert ro.num_tokens == int(task.lengths[prompts].sum())
    assert ro.mask.sum(1).tolist() == task.lengths[prompts].tolist()
    # states along a row are distinct and belong to the row's prompt
    per_prompt = task.max_len * task.n_err
    assert bool(((ro.states // per_prompt) == prompts[:, None])[ro.mask].all())


def test_log_probs_are_those_of_the_sampled_tokens(task):
    prompts = torch.tensor([1, 8, 15])
    ro = sq.sample(task, task.init_logits, prompts, torch.Generator().manual_seed(4))
    lp = sq.token_log_probs(task.init_logits, ro)
    b, t = 2, 5
    ref = torch.log_softmax(task.init_logits[ro.states[b, t]], -1)[ro.tokens[b, t]]
    assert float((lp[b, t] - ref).abs()) < 1e-14
    assert float(lp[~ro.mask].abs().max()) == 0.0


@st.composite
def grouped_rewards(draw):
    """Binary rewards for 1-5 groups of 2-6 rows each; group labels arbitrary ints."""
    sizes = draw(st.lists(st.integers(2, 6), min_size=1, max_size=5))
    labels = draw(st.lists(st.integers(-50, 50), min_size=len(sizes), max_size=len(sizes),
                           unique=True))
    rewards = [draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
               for n in sizes]
    r = torch.tensor([x for g in rewards for x in g], dtype=torch.float64)
    g = torch.tensor([lab for lab, n in zip(labels, sizes) for _ in range(n)])
    return r, g


@settings(deadline=None, derandomize=True, max_examples=40)
@given(grouped_rewards())
def test_advantages_are_group_relative(data):
    """Property: advantages have zero mean within every group, unit std (when the group's
    rewards differ), zero when they do not, and do not depend on other groups."""
    r, g = data
    a = sq.group_advantages(r, g)
    for lab in torch.unique(g):
        sel = g == lab
        assert abs(float(a[sel].sum())) < 1e-9, (r.tolist(), g.tolist())
        if float(r[sel].std()) > 0:
            assert abs(float(a[sel].std()) - 1) < 1e-5, (r.tolist(), g.tolist())
        else:
            assert float(a[sel].abs().max()) == 0.0, (r.tolist(), g.tolist())
        alone = sq.group_advantages(r[sel], g[sel])
        assert torch.allclose(alone, a[sel]), (r.tolist(), g.tolist())
    centred = sq.group_advantages(r, g, scale=False)
    for lab in torch.unique(g):
        sel = g == lab
        assert torch.allclose(centred[sel], r[sel] - r[sel].mean()), (r.tolist(), g.tolist())


def test_subdomains_nest_in_domains(task):
    for s in torch.unique(task.subdomain):
        assert len(torch.unique(task.domain[task.subdomain == s])) == 1


def test_shared_table_couples_the_prompts_of_one_domain(task):
    """A change of the shared table moves every prompt of its domain and no other prompt."""
    prompt_tab, shared = task.init_params()
    base = task.logits(prompt_tab, shared)
    bumped = shared.clone()
    t, e, d = 2, 0, 1
    bumped[(d * task.max_len + t) * task.n_err + e, 0] += 1.0
    moved = (task.logits(prompt_tab, bumped) - base).abs().sum(-1).reshape(
        task.n_prompts, task.max_len, task.n_err)
    for p in range(task.n_prompts):
        expected = 1.0 if int(task.domain[p]) == d else 0.0
        assert float(moved[p, t, e]) == pytest.approx(expected, abs=EXACT_TOL), p
        assert float(moved[p].sum()) == pytest.approx(expected, abs=EXACT_TOL), p


def test_targets_are_hierarchical(task):
    """Prompts of one domain agree well above chance (1/V = 0.25; both unchanged from the
    canonical target w.p. 0.85^4 = 0.52 per position); prompts of different domains agree
    at about chance."""
    same, other = [], []
    for a in range(task.n_prompts):
        for b in range(a + 1, task.n_prompts):
            agree = float((task.targets[a] == task.targets[b]).double().mean())
            (same if task.domain[a] == task.domain[b] else other).append(agree)
    assert np.mean(same) > 0.45, (np.mean(same), np.mean(other))
    assert np.mean(other) < 0.35, (np.mean(same), np.mean(other))
