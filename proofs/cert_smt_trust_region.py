"""SMT proofs of the trust-region statements of App D (Lemmas D.2, D.9, D.11, D.12; Thms D.3, D.10).

Everything in App D is per state once the state weights are fixed, so each claim lives at one
state ``s`` with ``k`` sampled actions of multiplicities ``n_a`` (``T_s = sum n_a``), real
ratio deviations ``Delta_a`` (or ``u_a``), real advantages ``A_a`` and a real radius
``delta > 0``. Counts are fixed integers (every vector in a stated range) unless a claim says
they are symbolic reals ``>= 1``. ``M(s) = T_s (max A - min A)/2`` is eq 69's optimum.
"""

from __future__ import annotations

import itertools

import numpy as np
import z3
from fibration_theory.proofs import smt
from fibration_theory.proofs.registry import Outcome, certificate
from fibration_theory.proofs.smt import Pair, claim


def count_vectors(k: int, top: int) -> list[tuple[int, ...]]:
    """Every count vector in ``{1..top}^k`` up to permutation (the claims are symmetric)."""
    return sorted({tuple(sorted(c)) for c in itertools.product(range(1, top + 1), repeat=k)})


def _q(num: int, den: int) -> z3.ArithRef:
    """The exact rational ``num/den`` (a Python float would be rounded before z3 sees it)."""
    return z3.Q(num, den)


def _reals(prefix: str, k: int) -> list[z3.ArithRef]:
    return [z3.Real(f"{prefix}{a}") for a in range(k)]


def _probability(counts, x) -> z3.BoolRef:
    """(65) at one state: ``sum_a n_a x_a = 0``."""
    return sum(n * v for n, v in zip(counts, x)) == 0


# --- Lemma D.9 ------------------------------------------------------------------------------

def lemma_d9_pairs(counts, sizes: str) -> list[Pair]:
    """Both claims of Lemma D.9 for ``u`` under (65) and the centered projection of Def D.8."""
    k = len(counts)
    u, d = _reals("u", k), z3.Real("delta")
    g = smt.apc_gate(counts, u, d)
    mean = smt.weighted_mean(counts, g)
    proj = [x - mean for x in g]
    hyp = [d > 0, _probability(counts, u)] + [n >= 1 for n in counts if z3.is_expr(n)]
    d_u, d_proj = smt.tv(counts, u), smt.tv(counts, proj)
    return [
        Pair(claim("D.9(1) D(s, proj G(u)) <= delta", sizes, hyp, d_proj <= d),
             claim("D.9(1) with the bound halved: D(s, proj G(u)) <= delta/2", sizes, hyp,
                   d_proj <= d / 2)),
        Pair(claim("D.9(2) D(s,u) > delta => D(s, proj G(u)) < delta", sizes,
                   hyp + [d_u > d], d_proj < d),
             claim("D.9(2) with >= for >: D(s,u) >= delta => D(s, proj G(u)) < delta", sizes,
                   hyp + [d_u >= d], d_proj < d)),
    ]


@certificate("V4", "Lemma D.9, Def D.8",
             "retraction: D(s, proj G(u)) <= delta for every u under (65), strictly when "
             "D(s, u) > delta (z3, all real u and delta > 0)", "smt")
def check_lemma_d9_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    sets = ([(2, 4), (3, 3), (4, 2)] if thorough else [(2, 3), (3, 2)])
    pairs = []
    for k, top in sets:
        for counts in count_vectors(k, top):
            pairs += lemma_d9_pairs(counts, f"k={k}, n={counts}")
    sym = [z3.Real(f"n{a}") for a in range(2)]
    pairs += lemma_d9_pairs(sym, "k=2, symbolic real counts n_a >= 1")
    return smt.check_pairs(pairs, thorough=thorough)


# --- Thm D.3: the per-state unit-TV problem (eqs 69-71) --------------------------------------

def _extremes(adv):
    hi, hi_c = smt.extreme(adv, "maxA", largest=True)
    lo, lo_c = smt.extreme(adv, "minA", largest=False)
    return hi, lo, hi_c + lo_c


