"""Small tabular MDPs and bandits whose values, advantages and returns are exact.

Everything is float64 numpy. A policy is an ``[S, A]`` row-stochastic array. The exact
quantities (``V``, ``Q``, ``A = Q - V``, the discounted return ``J = mu0 . V``) come from one
linear solve, so the experiments of ``exact_settings`` can score every update without Monte
Carlo noise; only the *update* is computed from samples, as the sample-based TV-TRPO of
App B.1 / Def D.1 prescribes.

A bandit is the one-state MDP whose episode ends after one pull (``terminal=True``); its
discount ``gamma`` then only sets the TRPO radius ``(1 - gamma) / (8 gamma)`` (Lemma B.2).
"""

from __future__ import annotations

import dataclasses

import numpy as np

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class TabularMDP:
    """A finite discounted MDP.

    ``transition``: ``[S, A, S]`` next-state probabilities; ``reward``: ``[S, A]`` expected
    reward; ``mu0``: ``[S]`` initial distribution; ``gamma`` in (0, 1]; ``terminal``: every
    episode ends after one step (a contextual bandit).
    """

    transition: Array
    reward: Array
    mu0: Array
    gamma: float
    terminal: bool = False

    def __post_init__(self) -> None:
        s, a, s2 = self.transition.shape
        if s != s2:
            raise ValueError(f"transition must be [S, A, S], got {self.transition.shape}")
        if self.reward.shape != (s, a):
            raise ValueError(f"reward must be [S, A] = {(s, a)}, got {self.reward.shape}")
        if self.mu0.shape != (s,) or abs(self.mu0.sum() - 1) > 1e-12 or (self.mu0 < 0).any():
            raise ValueError("mu0 must be a probability vector of length S")
        if not np.allclose(self.transition.sum(-1), 1.0, atol=1e-12):
            raise ValueError("transition rows must sum to 1")
        if not 0 < self.gamma <= 1 or (self.gamma == 1 and not self.terminal):
            raise ValueError(f"gamma must be in (0, 1) (or 1 for a bandit), got {self.gamma}")

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transition.shape[1]

    @property
    def horizon_discount(self) -> float:
        """Discount applied to the next state's value (0 for a one-step bandit)."""
        return 0.0 if self.terminal else self.gamma


def check_policy(mdp: TabularMDP, pi: Array) -> None:
    if pi.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"pi must be [S, A] = {(mdp.n_states, mdp.n_actions)}, got {pi.shape}")
    if (pi < -1e-15).any() or not np.allclose(pi.sum(-1), 1.0, atol=1e-9):
        raise ValueError("pi must be row-stochastic and non-negative")


def evaluate(mdp: TabularMDP, pi: Array) -> tuple[Array, Array]:
    """Exact ``(V [S], Q [S, A])`` of ``pi``: ``V = (I - g P_pi)^-1 r_pi``, ``Q = R + g P V``."""
    check_policy(mdp, pi)
    g = mdp.horizon_discount
    p_pi = np.einsum("sa,sat->st", pi, mdp.transition)
    r_pi = (pi * mdp.reward).sum(-1)
    v = np.linalg.solve(np.eye(mdp.n_states) - g * p_pi, r_pi)
    q = mdp.reward + g * mdp.transition @ v
    return v, q


def advantage(mdp: TabularMDP, pi: Array) -> Array:
    """``[S, A]`` exact advantage ``A(s, a) = Q(s, a) - V(s)`` (centred: ``sum_a pi A = 0``)."""
    v, q = evaluate(mdp, pi)
    return q - v[:, None]


def expected_return(mdp: TabularMDP, pi: Array) -> float:
    """``J(pi) = mu0 . V_pi`` (discounted; the expected reward for a bandit)."""
    return float(mdp.mu0 @ evaluate(mdp, pi)[0])


def optimal_value(mdp: TabularMDP, tol: float = 1e-12, max_iter: int = 200_000) -> tuple[float, Array]:
    """``(J*, greedy optimal policy [S, A])`` by policy iteration (exact in finitely many steps)."""
    pi = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
    for _ in range(max_iter):
        _, q = evaluate(mdp, pi)
        greedy = np.zeros_like(pi)
        greedy[np.arange(mdp.n_states), q.argmax(-1)] = 1.0
        if np.allclose(greedy, pi, atol=tol):
            break
        pi = greedy
    return expected_return(mdp, pi), pi


def tv_per_state(pi_new: Array, pi_old: Array) -> Array:
    """``[S]`` true total variation ``(1/2) sum_a |pi_new - pi_old|`` (eq 34)."""
    return 0.5 * np.abs(pi_new - pi_old).sum(-1)


