"""Certificate V14: the Fibration Gating Hierarchy at any depth (Defs 6.1-6.2, eqs 21-29).

Depth 1 is FBG (Remark 6.3); reflecting kernels compose; first-order agreement at any depth;
FiberPO-Domain is block-diagonal over domains. The random instances come from
:mod:`fibration_theory.proofs.cert_fbg`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import sympy as sp
import torch
from fibration_theory.proofs.cert_fbg import (
    NUMERIC_TOL,
    _sym_chain,
    _sym_compose,
    first_order_defect,
    random_budgets,
    random_generic_fgh,
    random_hierarchy,
    random_log_ratio,
    sym_first_order,
    sym_residual,
)
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory import gating
from fibration_theory.bundles import (
    batch_strata,
    fiberpo_bundle,
    fiberpo_domain_fgh,
    flatten_tokens,
    unflatten_tokens,
)
from fibration_theory.fgh import FGH, kernel_chain, push_chain
from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- V14
def sym_block_diagonal(rng: np.random.Generator, *, mixing: bool = False) -> tuple[int, int]:
    """App E.7 objects with *arbitrary* pointwise gates (sympy Functions), symbolic log-ratios:
    count the gated log-ratios that depend on a token of another domain (must be 0).

    Returns ``(violations, tokens)``. ``mixing=True`` makes the domain gate read the total of
    its stratum (a non-local gate), which must create violations.
    """
    h = random_hierarchy(rng, max_domains=2, max_groups=2, max_traj=2, max_len=2, empty_prob=0)
    st = batch_strata(h, levels=True)
    fibs = st.signed_fibrations()
    weights = st.exact_weights()
    n_x = st.n_tokens
    x = [sp.Symbol(f"x{i}", real=True) for i in range(n_x)]
    lens = [st.traj_len[t] for t in st.token_traj.tolist()]
    sigma = sp.Matrix([sp.Max(xi, 0) / t for xi, t in zip(x, lens)]
                      + [sp.Max(-xi, 0) / t for xi, t in zip(x, lens)])
    pushes = []
    kernels = []
    for fib, w in zip(fibs, weights):
        proj = fib.proj.tolist()
        pushes.append(sp.Matrix(fib.n_base, fib.n_total, lambda b, i, proj=proj: int(proj[i] == b)))
        k = sp.zeros(fib.n_total, fib.n_base)
        for i, (b, wi) in enumerate(zip(proj, w)):
            k[i, b] = sp.Rational(wi.numerator, wi.denominator)
        kernels.append(k)
    depth = len(fibs)
    ps = [sigma]
    for p in reversed(pushes):
        ps.append(p * ps[-1])
    ps = ps[::-1]
    acc = None
    for k in range(depth + 1):
        z = ps[0] if k == 0 else ps[k] - kernels[k - 1] * ps[k - 1]
        gk = [sp.Function(f"g{k}_{j}")(z[j] + (sum(z) if mixing and k == 0 else 0))
              for j in range(z.rows)]
        gz = sp.Matrix(gk)
        acc = gz if acc is None else kernels[k - 1] * acc + gz
    log_g = [lens[i] * (acc[i] - acc[n_x + i]) for i in range(n_x)]
    dom = st.node_of_traj[0][st.token_traj].tolist()
    violations = 0
    for i, e in enumerate(log_g):
        deps = {x.index(s) for s in e.free_symbols if s in x}
        violations += sum(1 for j in deps if dom[j] != dom[i])
    return violations, n_x


def cross_domain_jacobian(fn, x: Tensor, h: Hierarchy) -> float:
    """``max |d log G_i / d log r_j|`` over valid tokens ``i, j`` of different domains."""
    flat = flatten_tokens(x, h)
    jac = torch.autograd.functional.jacobian(
        lambda f: flatten_tokens(fn(unflatten_tokens(f, h, 0.0), h), h), flat)
    rows = h.mask.nonzero()[:, 0]
    dom = h.level("domain").ids[rows]
    cross = dom[:, None] != dom[None, :]
    return float(jac[cross].abs().max()) if bool(cross.any()) else 0.0


@certificate(id="V14", paper_ref="Defs 6.1-6.2, eqs 21-29, Remark 6.3, App E.7",
             statement="FGH: depth 1 is FBG; reflecting kernels compose; eq 26 = eq 27; "
                       "first-order agreement at any depth; FiberPO-Domain block-diagonal "
                       "over domains",
             method="symbolic")
def check_fgh(rng: np.random.Generator, *, slope: float = 1.0, gate_mixing: bool = False,
              closed_fgh=None, **_) -> Outcome:
    """Overrides: ``slope`` breaks the identity conditions at every level; ``gate_mixing``
    uses a non-local domain gate; ``closed_fgh`` replaces ``gating.fiberpo_domain_log_ratio``."""
    closed_fgh = closed_fgh or gating.fiberpo_domain_log_ratio
    parts = {}
    # (a) Remark 6.3: FGH of depth 1 = FBG, generic and for FiberPO's objects
    gap = 0.0
    for _ in range(5):
        inst = random_generic_fgh(rng, 1)
        fbg = inst.fgh.to_fbg()
        sig = inst.sigma0 + torch.tensor(rng.normal(size=inst.sigma0.numel()))
        gap = max(gap, float((FGH.from_fbg(fbg).gate(sig) - fbg.gate(sig)).abs().max()))
        h = random_hierarchy(rng)
        h0 = Hierarchy.from_padded(h.mask)
        x = random_log_ratio(rng, h0)
        bud = random_budgets(rng)
        flat = flatten_tokens(x, h0)
        a = fiberpo_domain_fgh(h0, bud["c_plus"], bud["c_minus"], bud["eps"])
        b = fiberpo_bundle(h0, bud["c_plus"], bud["c_minus"], bud["eps"])
        gap = max(gap, float((a.log_ratio_map(flat) - b.log_ratio_map(flat)).abs().max()))
    parts["n=1 vs FBG"] = gap
    # (b) composition: pi_{k<-m,*} K_{m<-k} = id exactly on a symbolic chain; eq 26 = eq 27
    fibs, pushes, kernels = _sym_chain(rng, 3, "comp")
    sizes = [fibs[0].n_base] + [f.n_total for f in fibs]
    comp_bad = 0
    for k in range(3):
        for m in range(k + 1, 4):
            kk = _sym_compose(kernels[k:m], sizes[k])
            pp = _sym_compose(pushes[k:m][::-1], sizes[m])
            comp_bad += sum(1 for e in (pp * kk - sp.eye(sizes[k])).applyfunc(sp.expand) if e != 0)
    parts["composition (nonzero entries)"] = float(comp_bad)
    gap = 0.0
    for depth in (1, 2, 3, 4):
        inst = random_generic_fgh(rng, depth)
        sig = inst.sigma0 + torch.tensor(rng.normal(size=inst.sigma0.numel()))
        gap = max(gap, float((inst.fgh.gate(sig) - inst.fgh.gate_eq26(sig)).abs().max()))
        reflect = max(float((push_chain(inst.fgh.fibrations, k, depth)
                             @ kernel_chain(inst.fgh.kernels, depth, k)
                             - torch.eye(inst.fgh.sizes[k])).abs().max()) for k in range(depth))
        gap = max(gap, reflect)
    parts["eq26 vs eq27, float composition"] = gap
    # (c) first-order agreement at depth 1..3 (sympy) and 1..4 (autograd)
    sym = []
    for depth in (2, 3):
        v, j, _ = sym_first_order(rng, depth, slope=sp.nsimplify(slope), tag=f"d{depth}")
        sym += [v, j]
    parts["first order (sympy)"] = sym_residual(sym, rng)
    num = 0.0
    for depth in (1, 2, 3, 4):
        inst = random_generic_fgh(rng, depth, slope=slope)
        num = max(num, first_order_defect(inst.fgh, inst.n_x, rng))
    parts["first order (autograd)"] = num
    # (d) FiberPO-Domain block-diagonal over domains
    viol, n_tok = sym_block_diagonal(rng, mixing=gate_mixing)
    parts["block-diagonal (sympy violations)"] = float(viol)
    cross = 0.0
    for _ in range(4):
        h = random_hierarchy(rng, max_len=4)
        x = random_log_ratio(rng, h)
        bud = random_budgets(rng)
        cross = max(cross, cross_domain_jacobian(
            lambda y, hh, bud=bud: closed_fgh(y, hh, **bud), x, h))
        fgh = fiberpo_domain_fgh(h, bud["c_plus"], bud["c_minus"], bud["eps"])
        if gate_mixing:
            g0 = fgh.gates[0]
            fgh = dataclasses.replace(fgh, gates=(lambda z, c=(), g0=g0: g0(z + 1e-3 * z.sum(-1,
                                                  keepdim=True), c),) + fgh.gates[1:])
        cross = max(cross, cross_domain_jacobian(
            lambda y, hh, f=fgh: unflatten_tokens(f.log_ratio_map(flatten_tokens(y, hh)), hh),
            x, h))
    parts["block-diagonal (autograd cross-domain)"] = cross
    worst = max(parts.values())
    return Outcome(residual=worst, tol=NUMERIC_TOL,
                   detail="; ".join(f"{k}: {v:.2e}" for k, v in parts.items())
                   + f" (sympy block check on {n_tok} tokens with generic pointwise gates)")
