"""Where an update's policy gradient comes from: exact shares of a gated objective's terms.

For an objective ``J = sum_i mu_i G(r)_i A_i`` of the log-ratios ``x`` (``[B, T]``), the
policy gradient is ``g = sum_j c_j grad_theta x_j`` with the per-token coefficients
``c_j = dJ/dx_j = sum_i mu_i A_i G_i d log G_i / d x_j``. For FiberPO's gate
(``log G_i = log w_tau + log r~_fiber_i``, eqs 7-16, 31) each ``x_j`` enters ``log G``
along separate paths: through each level's and sign channel's aggregate into ``g_agg``
(eq 10), and through the fiber residual. Evaluating each path on its own copy of ``x``
(same values, separate autograd leaves) splits ``c`` exactly, by the chain rule, into

* ``rollback``: the paths through a ``g_agg`` channel in its rollback regime (eq 10's
  restorative slope ``-k``), from every token of the node;
* ``coupling``: the paths through a ``g_agg`` channel in pass-through, from tokens whose
  fiber residual is clipped (``|u_i| >= eps``, eq 14): the base gate's ``1/T`` coupling
  through which a clipped token still moves every token of its trajectory;
* the rest (each token's own, unclipped term, the fiber residual's couplings, and the
  pass-through base of unclipped tokens, which cancels against the residual's).

``fiberpo_clamp`` is split the same way (its base ``clamp(mean x, delta)`` on its own leaf;
it has no rollback). Independently, ``zeroed_traj`` is ``c`` restricted to the trajectories
whose base gate passes no gradient in some channel (FiberPO's zeroed regime, a hard clip
beyond its budget, the plugin's clamped mean).

Each part ``c_X`` maps to a parameter gradient ``g_X = J_theta^T c_X`` (one backward pass of
the log-probabilities per part). The recorded share is the projection
``<g_X, g> / ||g||^2`` (signed; the shares of a partition of ``c`` sum to 1, so it is the
part's share of the squared gradient norm along ``g``; negative when the part opposes the
rest), and ``grad/<X>_norm`` is ``||g_X|| / ||g||``. ``grad/zeroed_token_frac`` is the
fraction of tokens with a nonzero advantage whose coefficient is below ``1e-6`` of its
ungated value (``|c_j| <= 1e-6 |mu_j A_j|``): for GRPO exactly its clipped tokens.
``grad/cos_ungated`` and ``grad/cos_grpo`` are the cosines of ``g`` with the ungated gradient
(``c = mu A``, the on-policy one) and with GRPO's at the same log-ratios: how far the gates
turn the update. A step without any gradient (every advantage 0) records none of these
(they are averaged over the steps that have one). Objectives
without a base gate (GRPO, GSPO, ...) have no rollback, coupling or zeroed-trajectory part:
their shares are 0.
"""

from __future__ import annotations

from typing import Any

import torch

from fibration_theory import aggregation, losses
from fibration_theory import fiberpo as fp
from fibration_theory.fiberpo import closed
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.losses.fiberpo_clamp import clamp_gate

Tensor = torch.Tensor

#: the objectives whose gate is FiberPO's (closed form of :mod:`fibration_theory.fiberpo`)
FIBER_GATES = ("fiberpo", "fiberpo_domain", "fiberpo_slope", "fiberpo_hard")
#: the parts recorded (``grad/<part>_share``, ``grad/<part>_norm``)
PARTS = ("rollback", "coupling", "zeroed_traj")
#: a token's gradient counts as zeroed below this fraction of its ungated coefficient
ZERO_RTOL = 1e-6


def _plan(name: str, h: Hierarchy, params: dict[str, Any]) -> fp.GatePlan:
    """The gate plan ``name`` builds from ``params`` (the objective's own defaults else)."""
    p = {**losses.parameters(name), **params}
    slope = {"fiberpo_slope": p.get("slope", 1.0), "fiberpo_hard": 0.0}.get(name, 1.0)
    return fp.gate_plan(h, c_plus=p["c_plus"], c_minus=p["c_minus"], eps=p["eps"],
                        levels=name == "fiberpo_domain", delta=p.get("delta"), slope=slope)


def _leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


