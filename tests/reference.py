"""Plain float64 numpy transcriptions of the paper's formulas, loops and all.

These are deliberately the slowest, most literal reading of each equation: the library's
vectorised torch code is tested against them.
"""

from __future__ import annotations

import math

import numpy as np


def g_agg(x: float, c: float, k: float) -> float:
    """Eq 10 (``k = 0``: the hard clip of ``fiberpo_hard``, ``clamp(x, -c, c)``)."""
    if abs(x) <= c:
        return x
    if k == 0:
        return math.copysign(c, x)
    if abs(x) < (1 + 1 / k) * c:
        return math.copysign(1.0, x) * (k + 1) * c - k * x
    return 0.0


def clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def rows(mask: np.ndarray) -> list[list[int]]:
    return [[t for t in range(mask.shape[1]) if mask[b, t]] for b in range(mask.shape[0])]


def fiberpo_G(x: np.ndarray, mask: np.ndarray, cp: float, cm: float, eps: float,
              slope: float = 1.0) -> np.ndarray:
    """Eq 7 / eq 80 token by token, with sign(0) = +1; ``slope``: rollback slope
    ``k = slope * T`` (1 in the paper; the variants ``fiberpo_slope``, ``fiberpo_hard``)."""
    G = np.ones_like(x)
    for b, toks in enumerate(rows(mask)):
        if not toks:
            continue
        T = len(toks)
        sp = sum(max(x[b, t], 0.0) for t in toks) / T
        sm = sum(max(-x[b, t], 0.0) for t in toks) / T
        w = math.exp(g_agg(sp, cp, slope * T)) / math.exp(g_agg(sm, cm, slope * T))
        for t in toks:
            lab = 1.0 if x[b, t] >= 0 else -1.0
            s_same, s_other = (sp, sm) if lab > 0 else (sm, sp)
            # logclip((s^(l))^(-l) r, eps) / logclip((s^(-l))^(-l), eps), eq 11
            num = clip(x[b, t] - lab * s_same, -eps, eps)
            den = clip(-lab * s_other, -eps, eps)
            G[b, t] = w * math.exp(num - den)
    return G


def fiberpo_clamp_G(x: np.ndarray, mask: np.ndarray, delta: float, eps: float) -> np.ndarray:
    """The public plugin's rule (alphadl/FibrationPO 5f048ff, fiberpo/fbg.py) token by token:
    ratio exp(clamp(x, -20, 20)) floored at 1e-8, base clamp(mean log r, -delta, delta),
    gated exp(base) * exp(clip(log r - base, -eps, eps))."""
    G = np.ones_like(x)
    for b, toks in enumerate(rows(mask)):
        if not toks:
            continue
        lr = {t: math.log(max(math.exp(clip(x[b, t], -20.0, 20.0)), 1e-8)) for t in toks}
        base = clip(sum(lr.values()) / len(toks), -delta, delta)
        for t in toks:
            G[b, t] = math.exp(base) * math.exp(clip(lr[t] - base, -eps, eps))
    return G


def fiberpo_domain_G(x, mask, group, domain, cp, cm, eps) -> np.ndarray:
    """Eqs 31-33 token by token: aggregates of groups and domains as eq 33 writes them."""
    R = rows(mask)
    valid = [b for b, toks in enumerate(R) if toks]
    sp = {b: sum(max(x[b, t], 0) for t in R[b]) / len(R[b]) for b in valid}
    sm = {b: sum(max(-x[b, t], 0) for t in R[b]) / len(R[b]) for b in valid}
    groups = {g: [b for b in valid if group[b] == g] for g in set(group[b] for b in valid)}
    dom_groups = {}
    for g, members in groups.items():
        dom_groups.setdefault(domain[members[0]], []).append(g)
    gp = {g: sum(sp[b] for b in m) / len(m) for g, m in groups.items()}
    gm = {g: sum(sm[b] for b in m) / len(m) for g, m in groups.items()}
    dp, dm, TD, TG = {}, {}, {}, {}
    for d, gs in dom_groups.items():
        n_d = sum(len(groups[g]) for g in gs)
        dp[d] = sum(len(groups[g]) / n_d * gp[g] for g in gs)  # eq 33
        dm[d] = sum(len(groups[g]) / n_d * gm[g] for g in gs)
        TD[d] = sum(len(R[b]) for g in gs for b in groups[g])
    for g, m in groups.items():
        TG[g] = sum(len(R[b]) for b in m)
    G = np.ones_like(x)
    for b in valid:
        g, d, T = group[b], domain[b], len(R[b])
        log_w = (g_agg(dp[d], cp, TD[d]) + g_agg(gp[g] - dp[d], cp, TG[g])
                 + g_agg(sp[b] - gp[g], cp, T)
                 - g_agg(dm[d], cm, TD[d]) - g_agg(gm[g] - dm[d], cm, TG[g])
                 - g_agg(sm[b] - gm[g], cm, T))
        for t in R[b]:
            lab = 1.0 if x[b, t] >= 0 else -1.0
            s_same, s_other = (sp[b], sm[b]) if lab > 0 else (sm[b], sp[b])
            G[b, t] = math.exp(log_w + clip(x[b, t] - lab * s_same, -eps, eps)
                               - clip(-lab * s_other, -eps, eps))
    return G


