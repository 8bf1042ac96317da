"""SMT proofs of FiberPO's gate statements: g_agg (eq 10), eq 20 and Properties 5.3-5.5, the
range of the gated ratio, and Thm 4.5's identity conditions for the App E.5.4 and E.7 gates.

Tokens carry real log-ratios ``x_i = log r_i``; a trajectory of ``T`` tokens has the
sign-split aggregates of eq 9, ``log s+ = (1/T) sum_{l_i=+1} x_i`` and
``log s- = (1/T) sum_{l_i=-1} (-x_i)``, with labels ``l_i = sign(x_i)`` (eq 13) and
``sign(0)`` a stated convention. Eq 7 / 16 then gives

    log G_i = g_agg(log s+, C+, T) - g_agg(log s-, C-, T) + clip(l_i u_i, +-eps)
              - clip(l_i v_i, +-eps),

``u_i = l_i x_i - log s^(l_i)`` (eq 14), ``v_i = -log s^(-l_i)`` (eq 15). Budgets ``C+-``
and ``eps`` are symbolic positive reals, ``T`` fixed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import z3
from fibration_theory.proofs import smt
from fibration_theory.proofs.registry import Outcome, certificate
from fibration_theory.proofs.smt import Pair, claim

# --- g_agg (eq 10) --------------------------------------------------------------------------


def g_agg_pairs() -> list[Pair]:
    """Regimes, continuity (as a Lipschitz bound), slope -k in rollback, range, for all real x,
    y, C > 0 and k >= 1 (k is the level's token count, a real here)."""
    x, y, c, k = z3.Reals("x y C k")
    g = lambda v, **kw: smt.g_agg(v, c, k, **kw)
    star = (1 + 1 / k) * c
    hyp = [c > 0, k >= 1]
    sizes = "symbolic x, y, C > 0, k >= 1"
    same_rollback = [c < x, x < star, c < y, y < star]
    return [
        Pair(claim("pass-through: |x| <= C => g(x) = x", sizes, hyp + [smt.zabs(x) <= c],
                   g(x) == x),
             claim("pass-through up to 2C", sizes, hyp + [smt.zabs(x) <= 2 * c], g(x) == x)),
        Pair(claim("rollback: C < |x| < (1+1/k)C => 0 < x g(x) < x^2 (shrunk, same sign)",
                   sizes, hyp + [c < smt.zabs(x), smt.zabs(x) < star],
                   z3.And(0 < x * g(x), x * g(x) < x * x)),
             claim("rollback keeps at least half: x g(x) >= x^2/2", sizes,
                   hyp + [c < smt.zabs(x), smt.zabs(x) < star], x * g(x) >= x * x / 2)),
        Pair(claim("zeroed: |x| >= (1+1/k)C => g(x) = 0", sizes, hyp + [smt.zabs(x) >= star],
                   g(x) == 0),
             claim("zeroed from |x| >= C on", sizes, hyp + [smt.zabs(x) >= c], g(x) == 0)),
        Pair(claim("continuity: |g(x) - g(y)| <= k |x - y|", sizes, hyp,
                   smt.zabs(g(x) - g(y)) <= k * smt.zabs(x - y)),
             claim("continuity with the zero threshold at (1 + 1/(2k))C", sizes, hyp,
                   smt.zabs(g(x, star=(1 + 1 / (2 * k)) * c) - g(y, star=(1 + 1 / (2 * k)) * c))
                   <= k * smt.zabs(x - y))),
        Pair(claim("slope -k in rollback: g(x) - g(y) = -k (x - y)", sizes, hyp + same_rollback,
                   g(x) - g(y) == -k * (x - y)),
             claim("slope -(k+1) in rollback", sizes, hyp + same_rollback,
                   g(x) - g(y) == -(k + 1) * (x - y))),
        Pair(claim("range: |g(x)| <= C", sizes, hyp, smt.zabs(g(x)) <= c),
             claim("range: |g(x)| <= C/2", sizes, hyp, smt.zabs(g(x)) <= c / 2)),
    ]


@certificate("V12", "eq 10 / eq 78, Remark E.8",
             "g_agg: identity for |x| <= C, shrinks in rollback, 0 beyond (1+1/k)C, "
             "k-Lipschitz (continuous), slope -k in rollback, |g| <= C (z3, symbolic x, C, k)",
             "smt")
def check_g_agg_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    return smt.check_pairs(g_agg_pairs(), thorough=thorough)


# --- eq 7 and eq 20 on symbolic trajectories ------------------------------------------------


@dataclasses.dataclass
class Traj:
    """z3 terms of one trajectory's tokens (eqs 9, 13-16)."""

    x: list
    label: list
    s_plus: z3.ArithRef
    s_minus: z3.ArithRef
    u: list
    v: list
    log_g: list
    branches: list  # every predicate deciding a piece of eq 7's piecewise-linear form


def trajectory(x: list, c_plus, c_minus, eps, *, zero_sign: int = 1) -> Traj:
    t = len(x)
    pos = [xi > 0 if zero_sign < 0 else xi >= 0 for xi in x]
    label = [z3.If(p, 1, -1) for p in pos]
    s_plus = sum(z3.If(p, xi, 0) for p, xi in zip(pos, x)) / t
    s_minus = sum(z3.If(p, 0, -xi) for p, xi in zip(pos, x)) / t
    same = [z3.If(p, s_plus, s_minus) for p in pos]
    other = [z3.If(p, s_minus, s_plus) for p in pos]
    u = [lb * xi - sm for lb, xi, sm in zip(label, x, same)]
    v = [-o for o in other]
    base = smt.g_agg(s_plus, c_plus, t) - smt.g_agg(s_minus, c_minus, t)
    log_g = [base + smt.zclip(lb * ui, -eps, eps) - smt.zclip(lb * vi, -eps, eps)
             for lb, ui, vi in zip(label, u, v)]
    branches = list(pos)
    for s, c in ((s_plus, c_plus), (s_minus, c_minus)):
        branches += [s <= c, s < (1 + z3.Q(1, t)) * c]
    for lb, ui, vi in zip(label, u, v):
        branches += [lb * ui > eps, lb * ui < -eps, lb * vi > eps, lb * vi < -eps]
    return Traj(x, label, s_plus, s_minus, u, v, log_g, branches)


def eq20_bracket(tr: Traj, c_plus, c_minus, eps, *, coupling_scale=None, v_term: bool = True
                 ) -> list[list]:
    """``d log G_i / d log r_j`` as eq 20 writes it inside one trajectory: ``(a) + (b)`` with
    ``(a) = [|u_i|<=eps][i=j]``, ``(b) = (1/T)(gamma(l_j) - [|u_i|<=eps][l_i=l_j]
    - [|v_i|<=eps](1 - [l_i=l_j]))``, ``gamma(l)`` the slope of g_agg at ``log s^(l)``."""
    t = len(tr.x)
    scale = z3.Q(1, t) if coupling_scale is None else coupling_scale

    def slope(s, c):
        return z3.If(s <= c, 1, z3.If(s < (1 + z3.Q(1, t)) * c, -t, 0))

    gam = [z3.If(lb == 1, slope(tr.s_plus, c_plus), slope(tr.s_minus, c_minus))
           for lb in tr.label]
    ind_u = [z3.If(smt.zabs(ui) <= eps, 1, 0) for ui in tr.u]
    ind_v = [z3.If(smt.zabs(vi) <= eps, 1, 0) for vi in tr.v]
    out = []
    for i in range(t):
        row = []
        for j in range(t):
            same = z3.If(tr.label[i] == tr.label[j], 1, 0)
            b = gam[j] - ind_u[i] * same - (ind_v[i] * (1 - same) if v_term else 0)
            row.append(ind_u[i] * (1 if i == j else 0) + scale * b)
        out.append(row)
    return out


def eq20_pairs(t: int, zero_sign: int) -> list[Pair]:
    """Eq 20 is the derivative of eq 7: on every piece of eq 7's piecewise-linear form,
    ``log G_i(x') - log G_i(x) = sum_j bracket_ij (x'_j - x_j)`` exactly."""
    cp, cm, eps = z3.Reals("C_plus C_minus eps")
    x = [z3.Real(f"x{i}") for i in range(t)]
    y = [z3.Real(f"y{i}") for i in range(t)]
    a, b = trajectory(x, cp, cm, eps, zero_sign=zero_sign), trajectory(y, cp, cm, eps,
                                                                         zero_sign=zero_sign)
    hyp = [cp > 0, cm > 0, eps > 0] + [p == q for p, q in zip(a.branches, b.branches)]
    sizes = f"T={t}, sign(0)={zero_sign:+d}, symbolic x, x', C+-, eps"

    def exact(bracket):
        return z3.And([a_g - b_g == sum(bracket[i][j] * (x[j] - y[j]) for j in range(t))
                       for i, (a_g, b_g) in enumerate(zip(a.log_g, b.log_g))])

    return [Pair(claim("eq 20 = d log G_i / d log r_j on every piece of eq 7", sizes, hyp,
                       exact(eq20_bracket(b, cp, cm, eps))),
                 claim("eq 20 with coupling weight 1 instead of 1/T", sizes, hyp,
                       exact(eq20_bracket(b, cp, cm, eps, coupling_scale=1))))]


def property_pairs(t: int) -> list[Pair]:
    """Properties 5.3-5.5 from eq 7 and eq 20 at trajectory length ``t``."""
    cp, cm, eps = z3.Reals("C_plus C_minus eps")
    x = [z3.Real(f"x{i}") for i in range(t)]
    hyp = [cp > 0, cm > 0, eps > 0]
    sizes = f"T={t}, symbolic x, C+-, eps"
    pairs = []
    # 5.3: a token's log G does not move when another trajectory's tokens change
    other, other2 = [z3.Real("z0"), z3.Real("z1")], [z3.Real("w0"), z3.Real("w1")]
    mine = trajectory(x, cp, cm, eps).log_g
    mine_again = trajectory(x, cp, cm, eps).log_g
    pooled = trajectory(x + other, cp, cm, eps).log_g[:t]
    pooled2 = trajectory(x + other2, cp, cm, eps).log_g[:t]
    pairs.append(Pair(
        claim("Property 5.3: log G_i depends on its own trajectory only", sizes + " + another "
              "trajectory of 2", hyp, z3.And([p == q for p, q in zip(mine, mine_again)])),
        claim("5.3 with aggregates pooled across both trajectories", sizes, hyp,
              z3.And([p == q for p, q in zip(pooled, pooled2)]))))
    # 5.4: at r = 1 (x = 0) the bracket is the identity, for either sign(0) convention and
    # indeed for any labels of the zero tokens
    for zs in (1, -1):
        tr = trajectory([z3.RealVal(0)] * t, cp, cm, eps, zero_sign=zs)
        br = eq20_bracket(tr, cp, cm, eps)
        ident = z3.And([br[i][j] == (1 if i == j else 0) for i in range(t) for j in range(t)])
        pairs.append(Pair(
            claim(f"Property 5.4: eq 20 at r = 1 is the identity (sign(0)={zs:+d})", sizes, hyp,
                  z3.And(ident, z3.And([g == 0 for g in tr.log_g]))),
            claim(f"5.4 with labels free at r = 1 and eq 20's v-term dropped (sign(0)={zs:+d})",
                  sizes, hyp, _free_label_identity(t, cp, cm, eps))))
    # 5.5: outside rollback the coupling term (b) is at most 1/T in size
    tr = trajectory(x, cp, cm, eps)
    br = eq20_bracket(tr, cp, cm, eps)
    star = (1 + z3.Q(1, t))
    no_rollback = [z3.Or(tr.s_plus <= cp, tr.s_plus >= star * cp),
                   z3.Or(tr.s_minus <= cm, tr.s_minus >= star * cm)]
    coupling = [br[i][j] - (z3.If(smt.zabs(tr.u[i]) <= eps, 1, 0) if i == j else 0)
                for i in range(t) for j in range(t)]
    pairs.append(Pair(
        claim("Property 5.5: outside rollback T |(b)_ij| <= 1", sizes, hyp + no_rollback,
              z3.And([t * smt.zabs(b) <= 1 for b in coupling])),
        claim("5.5 in every regime (rollback included)", sizes, hyp,
              z3.And([t * smt.zabs(b) <= 1 for b in coupling]))))
    return pairs


def _free_label_identity(t: int, cp, cm, eps) -> z3.BoolRef:
    """The bracket at x = 0 with arbitrary labels and the v-term dropped is the identity."""
    labels = [z3.Bool(f"l{i}") for i in range(t)]
    zero = z3.RealVal(0)
    tr = Traj([zero] * t, [z3.If(b, 1, -1) for b in labels], zero, zero, [zero] * t,
              [zero] * t, [], [])
    br = eq20_bracket(tr, cp, cm, eps, v_term=False)
    return z3.And([br[i][j] == (1 if i == j else 0) for i in range(t) for j in range(t)])


@certificate("V11", "Prop 5.2 eq 20, Properties 5.3-5.5",
             "eq 20 is exactly d log G / d log r on every piece of eq 7; block-diagonal over "
             "trajectories; identity at r = 1 for sign(0) = +-1; T |(b)| <= 1 outside rollback "
             "(z3, symbolic log-ratios and budgets at fixed T)", "smt")
def check_eq20_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    pairs = []
    # eq 20's exactness: about 1e7 z3 resource units (5 s) per claim at T = 2, minutes at 3
    for t, zs in ([(2, 1), (2, -1), (3, 1)] if thorough else [(2, 1)]):
        pairs += eq20_pairs(t, zs)
    for t in ((2, 3, 4) if thorough else (2, 3)):
        pairs += property_pairs(t)
    return smt.check_pairs(pairs, thorough=thorough)


# --- range of the gated ratio -----------------------------------------------------------------


def range_pairs(t: int) -> list[Pair]:
    cp, cm, eps = z3.Reals("C_plus C_minus eps")
    x = [z3.Real(f"x{i}") for i in range(t)]
    tr = trajectory(x, cp, cm, eps)
    hyp = [cp > 0, cm > 0, eps > 0]
    sizes = f"T={t}, symbolic x, C+-, eps"
    return [Pair(
        claim("-(C- + 2 eps) <= log G_i <= C+ + 2 eps", sizes, hyp,
              z3.And([z3.And(-(cm + 2 * eps) <= g, g <= cp + 2 * eps) for g in tr.log_g])),
        claim("-(C- + eps) <= log G_i <= C+ + eps", sizes, hyp,
              z3.And([z3.And(-(cm + eps) <= g, g <= cp + eps) for g in tr.log_g])))]


@certificate("V15", "eqs 7, 10-16 (Def 5.1)",
             "FiberPO's gated ratio stays in a log-space trust region: "
             "-(C- + 2 eps) <= log G(r)_i <= C+ + 2 eps for every r (z3, fixed T)", "smt")
def check_ratio_range_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    pairs = []
    # from T = 2 on (at T = 1 the residual u, v vanish and the range is [-C-, C+])
    for t in ((2, 3, 4) if thorough else (2, 3)):
        pairs += range_pairs(t)
    return smt.check_pairs(pairs, thorough=thorough)


# --- Thm 4.5's identity conditions ----------------------------------------------------------


def identity_pairs() -> list[Pair]:
    """At r = 1, F(1) = 0 (both E.5.4's ``max(l log r, 0)/T`` and E.7's
    ``[l_i = l] l_i log r_i / T``), so the base density and the residual are 0 and Thm 4.5 asks
    each gate to be the identity to first order at 0. A gate equal to the identity on an
    interval ``|sigma| <= rho`` around 0 meets both conditions (value and derivative 1)."""
    sig, c, eps, t, n = z3.Reals("sigma C eps T N")
    hyp = [c > 0, eps > 0, t >= 1, n >= 1]
    sizes = "symbolic sigma, C, eps > 0, T, |Tj(D)| >= 1"

    def near(rho):
        return hyp + [smt.zabs(sig) <= rho]

    fiber_e54 = smt.zclip(sig, -eps / t, eps / t)
    base = smt.g_agg(sig, c, t)
    domain = n * smt.g_agg(sig / n, c, t)
    token_e7 = smt.zclip(t * sig, -eps, eps) / t
    return [
        Pair(claim("E.5.4 g_Fiber = clip(., +-eps/T) is the identity on |sigma| <= eps/T",
                   sizes, near(eps / t), fiber_e54 == sig),
             claim("E.5.4 g_Fiber identity on |sigma| <= 2 eps/T", sizes, near(2 * eps / t),
                   fiber_e54 == sig)),
        Pair(claim("E.5.4 / E.7 (k=2) g_Base = g_agg(., C, T) is the identity on |sigma| <= C",
                   sizes, near(c), base == sig),
             claim("g_agg(., C, T) identity on |sigma| <= (1 + 1/T) C", sizes,
                   near((1 + 1 / t) * c), base == sig)),
        Pair(claim("E.7 (k=0, 1) N g_agg(sigma/N, C, T) is the identity on |sigma| <= N C",
                   sizes, near(n * c), domain == sig),
             claim("E.7 (k=0, 1) without the 1/N inside: N g_agg(sigma, C, T) identity near 0",
                   sizes, near(c), n * smt.g_agg(sig, c, t) == sig)),
        Pair(claim("E.7 (k=3) (1/T) clip(T sigma, eps) is the identity on |sigma| <= eps/T",
                   sizes, near(eps / t), token_e7 == sig),
             claim("E.7 (k=3) without the 1/T: clip(T sigma, eps) identity near 0", sizes,
                   near(eps / t), smt.zclip(t * sig, -eps, eps) == sig)),
    ]


def near_on_policy_pairs(t: int) -> list[Pair]:
    """FiberPO's gating map (eq 80 = R o G o F with the E.5.4 objects) is the identity on a
    whole neighbourhood of r = 1, ``|log r_i| <= min(C+, C-, eps)``, for either sign(0)
    convention: so it is differentiable at r = 1 with Jacobian I, whatever ``sign(0)`` is.
    With numpy's ``sign(0) = 0`` (a zero token in neither channel) it is not."""
    cp, cm, eps = z3.Reals("C_plus C_minus eps")
    x = [z3.Real(f"x{i}") for i in range(t)]
    rho = z3.Real("rho")
    hyp = [cp > 0, cm > 0, eps > 0, rho > 0, rho <= cp, rho <= cm, rho <= eps]
    hyp += [smt.zabs(v) <= rho for v in x]
    sizes = f"T={t}, symbolic x, C+-, eps"
    pairs = []
    for zs in (1, -1):
        tr = trajectory(x, cp, cm, eps, zero_sign=zs)
        ident = z3.And([g == v for g, v in zip(tr.log_g, x)])
        pairs.append(Pair(
            claim(f"log G(r) = log r on |log r_i| <= min(C+-, eps) (sign(0)={zs:+d})", sizes,
                  hyp, ident),
            claim(f"the same on |log r_i| <= 2 min(C+-, eps) (sign(0)={zs:+d})", sizes,
                  hyp[:4] + [smt.zabs(v) <= 2 * rho for v in x] + hyp[4:7], ident)))
    # numpy's sign: a zero token gets label 0, so its residual terms vanish
    tr = trajectory(x, cp, cm, eps)
    label0 = [z3.If(v == 0, 0, lb) for v, lb in zip(x, tr.label)]
    base = smt.g_agg(tr.s_plus, cp, t) - smt.g_agg(tr.s_minus, cm, t)
    g0 = [base + smt.zclip(lb * u, -eps, eps) - smt.zclip(lb * v, -eps, eps)
          for lb, u, v in zip(label0, tr.u, tr.v)]
    pairs.append(Pair(
        claim("log G(r) = log r near r = 1 for tokens off r = 1 (sign(0)=+1)", sizes,
              hyp + [v != 0 for v in x], z3.And([g == v for g, v in zip(tr.log_g, x)])),
        claim("log G(r) = log r near r = 1 with numpy's sign(0) = 0", sizes, hyp,
              z3.And([g == v for g, v in zip(g0, x)]))))
    return pairs


@certificate("V8", "Thm 4.5, App E.5.4, App E.7",
             "the E.5.4 and E.7 atomic gates meet Thm 4.5's identity conditions (each is the "
             "identity near the on-policy density 0); R o G o F is the identity near r = 1 for "
             "sign(0) = +-1 (z3, symbolic budgets)",
             "smt")
def check_identity_conditions_smt(rng: np.random.Generator, *, thorough: bool = False
                                  ) -> Outcome:
    pairs = identity_pairs()
    for t in ((2, 3, 4) if thorough else (2,)):
        pairs += near_on_policy_pairs(t)
    return smt.check_pairs(pairs, thorough=thorough)


# --- p.19: levels are gated independently -----------------------------------------------------


def level_decoupling_pairs() -> list[Pair]:
    """Eq 31's base weight gates each level's *residual* drift: the domain term reads
    ``log s_D``, the group term ``log s_g - log s_D``, the trajectory term
    ``log s_tau - log s_g`` (one sign channel; the other is the same). A drift common to a
    whole domain (every aggregate below it shifted by ``c``) can push the domain term into
    rollback or zeroing, and leaves the group and trajectory terms exactly as they were: a
    violation at one level does not reach the gates of the others (p.19)."""
    s_d, s_g, s_t, c = z3.Reals("s_D s_g s_tau c")
    c_d, c_g, c_t, t_d, t_g, t_t = z3.Reals("C_D C_g C_tau T_D T_g T_tau")
    hyp = [c_d > 0, c_g > 0, c_t > 0, t_d >= 1, t_g >= 1, t_t >= 1]
    sizes = "symbolic aggregates, shift c, per-level budgets and counts"

    def terms(d, g, t, *, residual=True):
        g_in, t_in = (g - d, t - g) if residual else (g, t)
        return (smt.g_agg(d, c_d, t_d), smt.g_agg(g_in, c_g, t_g), smt.g_agg(t_in, c_t, t_t))

    before, after = terms(s_d, s_g, s_t), terms(s_d + c, s_g + c, s_t + c)
    raw_before = terms(s_d, s_g, s_t, residual=False)
    raw_after = terms(s_d + c, s_g + c, s_t + c, residual=False)
    return [Pair(
        claim("p.19: a domain-wide drift c leaves the group and trajectory gates unchanged",
              sizes, hyp, z3.And(before[1] == after[1], before[2] == after[2])),
        claim("the same with levels gating raw aggregates (no residual)", sizes, hyp,
              z3.And(raw_before[1] == raw_after[1], raw_before[2] == raw_after[2])))]


@certificate("V14", "eq 31, Section 6 (p19)",
             "levels are gated independently: a drift common to a domain (or group) changes "
             "only its own level's gate in eq 31 (z3, symbolic aggregates and budgets)", "smt")
def check_level_decoupling_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    return smt.check_pairs(level_decoupling_pairs(), thorough=thorough)


# --- Remark C.4: APC's per-state regimes lift to g_agg's -----------------------------------


def regime_lift_pairs(t: int) -> list[Pair]:
    """A state (trajectory) of ``t`` tokens drifting together, ``Delta_a = x > 0`` for all:
    APC's gate (Def D.8) at radius ``delta`` is the identity for ``x <= delta``, rolls back
    (``0 < G < x``) for ``delta < x < t delta/(t-1)`` and zeroes beyond; ``g_agg(x, delta, t)``
    (eq 10) has the same three regimes with the zeroing edge at ``(1 + 1/t) delta``. So
    Remark C.4's lift is exact for pass-through and exact up to the edge of rollback, which
    moves from ``(1 + 1/(t-1)) delta`` to ``(1 + 1/t) delta`` (Derivation IV's rescaling)."""
    x, d = z3.Reals("x delta")
    counts = [1] * t
    g_apc = smt.apc_gate(counts, [x] * t, d)[0]
    g_fib = smt.g_agg(x, d, t)
    hyp = [d > 0, x > 0]
    sizes = f"T={t} tokens with equal drift x, symbolic x, delta"
    edge_apc, edge_fib = t * d / (t - 1), (1 + z3.Q(1, t)) * d
    both = z3.And(
        z3.Implies(x <= d, z3.And(g_apc == x, g_fib == x)),
        z3.Implies(z3.And(d < x, x < edge_fib), z3.And(0 < g_apc, g_apc < x, 0 < g_fib,
                                                        g_fib < x)),
        z3.Implies(z3.And(edge_fib <= x, x < edge_apc), z3.And(0 < g_apc, g_apc < x,
                                                                g_fib == 0)),
        z3.Implies(x >= edge_apc, z3.And(g_apc == 0, g_fib == 0)))
    return [Pair(claim("Remark C.4: APC's P/R/Z at a uniformly drifting state are g_agg's "
                       "pass-through/rollback/zeroed, zeroing edges t delta/(t-1) vs "
                       "(1 + 1/t) delta", sizes, hyp, both),
                 claim("APC zeroes from (1 + 1/t) delta on, like g_agg", sizes,
                       hyp + [x >= edge_fib], g_apc == 0))]


@certificate("V13", "Remark C.4, App E.5.2-E.5.4",
             "APC-Obj's per-state regimes lift to g_agg's three regimes for a uniformly "
             "drifting state; only the zeroing edge moves, t delta/(t-1) -> (1 + 1/t) delta "
             "(z3, fixed T)", "smt")
def check_regime_lift_smt(rng: np.random.Generator, *, thorough: bool = False) -> Outcome:
    pairs = []
    for t in ((2, 3, 4, 6, 8) if thorough else (2, 3, 4)):
        pairs += regime_lift_pairs(t)
    return smt.check_pairs(pairs, thorough=thorough)