def random_mdp(rng: np.random.Generator, n_states: int, n_actions: int, gamma: float,
               branching: int = 2) -> TabularMDP:
    """A random sparse MDP: each ``(s, a)`` reaches ``branching`` random states.

    Rewards are uniform in [0, 1]; the start state is 0. Sparse transitions make the
    policy matter over several steps (a dense random MDP is nearly a bandit).
    """
    if branching < 1 or branching > n_states:
        raise ValueError(f"branching must be in 1..n_states, got {branching}")
    p = np.zeros((n_states, n_actions, n_states))
    for s in range(n_states):
        for a in range(n_actions):
            nxt = rng.choice(n_states, size=branching, replace=False)
            p[s, a, nxt] = rng.dirichlet(np.ones(branching))
    reward = rng.uniform(0.0, 1.0, size=(n_states, n_actions))
    mu0 = np.zeros(n_states)
    mu0[0] = 1.0
    return TabularMDP(p, reward, mu0, gamma)


def bandit(means: Array, gamma: float) -> TabularMDP:
    """A one-state ``A``-armed bandit with expected rewards ``means``; ``gamma`` is nominal."""
    means = np.asarray(means, dtype=np.float64)
    a = means.shape[0]
    return TabularMDP(np.ones((1, a, 1)), means[None, :], np.ones(1), gamma, terminal=True)


def sample_trajectories(mdp: TabularMDP, pi: Array, n_traj: int, horizon: int,
                        rng: np.random.Generator) -> tuple[Array, Array]:
    """``(states [N, H], actions [N, H])`` of ``n_traj`` rollouts of ``pi``.

    A bandit's rollouts have ``H = 1`` whatever ``horizon`` says.
    """
    check_policy(mdp, pi)
    h = 1 if mdp.terminal else horizon
    states = np.empty((n_traj, h), dtype=np.int64)
    actions = np.empty((n_traj, h), dtype=np.int64)
    s = rng.choice(mdp.n_states, size=n_traj, p=mdp.mu0)
    cum_pi = np.cumsum(pi, axis=-1)
    cum_p = np.cumsum(mdp.transition, axis=-1)
    for t in range(h):
        states[:, t] = s
        a = (rng.random(n_traj)[:, None] > cum_pi[s]).sum(-1).clip(max=mdp.n_actions - 1)
        actions[:, t] = a
        s = (rng.random(n_traj)[:, None] > cum_p[s, a]).sum(-1).clip(max=mdp.n_states - 1)
    return states, actions


@dataclasses.dataclass(frozen=True)
class SampleTable:
    """The sampled index set ``X`` of App D.1, one entry per distinct pair ``(s, a)``.

    ``states``, ``actions``: ``[K]``; ``counts``: ``[K]`` multiplicities ``n_{s,a}``;
    ``gamma_weight``: ``[K]`` discounted occurrence weight ``sum gamma^t`` of the pair, whose
    per-state sums are the ``Gamma(s)`` of the discounted estimator (App D.1).
    """

    states: Array
    actions: Array
    counts: Array
    gamma_weight: Array

    def state_weights(self) -> dict[int, float]:
        """``Gamma(s)`` per sampled state."""
        out: dict[int, float] = {}
        for s, w in zip(self.states.tolist(), self.gamma_weight.tolist()):
            out[s] = out.get(s, 0.0) + w
        return out


def sample_table(states: Array, actions: Array, gamma: float) -> SampleTable:
    """Collapse ``[N, H]`` rollouts into the distinct pairs with counts and ``Gamma`` weights."""
    n, h = states.shape
    disc = np.broadcast_to(gamma ** np.arange(h), (n, h)).ravel()
    pairs = states.ravel() * (actions.max() + 1) + actions.ravel()
    uniq, inv, counts = np.unique(pairs, return_inverse=True, return_counts=True)
    weight = np.zeros(uniq.shape[0])
    np.add.at(weight, inv, disc)
    na = actions.max() + 1
    return SampleTable(uniq // na, uniq % na, counts.astype(np.float64), weight)


def apply_ratio_update(pi_old: Array, table: SampleTable, delta: Array,
                       floor: float = 1e-8) -> Array:
    """Turn sample ratio deviations ``Delta_{s,a}`` into a policy.

    ``pi_new(a|s) = pi_old(a|s)(1 + Delta_{s,a})`` on the sampled pairs, unchanged on the
    others; then clipped at ``floor`` (eq 69 does not keep ``r >= 0``, finding F5) and each
    row renormalised (the sample probability constraint, eq 65, only holds on the sampled
    actions, so the row sum drifts when some action was never sampled).
    """
    ratio = np.ones_like(pi_old)
    ratio[table.states, table.actions] = 1.0 + delta
    pi = np.maximum(pi_old * ratio, floor)
    return pi / pi.sum(-1, keepdims=True)
