"""V6: PPO, GRPO and GSPO as RGF instances (App C.4) and the relaxation steps of App C.5;
V7: the inequality chain behind Claim 3.5 (App C.6).

Each check draws a random padded batch from ``rng`` and compares the library's objective with
the paper's (E, mu, G) specification, written out here independently in numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory import losses

#: float64 identities between two summation orders
IDENTITY_TOL = 1e-12


def _batch(rng: np.random.Generator, scale: float = 0.4):
    b, t = rng.integers(2, 9), rng.integers(2, 12)
    lengths = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    x = rng.uniform(-scale, scale, size=(b, t)) * mask
    adv = np.repeat(rng.normal(size=(b, 1)), t, axis=1)  # outcome advantages, one per row
    return mask, x, adv


def _loss(name, x, adv, mask, compute=None, **params) -> float:
    compute = compute or losses.compute
    z = torch.zeros(x.shape, dtype=torch.float64)
    return -float(compute(name, torch.as_tensor(x), z, torch.as_tensor(adv),
                          torch.as_tensor(mask), **params).loss)


def _g_ppo(r, adv, eps_lo, eps_hi):
    """G_PPO = sign(A) min(clip(r, 1 +- eps) sign(A), r sign(A)) (App C.4)."""
    sg = np.where(adv >= 0, 1.0, -1.0)
    return sg * np.minimum(np.clip(r, 1 - eps_lo, 1 + eps_hi) * sg, r * sg)


@certificate("V6", "App C.4 (PPO)", "token PPO-clip is the RGF instance (X, n/T, G_PPO)",
             "numeric")
def ppo_is_rgf(rng: np.random.Generator, compute=None) -> Outcome:
    worst = 0.0
    for _ in range(50):
        mask, x, adv = _batch(rng)
        adv = rng.normal(size=adv.shape)  # token advantages for PPO
        eps = rng.uniform(0.05, 0.3)
        want = (_g_ppo(np.exp(x), adv, eps, eps) * adv)[mask].sum() / mask.sum()
        got = _loss("ppo_clip", x, adv, mask, compute, eps_low=eps, eps_high=eps)
        worst = max(worst, abs(got - want))
    return Outcome(worst, IDENTITY_TOL, "50 random batches")


@certificate("V6", "App C.4 (GRPO)", "GRPO is (X x Tj, 1/(|Tj| T_tau), G_PPO)", "numeric")
def grpo_is_rgf(rng: np.random.Generator, compute=None) -> Outcome:
    worst = 0.0
    for _ in range(50):
        mask, x, adv = _batch(rng)
        adv = rng.normal(size=adv.shape)
        mu = mask / mask.sum(1, keepdims=True) / mask.shape[0]
        want = (mu * _g_ppo(np.exp(x), adv, 0.2, 0.2) * adv).sum()
        worst = max(worst, abs(_loss("grpo", x, adv, mask, compute) - want))
    return Outcome(worst, IDENTITY_TOL, "50 random batches")


@certificate("V6", "App C.4 (GSPO)",
             "GSPO is (X x Tj, 1/(|Tj| T_tau), l_tau min(clip(s_tau) l_tau, s_tau l_tau))",
             "numeric")
def gspo_is_rgf(rng: np.random.Generator, compute=None) -> Outcome:
    worst = 0.0
    for _ in range(50):
        mask, x, adv = _batch(rng, scale=1e-3)
        s = np.exp((x * mask).sum(1) / mask.sum(1))[:, None]
        l_tau = np.where((adv * mask).sum(1, keepdims=True) >= 0, 1.0, -1.0)
        g = l_tau * np.minimum(np.clip(s, 1 - 3e-4, 1 + 4e-4) * l_tau, s * l_tau)
        mu = mask / mask.sum(1, keepdims=True) / mask.shape[0]
        want = (mu * g * adv).sum()
        worst = max(worst, abs(_loss("gspo", x, adv, mask, compute) - want))
    return Outcome(worst, IDENTITY_TOL, "50 random batches, |log r| <= 1e-3")


@certificate("V6", "App C.5.1-C.5.2",
             "APC-Obj with the cross-entry sum dropped (step 2) is clip(r, 1 +- delta) with "
             "weights 1/T (PPO), and with 1/(|Tj| T_tau) weights (step 3) GRPO without the min",
             "numeric")
def apc_relaxes_to_ppo_and_grpo(rng: np.random.Generator, compute=None) -> Outcome:
    worst = 0.0
    for _ in range(50):
        mask, x, adv = _batch(rng)
        adv = rng.normal(size=adv.shape)
        delta = rng.uniform(0.05, 0.3)
        clipped = np.clip(np.exp(x), 1 - delta, 1 + delta) * adv
        # step 2: one state per token makes B = T_s delta = delta, no cross-entry sum
        got = _loss("apc", x, adv, mask, compute, delta=delta)
        worst = max(worst, abs(got - clipped[mask].sum() / mask.sum()))
        got3 = _loss("apc", x, adv, mask, compute, delta=delta, agg="seq-mean-token-mean")
        mu = mask / mask.sum(1, keepdims=True) / mask.shape[0]
        worst = max(worst, abs(got3 - (mu * clipped).sum()))
    return Outcome(worst, IDENTITY_TOL, "50 random batches, delta in [0.05, 0.3]")


@certificate("V6", "App C.5.3 steps 3-4",
             "GSPO derivation: below the per-trajectory budget the clipped objective is "
             "(1/|Tj|) sum (log s_tau + 1) A_tau, and log s + 1 differs from s by at most "
             "(log s)^2 e^|log s| / 2", "numeric")
def gspo_derivation_steps(rng: np.random.Generator) -> Outcome:
    worst = 0.0
    worst_ratio = 0.0
    for _ in range(200):
        mask, x, adv = _batch(rng, scale=0.05)
        n = mask.sum(1)
        tv = (np.abs(x) * mask).sum(1) / n  # \hat D_TV with log r for r - 1 (step 3)
        delta = tv.max() * 1.01  # case (2): every trajectory under its budget
        clip_bound = n[:, None] * delta - (n * tv)[:, None] + np.abs(x)
        inner = np.clip(x, -clip_bound, clip_bound)
        assert np.all(inner[mask] == x[mask])  # all clips are the identity in case (2)
        lhs = (((inner + 1) * adv * mask).sum(1) / n).mean()
        log_s = (x * mask).sum(1) / n
        rhs = ((log_s + 1) * adv[:, 0]).mean()
        worst = max(worst, abs(lhs - rhs))
        err = np.abs(np.exp(log_s) - (log_s + 1))
        bound = 0.5 * log_s ** 2 * np.exp(np.abs(log_s))
        worst_ratio = max(worst_ratio, float(np.max(err / np.maximum(bound, 1e-300))))
    ok = worst_ratio <= 1.0 + 1e-12
    return Outcome(worst, IDENTITY_TOL, f"Taylor remainder / bound <= {worst_ratio:.3f}", ok=ok)


@certificate("V7", "Claim 3.5 / App C.6",
             "if every state's KL <= eps then the state-averaged TV <= sqrt(eps/2) "
             "(Pinsker and Jensen); the sampled version is measured in simulations/", "numeric")
def claim_3_5_chain(rng: np.random.Generator, pinsker=None) -> Outcome:
    """Exact categorical policies: the chain of App C.6 with the true KL, not its estimate."""
    pinsker = pinsker or (lambda kl: np.sqrt(kl / 2))
    worst = -np.inf
    for _ in range(300):
        n_states, n_actions = rng.integers(1, 20), rng.integers(2, 30)
        eps = 10 ** rng.uniform(-5, -1)
        p = rng.dirichlet(np.ones(n_actions), size=n_states)
        q = p * np.exp(rng.normal(scale=rng.uniform(0.001, 0.5), size=p.shape))
        q /= q.sum(1, keepdims=True)
        kl = (p * np.log(p / q)).sum(1)
        # shrink each state's step until its KL is within eps (the clipped regime)
        t = np.minimum(1.0, np.sqrt(eps / np.maximum(kl, 1e-300)))
        q = p ** (1 - t[:, None]) * q ** t[:, None]
        q /= q.sum(1, keepdims=True)
        kl = (p * np.log(p / q)).sum(1)
        tv = 0.5 * np.abs(p - q).sum(1)
        w = rng.dirichlet(np.ones(n_states))  # state visitation weights
        eps_eff = max(float(kl.max()), 1e-300)
        worst = max(worst, float(w @ tv - pinsker(eps_eff)))
    return Outcome(max(worst, 0.0), 0.0, f"max(avg TV - sqrt(maxKL/2)) = {worst:.2e}")