def _or_zero(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def _grad(out: Tensor, leaf: Tensor, keep: bool = False) -> Tensor:
    if not out.requires_grad:
        return torch.zeros_like(leaf)
    (g,) = torch.autograd.grad(out, leaf, allow_unused=True, retain_graph=keep)
    return _or_zero(g, leaf)


def _fiber_parts(x: Tensor, weight: Tensor, h: Hierarchy, plan: fp.GatePlan,
                 with_base: bool = False) -> dict[str, Tensor]:
    """``[B, T]`` parts of ``c`` for FiberPO's gate; ``weight = sg(mu A G)``. ``with_base``
    adds the whole base path (``base``) and the fiber path (``fiber``): ``c = base + fiber``
    (what the tests check)."""
    mask = h.mask
    row_w = h.row_sum(weight)
    with torch.no_grad():
        _, u, _ = closed.fiber_log_residual(x, *closed._aggregates(x, h, 0)[-1], plan.eps)
        clipped = (u.abs() >= plan.eps) & mask
    row_wclip = h.row_sum(torch.where(clipped, weight, torch.zeros_like(weight)))
    counts = plan.counts()
    with torch.no_grad():
        _, channels = closed._level_gates(closed.drifts(closed._aggregates(x, h, plan.depth)),
                                          counts, plan.c_plus, plan.c_minus, plan.slope)
    rollback = torch.zeros_like(x)
    coupling = torch.zeros_like(x)
    base = torch.zeros_like(x)
    no_grad_rows = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    zero = torch.zeros_like(row_w)
    for k in range(plan.depth + 1):
        for ch in (0, 1):
            regime = channels[k][ch]
            no_grad_rows |= (regime == 2) | ((regime == 1) & (plan.slope == 0))
            rb = torch.where(regime == 1, row_w, zero)
            cp = torch.where(regime == 0, row_wclip, zero)
            if not (with_base or bool(rb.ne(0).any()) or bool(cp.ne(0).any())):
                continue  # no gradient of interest along this path: skip its pass
            leaf = _leaf(x)
            drift = closed.drifts(closed._aggregates(leaf, h, plan.depth))
            # only level k, channel ch reads the leaf; every other drift is a constant
            path = [(p if (j, 0) == (k, ch) else p.detach(), m if (j, 1) == (k, ch) else
                     m.detach()) for j, (p, m) in enumerate(drift)]
            log_w, _ = closed._level_gates(path, counts, plan.c_plus, plan.c_minus, plan.slope)
            rollback = rollback + _grad((rb * log_w).sum(), leaf, keep=True)
            coupling = coupling + _grad((cp * log_w).sum(), leaf, keep=with_base)
            if with_base:
                base = base + _grad((row_w * log_w).sum(), leaf)
    out = {"rollback": rollback, "coupling": coupling, "_rows": no_grad_rows}
    if not with_base:
        return out
    own, agg = _leaf(x), _leaf(x)
    fiber, _, _ = closed.fiber_log_residual(own, *closed._aggregates(agg, h, 0)[-1], plan.eps)
    g_own, g_agg = torch.autograd.grad((weight * fiber).sum(), [own, agg], allow_unused=True)
    fiber_g = _or_zero(g_own, x) + _or_zero(g_agg, x)
    return out | {"base": base, "fiber": fiber_g}


def _clamp_parts(x: Tensor, weight: Tensor, h: Hierarchy, params: dict[str, Any]
                 ) -> dict[str, Tensor]:
    """``[B, T]`` parts of ``c`` for ``fiberpo_clamp``; ``weight = sg(mu A G)``."""
    p = {**losses.parameters("fiberpo_clamp"), **params}
    own, base_leaf = _leaf(x), _leaf(x)
    gated, clamped, clipped = clamp_gate(own, h.mask, h.lengths, float(p["delta"]),
                                         float(p["eps"]), base_input=base_leaf)
    log_g = gated.log()
    zero = torch.zeros_like(weight)
    coupling = _grad(torch.where(clipped, weight, zero).mul(log_g).sum(), base_leaf)
    return {"rollback": torch.zeros_like(x), "coupling": coupling, "_rows": clamped}


def coefficients(name: str, log_ratio: Tensor, advantages: Tensor, h: Hierarchy,
                 params: dict[str, Any], state_ids: Tensor | None = None,
                 with_base: bool = False) -> dict[str, Tensor]:
    """``[B, T]`` per-token coefficients ``c = dJ/dx`` of objective ``name`` at the log-ratios
    ``log_ratio`` and its parts (see the module docstring): keys ``total``, ``rollback``,
    ``coupling``, ``zeroed_traj``, ``ungated`` (``mu A``: GRPO's on-policy coefficient), and
    for FiberPO's gate with ``with_base`` the paths ``base`` and ``fiber`` (their sum is
    ``total``)."""
    x = torch.where(h.mask, log_ratio.detach(), torch.zeros((), dtype=log_ratio.dtype,
                                                            device=log_ratio.device))
    advantages = advantages.detach().to(x.dtype)
    leaf = _leaf(x)
    extra = {"state_ids": state_ids} if state_ids is not None else {}
    out = losses.compute(name, leaf, torch.zeros_like(x), advantages.detach(), h.mask,
                         hierarchy=h, metrics=False, **params, **extra)
    total = _grad(-out.loss, leaf)
    rgf = out.rgf
    weight = (rgf.weights * rgf.gated_ratio * rgf.advantages).detach()
    ungated = aggregation.weights(h, params.get("agg", losses.parameters(name).get(
        "agg", "seq-mean-token-mean")), x.dtype) * advantages.detach()
    zero = torch.zeros_like(x)
    res = {"total": total, "ungated": ungated, "rollback": zero, "coupling": zero,
           "zeroed_traj": zero}
    if name in FIBER_GATES or name == "fiberpo_clamp":
        parts = (_fiber_parts(x, weight, h, _plan(name, h, params), with_base)
                 if name in FIBER_GATES
                 else _clamp_parts(x, weight, h, params))
        rows = parts.pop("_rows")
        res.update(parts)
        res["zeroed_traj"] = torch.where(rows[:, None] & h.mask, total, zero)
    return res


def zeroed_token_frac(coef: dict[str, Tensor], mask: Tensor) -> float | None:
    """Fraction of tokens with ``A != 0`` whose coefficient is below ``ZERO_RTOL`` of
    ``|mu A|``; ``None`` when no token has ``A != 0``."""
    live = mask & (coef["ungated"] != 0)
    n = int(live.sum())
    if n == 0:
        return None
    dead = live & (coef["total"].abs() <= ZERO_RTOL * coef["ungated"].abs())
    return float(dead.sum()) / n


def _with_zeroed(out: dict[str, float], coef: dict[str, Tensor], mask: Tensor
                 ) -> dict[str, float]:
    frac = zeroed_token_frac(coef, mask)
    return out if frac is None else out | {"grad/zeroed_token_frac": frac}


def shares(coef: dict[str, Tensor], log_probs: Tensor, params: list[Tensor]
           ) -> dict[str, float]:
    """``grad/<part>_share`` and ``grad/<part>_norm`` of :data:`PARTS` in parameter space,
    and ``grad/cos_ungated`` (and ``grad/cos_grpo`` when ``coef`` holds ``grpo``).

    ``log_probs``: ``[B, T]`` the differentiable log-probabilities the log-ratios came from
    (its graph is kept); ``params``: the trained tensors. One backward pass per part.
    """
    def pull(c: Tensor) -> Tensor:
        gs = torch.autograd.grad(log_probs, params, grad_outputs=c.to(log_probs.dtype),
                                 retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).to(
            torch.float64) for g, p in zip(gs, params)])

    g = pull(coef["total"])
    g2 = float(g @ g)
    out: dict[str, float] = {}
    if g2 == 0.0:
        return out  # no gradient (every advantage 0): nothing to share out
    for key, ref in (("ungated", coef["ungated"]), ("grpo", coef.get("grpo"))):
        if ref is None:
            continue
        gr = pull(ref)
        den = (g2 * float(gr @ gr)) ** 0.5
        out[f"grad/cos_{key}"] = float(g @ gr) / den if den > 0 else 0.0
    for part in PARTS:
        if not bool(coef[part].ne(0).any()):
            out[f"grad/{part}_share"] = 0.0
            out[f"grad/{part}_norm"] = 0.0
            continue
        gx = pull(coef[part])
        out[f"grad/{part}_share"] = float(gx @ g) / g2
        out[f"grad/{part}_norm"] = float(gx.norm()) / g2 ** 0.5
    return out


