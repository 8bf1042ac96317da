"""Certificate V11: FiberPO's ratio-gating Jacobian (Prop 5.2, eq 20) and Properties 5.3-5.5.

``jacobian_eq20`` writes eq 20 term by term (local self-gating (a) and trajectory-mediated
coupling (b)); the certificate compares it with the autograd Jacobian ``dG(r)_i / dr_j`` of
the closed form (``gating.fiberpo_log_ratio``) and of the generic FBG (``bundles``), at points
away from every kink of the map: ``log r_i = 0``, ``|u_i| = eps``, ``|v_i| = eps``,
``log s = C`` and ``log s = C* = (1 + 1/T) C``. It then checks

* Property 5.3: ``dG_i/dr_j = 0`` exactly across trajectories;
* Property 5.4: the Jacobian is the identity at ``r = 1`` (and near it);
* Property 5.5: ``T_tau |(b)_ij| <= 1`` whenever no channel of the trajectory rolls back, with
  ``(b)`` read off the autograd Jacobian (``J_ij r_j / G_i`` minus the local term);
  in the rollback regime ``(b)`` is ``-(1 + O(1/T))``, not ``O(1/T)`` (measured, in ``detail``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from fibration_theory.proofs.cert_fbg import random_budgets, random_hierarchy
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory import gating
from fibration_theory.bundles import batch_strata, fiberpo_bundle, flatten_tokens, unflatten_tokens
from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor

# Entries of eq 20 are G_i / r_j times sums of O(1) terms; autograd and the formula round
# differently, so compare relative to 1 + |J|: 1e-12 is ~1e4 ulps, far below any real term (>= 1/T).
JACOBIAN_RTOL = 1e-12
# Distance to a kink below which a draw is rejected: the derivative is then one-sided.
KINK_MARGIN = 1e-7


@dataclasses.dataclass(frozen=True)
class Eq20Terms:
    """Pieces of eq 20 for flat valid tokens ``[n_x]`` (trajectory of each: ``traj [n_x]``)."""

    log_g: Tensor      # [n_x] log G(r)_i (eq 7 / 16)
    sign: Tensor       # [n_x] l_i
    u: Tensor          # [n_x] fiber residual, eq 14
    v: Tensor          # [n_x] opposite-sign aggregate, eq 15
    s_plus: Tensor     # [n_traj] log s+, eq 9
    s_minus: Tensor    # [n_traj] log s-
    gamma: Tensor      # [n_traj, 2] g_agg' at (log s+, log s-): 1, -T or 0
    traj: Tensor       # [n_x]
    length: Tensor     # [n_traj] T_tau


def eq20_terms(x: Tensor, traj: Tensor, length: Tensor, c_plus: float, c_minus: float,
               eps: float, zero_sign: int = 1) -> Eq20Terms:
    """Everything eq 20 needs, from flat log-ratios ``x [n_x]``. ``zero_sign`` is the label of a
    token with ``log r = 0`` (+1 is the toolkit's convention, F3)."""
    sign = torch.where(x > 0, 1.0, torch.where(x < 0, -1.0, float(zero_sign))).to(x.dtype)
    n_traj = int(length.numel())
    lt = length.to(x.dtype)
    pos_part = torch.where(sign > 0, x, torch.zeros_like(x))
    neg_part = torch.where(sign < 0, -x, torch.zeros_like(x))
    s_plus = torch.zeros(n_traj, dtype=x.dtype).index_add(0, traj, pos_part) / lt
    s_minus = torch.zeros(n_traj, dtype=x.dtype).index_add(0, traj, neg_part) / lt
    same = torch.where(sign > 0, s_plus[traj], s_minus[traj])
    other = torch.where(sign > 0, s_minus[traj], s_plus[traj])
    u = sign * x - same
    v = -other

    def gate_and_slope(s: Tensor, c: float) -> tuple[Tensor, Tensor]:
        star = (1 + 1 / lt) * c
        val = torch.where(s <= c, s, torch.where(s < star, (lt + 1) * c - lt * s,
                                                 torch.zeros_like(s)))
        slope = torch.where(s <= c, torch.ones_like(s), torch.where(s < star, -lt,
                                                                    torch.zeros_like(s)))
        return val, slope

    gp, dp = gate_and_slope(s_plus, c_plus)
    gm, dm = gate_and_slope(s_minus, c_minus)
    log_g = (gp - gm)[traj] + (sign * u).clamp(-eps, eps) - (sign * v).clamp(-eps, eps)
    return Eq20Terms(log_g, sign, u, v, s_plus, s_minus, torch.stack([dp, dm], 1), traj, length)


def jacobian_eq20(x: Tensor, traj: Tensor, length: Tensor, c_plus: float, c_minus: float,
                  eps: float, zero_sign: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Prop 5.2, eq 20: ``[n_x, n_x]`` ``dG(r)_i / dr_j`` and its parts ``(a)``, ``(b)``.

    ``J_ij = G_i / r_j [tj_i = tj_j] ( [|u_i|<=eps][i=j]
             + (1/T) (gamma^(l_j) - [|u_i|<=eps][l_i=l_j] - [|v_i|<=eps](1-[l_i=l_j])) )``.
    """
    t = eq20_terms(x, traj, length, c_plus, c_minus, eps, zero_sign)
    g = t.log_g.exp()
    r = x.exp()
    same_traj = (traj[:, None] == traj[None, :]).to(x.dtype)
    same_sign = (t.sign[:, None] == t.sign[None, :]).to(x.dtype)
    in_u = (t.u.abs() <= eps).to(x.dtype)[:, None]
    in_v = (t.v.abs() <= eps).to(x.dtype)[:, None]
    chan = torch.where(t.sign > 0, 0, 1)
    gamma_j = t.gamma[traj[:, None], chan[None, :]]  # gamma of token j's channel, in i's traj
    a = in_u * torch.eye(x.numel(), dtype=x.dtype)
    b = (gamma_j - in_u * same_sign - in_v * (1 - same_sign)) / length.to(x.dtype)[traj][:, None]
    scale = g[:, None] / r[None, :] * same_traj
    return scale * (a + b), a * same_traj, b * same_traj


def kink_distance(x: Tensor, traj: Tensor, length: Tensor, c_plus: float, c_minus: float,
                  eps: float) -> float:
    """Distance of ``x`` to the nearest kink of FiberPO's gating map (see module doc)."""
    t = eq20_terms(x, traj, length, c_plus, c_minus, eps)
    lt = length.to(x.dtype)
    d = [x.abs().min(), (t.u.abs() - eps).abs().min(), (t.v.abs() - eps).abs().min()]
    for s, c in ((t.s_plus, c_plus), (t.s_minus, c_minus)):
        d += [(s - c).abs().min(), (s - (1 + 1 / lt) * c).abs().min()]
    return float(torch.stack(d).min())


def flat_layout(h: Hierarchy) -> tuple[Tensor, Tensor]:
    """``(traj [n_x], T_tau [n_traj])`` of the valid tokens."""
    st = batch_strata(h, levels=False)
    return st.token_traj, torch.tensor(st.traj_len, dtype=torch.float64)


def autograd_jacobian(log_g_fn, x: Tensor, h: Hierarchy) -> Tensor:
    """``[n_x, n_x]`` ``dG_i / dr_j`` of ``log_g_fn(log_ratio [B, T], h) -> [B, T]`` at flat ``x``."""
    def ratio_map(r: Tensor) -> Tensor:
        return flatten_tokens(log_g_fn(unflatten_tokens(r.log(), h), h), h).exp()

    return torch.autograd.functional.jacobian(ratio_map, x.exp())


def draw_smooth_point(rng: np.random.Generator, h: Hierarchy, bud: dict,
                      tries: int = 200) -> Tensor | None:
    """Flat log-ratios at least ``KINK_MARGIN`` away from every kink (``None`` if none found)."""
    traj, length = flat_layout(h)
    n = int(traj.numel())
    for _ in range(tries):
        scale = rng.choice([0.01, 0.05, 0.15, 0.4])
        bias = rng.normal(size=int(length.numel()))[traj.numpy()] * scale
        x = torch.tensor(bias + scale * rng.normal(size=n))
        if rng.random() < 0.5:  # push one trajectory's positive channel into mid-rollback
            tau = int(rng.integers(0, int(length.numel())))
            pos = (traj == tau) & (x > 0)
            if bool(pos.any()):
                s_plus = float(x[pos].sum()) / float(length[tau])
                target = bud["c_plus"] * (1 + 0.5 / float(length[tau]))
                x = torch.where(pos, x * (target / s_plus), x)
        if kink_distance(x, traj, length, bud["c_plus"], bud["c_minus"], bud["eps"]) > KINK_MARGIN:
            return x
    return None


def _fbg_log_g(x: Tensor, h: Hierarchy, *, c_plus, c_minus, eps) -> Tensor:
    fbg = fiberpo_bundle(h, c_plus, c_minus, eps)
    return unflatten_tokens(fbg.log_ratio_map(flatten_tokens(x, h)), h)


@certificate(id="V11", paper_ref="Prop 5.2 eq 20, Properties 5.3-5.5",
             statement="eq 20 equals the autograd Jacobian away from kinks; block-diagonal over "
                       "trajectories; identity at r = 1; coupling term (b) is O(1/T) outside "
                       "rollback",
             method="property")
def check_jacobian(rng: np.random.Generator, *, closed_fn=None, jacobian_fn=None,
                   n_instances: int = 16, **_) -> Outcome:
    """Overrides: ``closed_fn(log_ratio, h, *, c_plus, c_minus, eps)`` replaces the closed form;
    ``jacobian_fn(x, traj, length, c_plus, c_minus, eps)`` replaces eq 20."""
    closed_fn = closed_fn or gating.fiberpo_log_ratio
    jacobian_fn = jacobian_fn or (lambda *a: jacobian_eq20(*a)[0])
    eq20_gap = cross = onpolicy = b_bound = 0.0
    b_rollback: list[float] = []
    compared = 0
    for _ in range(n_instances):
        h = random_hierarchy(rng, max_domains=2, max_len=6)
        bud = random_budgets(rng)
        x = draw_smooth_point(rng, h, bud)
        if x is None:
            continue
        traj, length = flat_layout(h)
        args = (x, traj, length, bud["c_plus"], bud["c_minus"], bud["eps"])
        ref = jacobian_fn(*args)
        jacs = []
        for fn in (closed_fn, _fbg_log_g):
            jac = autograd_jacobian(lambda y, hh, fn=fn, bud=bud: fn(y, hh, **bud), x, h)
            jacs.append(jac)
            eq20_gap = max(eq20_gap, float(((jac - ref).abs() / (1 + ref.abs())).max()))
            cross = max(cross, float(jac[traj[:, None] != traj[None, :]].abs().max())
                        if int(length.numel()) > 1 else 0.0)
        compared += 1
        # Property 5.5 from autograd, not from eq 20: d log G_i / d log r_j = J_ij r_j / G_i,
        # minus the local term (a)_ij = [|u_i| <= eps][i = j], is the coupling term (b); its
        # size times T outside and inside rollback (regimes from the aggregates of eq 9)
        terms = eq20_terms(*args)
        log_g = flatten_tokens(closed_fn(unflatten_tokens(x, h), h, **bud), h)
        bracket = jacs[0] * x.exp()[None, :] / log_g.exp()[:, None]
        local = torch.diag((terms.u.abs() <= bud["eps"]).to(x.dtype))
        b = (bracket - local) * (traj[:, None] == traj[None, :]).to(x.dtype)
        rolling = (terms.gamma < 0).any(1)[traj]
        tb = (b * length[traj][:, None]).abs().max(1).values
        if bool((~rolling).any()):
            b_bound = max(b_bound, float(tb[~rolling].max()))
        if bool(rolling.any()):
            b_rollback.append(float(b[rolling].abs().max()))
        # Property 5.4: identity exactly at r = 1 and in a small neighbourhood
        zero = torch.zeros_like(x)
        near = torch.tensor(rng.normal(size=x.numel())) * 1e-3 * min(bud["eps"], bud["c_plus"],
                                                                      bud["c_minus"])
        for pt in (zero, near):
            jac = autograd_jacobian(lambda y, hh, bud=bud: closed_fn(y, hh, **bud), pt, h)
            onpolicy = max(onpolicy, float((jac - torch.eye(x.numel())).abs().max()))
    if compared == 0:
        return Outcome(residual=float("inf"), tol=JACOBIAN_RTOL, ok=False,
                       detail="no draw avoided the kinks")
    excess = max(0.0, b_bound - 1.0)
    worst = max(eq20_gap, cross, onpolicy, excess)
    roll = (f"max |(b)| in rollback trajectories {max(b_rollback):.3f} (O(1), not O(1/T))"
            if b_rollback else "no rollback trajectory drawn")
    return Outcome(residual=worst, tol=JACOBIAN_RTOL,
                   detail=f"{compared} smooth points: eq 20 vs autograd (closed form and "
                          f"generic FBG) rel gap {eq20_gap:.2e}; cross-trajectory entries "
                          f"{cross:.1e}; |J - I| at and near r = 1 {onpolicy:.1e}; "
                          f"max T|(b)| outside rollback {b_bound:.3f} (<= 1; (b) read off the "
                          f"autograd Jacobian); {roll}")