def unit_tv_pairs(counts, sizes: str) -> list[Pair]:
    """Eq 69's bound ``sum n Delta A <= M(s)`` on the feasible set, eq 70/71's scaling, and
    optimality of the closed-form maximizer (``+T_s/(2 n)`` on a best action, ``-T_s/(2 n)``
    on a worst)."""
    k, t_s = len(counts), sum(counts)
    x, adv, c = _reals("Delta", k), _reals("A", k), z3.Real("c")
    hi, lo, ext = _extremes(adv)
    m_s = t_s * (hi - lo) / 2
    value = sum(n * v * a for n, v, a in zip(counts, x, adv))
    prob = _probability(counts, x)
    unit = smt.tv(counts, x) == 1
    pairs = [
        Pair(claim("eq 69: (65), D(s,Delta)=1 => sum n Delta A <= T_s (max A - min A)/2",
                   sizes, [prob, unit] + ext, value <= m_s),
             claim("eq 69 with (65) dropped", sizes, [unit] + ext, value <= m_s)),
        Pair(claim("eq 71: (65), D(s,Delta) <= c => sum n Delta A <= c M(s)", sizes,
                   [prob, smt.tv(counts, x) <= c, c >= 0] + ext, value <= c * m_s),
             claim("eq 71 with the bound halved", sizes,
                   [prob, smt.tv(counts, x) <= c, c >= 0] + ext, value <= c * m_s / 2)),
    ]
    # the closed-form maximizer with best action 0 and worst action 1 (any labelling)
    best = [_q(t_s, 2 * counts[0]) if a == 0 else (-_q(t_s, 2 * counts[1]) if a == 1 else 0)
            for a in range(k)]
    order = [adv[0] == hi, adv[1] == lo]
    attained = z3.And(sum(n * v for n, v in zip(counts, best)) == 0,
                      smt.tv(counts, best) == 1,
                      sum(n * v * a for n, v, a in zip(counts, best, adv)) == m_s)
    # a wrong candidate: the negative mass spread over every action but the best
    spread = [_q(t_s, 2 * counts[0]) if a == 0 else -_q(t_s, 2 * (t_s - counts[0]))
              for a in range(k)]
    if k >= 3:
        wrong_name = "a wrong maximizer (negative mass spread over all but the best) attains M(s)"
        wrong = sum(n * v * a for n, v, a in zip(counts, spread, adv)) == m_s
    else:
        wrong_name = "Delta_hat* with the best and worst actions swapped attains M(s)"
        wrong = sum(n * v * a for n, v, a in zip(counts, best, adv[::-1])) == m_s
    pairs.append(Pair(
        claim("Thm D.3: Delta_hat* is feasible and attains M(s) (so, with eq 69, optimal)",
              sizes, ext + order, attained),
        claim(wrong_name, sizes, ext + order, wrong)))
    return pairs


@certificate("V2", "Thm D.3, eqs 69-71",
             "per-state unit-TV LP: sum n Delta A <= M(s) = T_s(max A - min A)/2 for every "
             "feasible Delta, c M(s) at radius c, attained by Delta_hat* (z3, all real Delta, A)",
             "smt")
def check_unit_tv_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    sets = [(2, 3), (3, 3), (4, 2)] if thorough else [(2, 2), (3, 2)]
    pairs = []
    for k, top in sets:
        for counts in count_vectors(k, top):
            pairs += unit_tv_pairs(counts, f"k={k}, n={counts}, symbolic A")
    return smt.check_pairs(pairs, thorough=thorough)


# --- Thm D.10: per-state core -----------------------------------------------------------------