def coefficient_metrics(coef: dict[str, Tensor], mask: Tensor) -> dict[str, float]:
    """The cheap form for large models (no extra backward pass through the model):
    ``grad/<part>_coef_share = <c_X, c> / ||c||^2`` in the token-coefficient space (what the
    parameter-space share is when the log-probabilities' Jacobian is orthonormal) and
    ``grad/zeroed_token_frac``."""
    c = coef["total"].double()
    c2 = float((c * c).sum())
    out = {} if c2 == 0 else {f"grad/{part}_coef_share": float((coef[part].double() * c).sum())
                              / c2 for part in PARTS}
    return _with_zeroed(out, coef, mask)


def update_metrics(name: str, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
                   h: Hierarchy, params: dict[str, Any], trained: list[Tensor],
                   state_ids: Tensor | None = None) -> dict[str, float]:
    """The ``grad/*`` metrics of one update (see the module docstring): ``log_probs``
    ``[B, T]`` differentiable in ``trained``; its graph is kept."""
    x = log_probs.detach() - old_log_probs.detach()
    coef = coefficients(name, x, advantages, h, params, state_ids)
    coef["grpo"] = coefficients("grpo", x, advantages, h, {})["total"]
    return _with_zeroed(shares(coef, log_probs, trained), coef, h.mask)