def seq_mean_token_mean(values: np.ndarray, mask: np.ndarray) -> float:
    R = [toks for toks in rows(mask) if toks]
    return sum(sum(values[b, t] for t in toks) / len(toks)
               for b, toks in enumerate(rows(mask)) if toks) / len(R)


def token_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].sum() / mask.sum())


def ppo_terms(x, adv, lo, hi):
    r = np.exp(x)
    return np.minimum(r * adv, np.clip(r, 1 - lo, 1 + hi) * adv)


def objective(name: str, x: np.ndarray, adv: np.ndarray, mask: np.ndarray, **p) -> float:
    """``J`` of each registered objective at its defaults (or ``p``), literally."""
    if name == "ppo_clip":
        return token_mean(ppo_terms(x, adv, p.get("eps_low", .2), p.get("eps_high", .2)), mask)
    if name == "grpo":
        return seq_mean_token_mean(ppo_terms(x, adv, .2, .2), mask)
    if name == "dapo":
        return token_mean(ppo_terms(x, adv, .2, .28), mask)
    if name == "dr_grpo":
        n = sum(1 for toks in rows(mask) if toks)
        return float(ppo_terms(x, adv, .2, .2)[mask].sum() / (n * mask.shape[1]))
    if name in ("gspo", "gmpo"):
        vals = []
        for b, toks in enumerate(rows(mask)):
            if not toks:
                continue
            a = np.mean([adv[b, t] for t in toks])
            if name == "gspo":
                s = math.exp(np.mean([x[b, t] for t in toks]))
                vals.append(min(s * a, clip(s, 1 - 3e-4, 1 + 4e-4) * a))
            else:
                sg = 1.0 if a >= 0 else -1.0
                logs = [sg * min(sg * x[b, t], sg * clip(x[b, t], -.4, .4)) for t in toks]
                vals.append(math.exp(np.mean(logs)) * a)
        return float(np.mean(vals))
    if name == "gspo_token":  # value equals GSPO's with token advantages
        vals = np.zeros_like(x)
        for b, toks in enumerate(rows(mask)):
            if toks:
                s = math.exp(np.mean([x[b, t] for t in toks]))
                for t in toks:
                    vals[b, t] = min(s * adv[b, t], clip(s, 1 - 3e-4, 1 + 4e-4) * adv[b, t])
        return seq_mean_token_mean(vals, mask)
    if name == "cispo":  # value of the RGF form: clip(r) A
        return token_mean(np.clip(np.exp(x), 0.0, 1.28) * adv, mask)
    if name == "sapo":  # SAPO eq 1: (1/G) sum_i (1/|y_i|) sum_t f(r_it) A_it
        tau = np.where(adv > 0, 1.0, 1.05)
        return seq_mean_token_mean(4 / tau / (1 + np.exp(-tau * (np.exp(x) - 1))) * adv, mask)
    if name == "apc":  # every token its own state: B = delta
        d = p.get("delta", 0.2)
        return token_mean((1 + np.clip(np.exp(x) - 1, -d, d)) * adv, mask)
    if name == "fiberpo":
        G = fiberpo_G(x, mask, p.get("c_plus", .12), p.get("c_minus", .05), p.get("eps", .04))
        return seq_mean_token_mean(G * adv, mask)
    if name in ("fiberpo_slope", "fiberpo_hard"):
        slope = p.get("slope", .5) if name == "fiberpo_slope" else 0.0
        G = fiberpo_G(x, mask, p.get("c_plus", .12), p.get("c_minus", .05), p.get("eps", .04),
                      slope)
        return seq_mean_token_mean(G * adv, mask)
    if name == "fiberpo_clamp":
        G = fiberpo_clamp_G(x, mask, p.get("delta", .2), p.get("eps", .2))
        return seq_mean_token_mean(G * adv, mask)
    raise KeyError(name)