def apc_core_pairs(counts, sizes: str) -> list[Pair]:
    """At one state, under (65) for Delta and (66) for A: APC's per-state term
    ``sum n G(Delta) A`` (eq 73 with its centering term, which (66) cancels) is at most
    ``delta M(s)``, strictly below it outside the trust region when ``M(s) > 0``, and
    ``Delta = delta Delta_hat*`` attains it."""
    k, t_s = len(counts), sum(counts)
    x, adv, d = _reals("Delta", k), _reals("A", k), z3.Real("delta")
    hi, lo, ext = _extremes(adv)
    m_s = t_s * (hi - lo) / 2
    g = smt.apc_gate(counts, x, d)
    mean_g = smt.weighted_mean(counts, g)
    # eq 73's per-state bracket: sum_a n [G A + (1 - C) A]; the constant sum n A is dropped
    value = sum(n * (gv * a - mean_g * a) for n, gv, a in zip(counts, g, adv))
    hyp = [d > 0, _probability(counts, x), _probability(counts, adv)] + ext
    outside = [smt.tv(counts, x) > d, hi > lo]
    best = [d * _q(t_s, 2 * counts[0]) if a == 0 else (-d * _q(t_s, 2 * counts[1]) if a == 1
                                                       else 0) for a in range(k)]
    g_best = smt.apc_gate(counts, best, d)
    at_best = sum(n * gv * a for n, gv, a in zip(counts, g_best, adv))
    return [
        Pair(claim("Thm D.10 core: sum n proj G(Delta) A <= delta M(s)", sizes, hyp,
                   value <= d * m_s),
             claim("Thm D.10 core with the bound halved: <= delta M(s)/2", sizes, hyp,
                   value <= d * m_s / 2)),
        Pair(claim("D(s,Delta) > delta, M(s) > 0 => sum n proj G(Delta) A < delta M(s)", sizes,
                   hyp + outside, value < d * m_s),
             claim("strictness without M(s) > 0", sizes, hyp + outside[:1], value < d * m_s)),
        Pair(claim("delta Delta_hat* attains delta M(s) (the clip is inactive there)", sizes,
                   hyp + [adv[0] == hi, adv[1] == lo], at_best == d * m_s),
             claim("delta Delta_hat* attains delta M(s) with the best and worst swapped", sizes,
                   hyp + [adv[0] == lo, adv[1] == hi], at_best == d * m_s)),
    ]


@certificate("V5", "Thm D.10 (Thm 3.3), eqs 73-75",
             "per-state core: APC-Obj's per-state term never exceeds delta M(s), is below it "
             "outside the trust region, and delta Delta_hat* attains it (z3, all real inputs)",
             "smt")
def check_apc_core_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    sets = [(2, 3), (3, 2)] if thorough else [(2, 2), (3, 1)]
    pairs = []
    for k, top in sets:
        for counts in count_vectors(k, top):
            pairs += apc_core_pairs(counts, f"k={k}, n={counts}, symbolic A, delta")
    return smt.check_pairs(pairs, thorough=thorough)


# --- Lemmas D.2, D.11, D.12 ------------------------------------------------------------------

def radius_pairs(n_states: int, k: int) -> list[Pair]:
    """Lemma D.2 ``M <= ||A||_inf`` with symbolic state weights on the simplex and symbolic
    advantages; Lemma D.11 ``delta(APC) <= delta(TRPO)``; Lemma D.12: the update ``t* Delta_hat*``
    has per-state TV ``t* <= delta(TRPO)``."""
    sizes = f"{n_states} states x {k} actions, symbolic A, weights, gamma"
    adv = [[z3.Real(f"A{s}_{a}") for a in range(k)] for s in range(n_states)]
    w = [z3.Real(f"w{s}") for s in range(n_states)]
    flat = [a for row in adv for a in row]
    # any upper bound of every |A| (the claims then hold a fortiori for the max itself)
    norm = z3.Real("normA")
    norm_c = [norm >= smt.zabs(a) for a in flat]
    spans, span_c = [], []
    for s, row in enumerate(adv):
        hi, lo, ext = _extremes(row)
        spans.append((hi - lo) / 2)
        span_c += ext
    simplex = [sum(w) == 1] + [x >= 0 for x in w]
    m = sum(ws * sp for ws, sp in zip(w, spans))  # M = sum_s w_s M(s)/T_s
    gamma = z3.Real("gamma")
    hyp = simplex + norm_c + span_c
    g_hyp = [gamma > 0, gamma <= 1, norm > 0]
    # delta(APC) = (1-gamma) M / (8 gamma ||A||) <= (1-gamma)/(8 gamma), multiplied out
    d_apc_scaled = (1 - gamma) * m            # = 8 gamma ||A|| delta(APC)
    d_trpo_scaled = (1 - gamma) * norm        # = 8 gamma ||A|| delta(TRPO)
    # Lemma D.12 at one state with the best/worst actions carrying n_i, n_j of T_s tokens:
    # D(s, t* Delta_hat*) = (n_i |t* T_s/(2 n_i)| + n_j |t* T_s/(2 n_j)|)/T_s = t*, where
    # t* = (1-gamma) M / (8 gamma ||A||) for any M in [0, ||A||] (Lemma D.2, proved above)
    t, n_i, n_j, t_s, m_any = z3.Reals("t_star n_i n_j T_s M")
    upd = (n_i * smt.zabs(t * t_s / (2 * n_i)) + n_j * smt.zabs(t * t_s / (2 * n_j))) / t_s
    d12_sizes = "one state, symbolic n_i, n_j >= 1, T_s, M in [0, ||A||], gamma"
    d12 = [n_i >= 1, n_j >= 1, t_s >= n_i + n_j, m_any >= 0, m_any <= norm, norm > 0,
           gamma > 0, gamma <= 1, 8 * gamma * norm * t == (1 - gamma) * m_any]
    return [
        Pair(claim("Lemma D.2: M <= ||A||_inf", sizes, hyp, m <= norm),
             claim("Lemma D.2 with the bound halved", sizes, hyp, m <= norm / 2)),
        Pair(claim("Lemma D.11: delta(APC-Obj) <= delta(TRPO)", sizes, hyp + g_hyp,
                   d_apc_scaled <= d_trpo_scaled),
             claim("Lemma D.11 with delta(TRPO) halved", sizes, hyp + g_hyp,
                   2 * d_apc_scaled <= d_trpo_scaled)),
        Pair(claim("Lemma D.12: D(s, t* Delta_hat*) = t* <= delta(TRPO)", d12_sizes, d12,
                   z3.And(upd == t, 8 * gamma * upd <= 1 - gamma)),
             claim("Lemma D.12 with half the radius: D(s, t* Delta_hat*) <= delta(TRPO)/2",
                   d12_sizes, d12, 2 * 8 * gamma * upd <= 1 - gamma)),
    ]


def lemma_d2_steps(n_states: int, k: int) -> list[Pair]:
    """Lemma D.2 in its proof's two steps: per state ``(max A - min A)/2 <= ||A||_inf``
    (``k`` actions), then a convex combination of numbers ``<= N`` is ``<= N``."""
    row = [z3.Real(f"A{a}") for a in range(k)]
    hi, lo, ext = _extremes(row)
    norm = z3.Real("normA")
    bound = [norm >= smt.zabs(a) for a in row]
    x = [z3.Real(f"x{s}") for s in range(n_states)]
    w = [z3.Real(f"w{s}") for s in range(n_states)]
    simplex = [sum(w) == 1] + [v >= 0 for v in w] + [v <= norm for v in x]
    return [
        Pair(claim("Lemma D.2, step 1: M(s)/T_s = (max A - min A)/2 <= ||A||_inf",
                   f"k={k}, symbolic A", ext + bound, (hi - lo) / 2 <= norm),
             claim("step 1 with the bound halved", f"k={k}, symbolic A", ext + bound,
                   (hi - lo) / 2 <= norm / 2)),
        Pair(claim("Lemma D.2, step 2: sum_s w_s x_s <= N for x_s <= N, w on the simplex",
                   f"{n_states} states, symbolic w, x, N", simplex,
                   sum(a * b for a, b in zip(w, x)) <= norm),
             claim("step 2 with w >= 0 dropped", f"{n_states} states, symbolic w, x, N",
                   simplex[:1] + simplex[1 + n_states:],
                   sum(a * b for a, b in zip(w, x)) <= norm)),
    ]


@certificate("V1", "Lemmas D.2, D.11, D.12",
             "M <= ||A||_inf; delta(APC-Obj) <= delta(TRPO); the update t* Delta_hat* has "
             "per-state TV t* <= delta(TRPO) (z3, symbolic advantages, weights, gamma)", "smt")
def check_radii_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    # the whole chain at 2 states x 2 actions (3 x 2 in --thorough); Lemma D.2 in its two
    # steps at more states and actions
    pairs = radius_pairs(2, 2) + (radius_pairs(3, 2)[:4] if thorough else [])
    for n_states, k in ([(3, 3), (5, 4), (8, 6)] if thorough else [(3, 3), (4, 4)]):
        pairs += lemma_d2_steps(n_states, k)
    return smt.check_pairs(pairs, thorough=thorough)
