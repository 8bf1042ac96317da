"""Fast path of FiberPO's gate over any depth: one custom autograd Function.

The reference is the closed form of :mod:`fibration_theory.fiberpo.closed` (eqs 7-18,
31-33); this module computes the same ``[B, T]`` gated ratio ``G(r)`` and the same gradient,
to float64 rounding, in about 20 cheap passes over the tokens forward (27 with the regime
counts) and 15 backward, where the closed form runs ~25 token-sized operations (many of them
``torch.where``) forward and autograd about as many backward. The regime decisions are the
same: the row sums are the same reductions, so aggregates and clip tests agree bit for bit.
``tests/test_fiberpo_fast.py`` checks the agreement; ``docs/performance.md`` gives the speed.

Why it is cheap (eq 20, Prop 5.2): the Jacobian of ``log G`` is a diagonal term plus, inside
each trajectory, a term that depends on token ``j`` only through its sign ``l_j``. So with
``g = dL/dG * G`` the backward is

    dL/dx_j = g_j [|u_j| <= eps] + (l_j >= 0 ? a_tau : b_tau) / T_tau          (1)

where the two per-row numbers ``a_tau = dL/dlog s+``, ``b_tau = -dL/dlog s-`` need four row
sums (``sum g`` and ``sum g [|u| <= eps]`` per sign channel, and their total) and the
``[B]``-sized chain of the base gates of every level (eqs 8, 31): the row sums are computed
once and shared by all levels, and the levels are reduced together by one segmented sum
(``index_add``) over stacked node ids, so no Python loop runs over rows, groups or domains.

Contract of :class:`FiberGate`: ``x`` is ``0`` outside the mask (what ``losses.compute`` and
``closed.masked`` produce) and the gradient it returns is meaningful inside the mask only
(the caller's ``torch.where`` zeroes the rest, as in the closed form). It is
once-differentiable: for double backward use the closed form
(``with fiberpo.fast_path(False):``). Data-parallel hierarchies (a non-identity
``allreduce``) and functorch transforms take the closed form (:func:`supported`).

Kernels: on this CPU build ``torch.where`` costs ~20x an arithmetic pass (3.5 ms against
0.17 ms for 10^6 float32 on one thread) and bool-producing comparisons 2-3x, so the eager
kernels select with ``lerp`` by a 0/1 float (exact at weights 0 and 1), make steps from
``sign``, and reuse their buffers (each fresh ``[B, T]`` tensor costs page faults).
``compiled=True`` swaps in ``torch.compile``d kernels that recompute everything from ``x``
in the backward (less memory, one fused loop per kernel).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from fibration_theory import hierarchy as _hier
from fibration_theory.fiberpo.plan import GatePlan
from fibration_theory.fiberpo.stats import Regimes
from fibration_theory.hierarchy import Hierarchy

__all__ = ["FiberGate", "fiber_gate", "supported"]

Tensor = torch.Tensor
# ---------------------------------------------------------------------------- per-row part
_CONSTS: dict[tuple, object] = {}  # cached small constants (budgets, scalars)


class _Plan(NamedTuple):
    """``[B]``-sized data of the chain of levels, coarse to fine, trajectory last (``L``).

    ``ids``: ``[depth * B]`` node ids of every upper level, offset so that all levels share
    one index space of ``num_nodes`` nodes; ``num_traj``: ``[depth * B, 1]`` ``|Tj(node)|``
    of each row's node at every upper level, clamped to 1; ``counts``: ``[L, B, 1]`` (``[B, 1]``
    at depth 0) token counts ``k = T_D, ..., T_tau`` of each row's node, clamped to 1 (the ``k`` of
    ``g_agg``); ``budgets``: ``[L, 1, 2]`` ``c = (C+, C-)``; ``edge``: ``(1 + 1/k) c``,
    ``roll``: ``(k + 1) c`` and ``neg_k``: ``-k``, the constants of eq 10 (the expressions of
    ``regimes.channel_regime`` and ``closed.g_agg``, so the same bits); ``lengths``:
    ``[B, 1]`` ``T_tau`` clamped to 1, in the ratio dtype.
    """

    depth: int
    ids: Tensor | None
    num_nodes: int
    num_traj: Tensor | None
    counts: Tensor
    budgets: Tensor
    edge: Tensor
    roll: Tensor
    neg_k: Tensor
    lengths: Tensor
    raw_lengths: Tensor
    names: tuple[str, ...]


class _Rows(NamedTuple):
    """Per-row results of the forward. ``pm``: ``[B, 2]`` ``(log s+, log s-)`` (eq 9);
    ``passing`` / ``rolling``: ``[L, B, 2]`` bool channel regimes P / R of ``g_agg`` per level
    (``regimes.channel_regime``); ``gamma``: ``[L, B, 2]`` slopes of ``g_agg`` (eq 20's
    ``gamma^(l)``, per level: 1, ``-k`` or 0); ``log_w``: ``[B]`` (eqs 8, 31); ``delta``:
    ``[L, B, 2]`` the drifts the base gates take (eq 31)."""

    pm: Tensor
    passing: Tensor
    rolling: Tensor
    gamma: Tensor
    log_w: Tensor
    delta: Tensor


def _scalars(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``([1, -1], 0, 1)`` in ``dtype`` on ``device`` (cached: a Python scalar in
    ``torch.where`` costs one more op per call)."""
    key = ("scalars", dtype, device)
    if key not in _CONSTS:
        _CONSTS[key] = (torch.tensor([1.0, -1.0], dtype=dtype, device=device),
                        torch.zeros((), dtype=dtype, device=device),
                        torch.ones((), dtype=dtype, device=device))
    return _CONSTS[key]


def _node_gather(plan: _Plan, rows: Tensor) -> Tensor:
    """``[B, 2] -> [depth, B, 2]``: each row's node mean at every upper level (eq 33), the
    mean over valid trajectories; all levels in one ``index_add``."""
    # an empty row has s+- = 0/1 = 0, so it adds nothing (the closed form.s where(valid) is a no-op);
    # each node gets its rows in row order, as in hierarchy.node_mean: the same sums
    tot = rows.new_zeros(plan.num_nodes, 2).index_add_(0, plan.ids, rows.repeat(plan.depth, 1))
    return tot[plan.ids].div_(plan.num_traj).view(plan.depth, -1, 2)


def _node_scatter(plan: _Plan, coef: Tensor) -> Tensor:
    """Adjoint of :func:`_node_gather`: ``[depth, B, 2] -> [B, 2]`` summed over levels.
    Empty rows get a value too; it only reaches their padding, which the caller masks."""
    src = coef.reshape(-1, 2) / plan.num_traj
    tot = coef.new_zeros(plan.num_nodes, 2).index_add_(0, plan.ids, src)
    return tot[plan.ids].view(plan.depth, -1, 2).sum(0)


def _base(plan: _Plan, sums: Tensor) -> _Rows:
    """The base gate of every level and both channels in one batched pass from the ``[B, 2]``
    row sums (eqs 8-10, 31, 33)."""
    pm = sums / plan.lengths
    sgn, zero, one = _scalars(pm.dtype, pm.device)
    if plan.depth:
        node = _node_gather(plan, pm)
        delta = torch.cat([node, pm[None]])
        delta[1:].sub_(node)  # drift from the level above; the coarsest level's is its aggregate
    else:
        delta = pm[None]
    # the branches of regimes.channel_regime and closed.g_agg (eq 10), same expressions
    a = delta.abs()
    passing = a <= plan.budgets
    rolling = torch.gt(a < plan.edge, passing)  # (a < edge) & ~passing
    rollback = torch.sign(delta).mul_(plan.roll).sub_(plan.counts * delta)
    g = torch.where(passing, delta, torch.where(rolling, rollback, zero))
    gamma = torch.where(passing, one, torch.where(rolling, plan.neg_k, zero))
    if plan.depth:  # left to right per row, ((g+_0 - g-_0) + g+_1) - g-_1 ..., as
        # closed.base_log_weight accumulates (x + (-y) = x - y exactly)
        log_w = g.mul_(sgn).transpose(0, 1).reshape(pm.shape[0], -1).cumsum(1)[:, -1]
    else:
        log_w = torch.sub(*g[0].unbind(1))
    return _Rows(pm, passing, rolling, gamma, log_w, delta)


def _row_grads(plan: _Plan, rows: _Rows, eps: float, s_all: Tensor, s_g: Tensor,
               s_gu: Tensor) -> Tensor:
    """``[B, 2]`` per-row coefficients ``(a, b)`` of (1), divided by ``T_tau``.

    ``s_all``: ``[B]`` ``sum g``; ``s_g``: ``[B, 2]`` ``sum g`` over the ``l = -`` and the
    ``l = +`` tokens of each row (that order); ``s_gu``: ``[B, 2]`` ``sum g [|u| <= eps]``
    over the ``l = +`` and the ``l = -`` tokens.
    """
    _, zero, _ = _scalars(s_all.dtype, s_all.device)
    # d log_w / d s_k = gamma_k - gamma_{k+1} (eq 31 telescopes), sign -1 on the minus
    # channel; that sign cancels against the one of (a, -b) below, so neither is applied
    gam = rows.gamma
    if plan.depth:
        dg = gam.clone()
        dg[:-1].sub_(gam[1:])
        coef = dg.mul_(s_all[:, None])
        d = coef[-1] + _node_scatter(plan, coef[:-1])
    else:
        d = gam[0] * s_all[:, None]
    # fiber residual (eqs 11-16): -clip(-s-) for l = +, -clip(s+) for l = -; torch's clamp
    # passes the gradient at |.| <= eps
    return d.sub_(s_gu).sub_(torch.where(rows.pm <= eps, s_g, zero)).div_(plan.lengths)


# ---------------------------------------------------------------------------- token kernels
def _eager_row_sums(x: Tensor) -> Tensor:
    """``[B, 2]`` ``(T_tau log s+, T_tau log s-)`` per row (eq 9), summed as the closed form does."""
    xp = x.clamp_min(0)
    psum = xp.sum(1)
    return torch.stack([psum, xp.sub_(x).sum(1)], 1)  # max(x, 0) - x = max(-x, 0), exact


def _step(t: Tensor) -> Tensor:
    """``[t >= 0]`` as 0/1 floats: ``min(sign t + 1, 1)``, exact (``sign(0) = 0``)."""
    return torch.sign(t).add_(1).clamp_max_(1)


def _eager_tokens(x: Tensor, spm: Tensor, off: Tensor, eps: float, stats: bool):
    """``G [B, T]``, the saved ``(l_i = +, [|u_i| <= eps])`` as 0/1 floats, and the three
    ``[B]`` row counts of the metrics (or ``None``); ``spm``: ``[B, 2]`` ``(s+, -s-)``."""
    posf = _step(x)  # l_i = +1 iff x >= 0 (sign(0) = +1, F3)
    # l_i u_i = x - s+ (l = +), x + s- (l = -): lerp selects exactly at weights 0 and 1
    shift = torch.lerp(spm[:, 1:], spm[:, :1], posf)
    lu = torch.sub(x, shift, out=shift)
    d = lu.abs().neg_().add_(eps)  # eps - |u|
    iuf = _step(d)  # [|u| <= eps], where clamp passes the gradient
    counts = None
    if stats:
        ce = d.neg_().sign_().add_(1).clamp_max_(1)  # [|u| >= eps], the metrics' fiber clip
        counts = (ce.sum(1), ce.mul_(posf).sum(1), posf.sum(1))
    # log G = clip(l u) + (log_w - clip(l v)) (eqs 7, 11-16); buffers reused: on CPU every
    # fresh [B, T] tensor costs its page faults
    g = lu.clamp_(-eps, eps).add_(torch.lerp(off[:, :1], off[:, 1:], posf, out=d)).exp_()
    return g, (posf, iuf), counts


def _eager_grad_sums(grad: Tensor, g_out: Tensor, posf: Tensor, iuf: Tensor):
    """Row sums of (1) (``sum g`` per sign in the order ``-, +``) and two work buffers:
    ``gu = g [|u| <= eps]`` and a spare."""
    g = grad * g_out  # dL/dlog G
    t = g * posf
    s_all, s_pos = g.sum(1), t.sum(1)
    s_neg = t.neg_().add_(g).sum(1)  # g - g [l = +] = g [l = -], exact
    gu = g.mul_(iuf)
    torch.mul(gu, posf, out=t)
    u_pos = t.sum(1)
    u_neg = t.neg_().add_(gu).sum(1)
    return s_all, torch.stack([s_neg, s_pos], 1), torch.stack([u_pos, u_neg], 1), gu, t


# the same kernels as plain expressions, for torch.compile to fuse (they recompute from x)
def _c_row_sums(x: Tensor) -> Tensor:
    xp = x.clamp_min(0)
    return torch.stack([xp.sum(1), (xp - x).sum(1)], 1)


def _c_lu(x: Tensor, pm: Tensor) -> tuple[Tensor, Tensor]:
    pos = x >= 0
    return pos, x - torch.where(pos, pm[:, :1], -pm[:, 1:])


def _c_tokens(x: Tensor, pm: Tensor, off: Tensor, eps: float):
    pos, lu = _c_lu(x, pm)
    ce = (lu.abs() >= eps).to(x.dtype)
    posf = pos.to(x.dtype)
    g = (lu.clamp(-eps, eps) + torch.where(pos, off[:, 1:], off[:, :1])).exp()
    return g, torch.stack([ce.sum(1), (ce * posf).sum(1), posf.sum(1)], 1)


def _c_grad_sums(grad: Tensor, g_out: Tensor, x: Tensor, pm: Tensor, eps: float):
    pos, lu = _c_lu(x, pm)
    g = grad * g_out
    gu = torch.where(lu.abs() <= eps, g, 0.0)
    return (g.sum(1),
            torch.stack([torch.where(pos, 0.0, g).sum(1), torch.where(pos, g, 0.0).sum(1)], 1),
            torch.stack([torch.where(pos, gu, 0.0).sum(1), torch.where(pos, 0.0, gu).sum(1)], 1))


def _c_grad_tokens(grad: Tensor, g_out: Tensor, x: Tensor, pm: Tensor, eps: float,
                   ab: Tensor) -> Tensor:
    pos, lu = _c_lu(x, pm)
    gu = torch.where(lu.abs() <= eps, grad * g_out, 0.0)
    return gu + torch.where(pos, ab[:, :1], ab[:, 1:])


_COMPILED: dict[str, object] = {}


def _compiled(name: str):
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(globals()[name], dynamic=True)
    return _COMPILED[name]


# ---------------------------------------------------------------------------- the Function
class FiberGate(torch.autograd.Function):
    """``x [B, T] -> G(r) [B, T]`` with the backward (1); see the module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, plan: _Plan, eps: float, compiled: bool, sink: dict | None):
        sums = _compiled("_c_row_sums")(x) if compiled else _eager_row_sums(x)
        rows = _base(plan, sums)
        spm = rows.pm * _scalars(x.dtype, x.device)[0]  # (s+, -s-)
        # per sign: log_w - clip(l v), l v = +s+ for l = -, -s- for l = + (eq 16)
        off = rows.log_w[:, None] - spm.clamp(-eps, eps)
        if compiled:
            g, counts = _compiled("_c_tokens")(x, rows.pm, off, eps)
            ctx.save_for_backward(g, x)
        else:
            g, saved, counts = _eager_tokens(x, spm, off, eps, sink is not None)
            ctx.save_for_backward(g, *saved)
        if sink is not None:
            sink.update(rows=rows, counts=counts, plan=plan, width=x.shape[1], eps=eps)
        ctx.plan, ctx.rows, ctx.eps, ctx.compiled = plan, rows, eps, compiled
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        plan, rows, eps = ctx.plan, ctx.rows, ctx.eps
        grad = grad.contiguous()
        if ctx.compiled:
            g_out, x = ctx.saved_tensors
            sums = _compiled("_c_grad_sums")(grad, g_out, x, rows.pm, eps)
            ab = _row_grads(plan, rows, eps, *sums)
            out = _compiled("_c_grad_tokens")(grad, g_out, x, rows.pm, eps, ab)
        else:
            g_out, posf, iuf = ctx.saved_tensors
            *sums, gu, spare = _eager_grad_sums(grad, g_out, posf, iuf)
            ab = _row_grads(plan, rows, eps, *sums)
            out = gu.add_(torch.lerp(ab[:, 1:], ab[:, :1], posf, out=spare))
        return out, None, None, None, None


def supported(log_ratio: Tensor, hierarchy: Hierarchy) -> bool:
    """False where only the closed form is right: a data-parallel ``allreduce`` (its
    backward belongs to the reduction hook) or a functorch transform (vmap, jacrev)."""
    if hierarchy.allreduce is not _hier._identity:
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(log_ratio)


def _tensors(gp: GatePlan, dtype: torch.dtype) -> _Plan:
    """The fast path's view of ``gp`` in ``dtype`` (cached on the plan)."""
    plan = gp.cache.get(dtype)
    if plan is not None:
        return plan
    h, lvs, depth = gp.hierarchy, gp.levels, gp.depth
    dev = h.mask.device
    lengths = h.lengths.clamp_min(1).to(dtype)[:, None]
    k = lengths  # [B, 1] broadcasts as [1, B, 1]
    ids = num_traj = None
    num_nodes = 0
    if depth:
        offsets = [0]
        for lv in lvs[:-1]:
            offsets.append(offsets[-1] + lv.n)
        num_nodes = offsets[-1] + lvs[-1].n
        ids = torch.cat([lv.ids + off if off else lv.ids for lv, off in zip(lvs, offsets)])
        # (|Tj(node)|, T_node) of every node, cast then clamped at 1 (the closed form casts
        # the counts to the ratio dtype, then clamps; both are whole numbers)
        node = torch.cat([torch.stack([lv.num_traj, lv.num_tokens], 1) for lv in lvs])
        per_row = node.to(dtype).clamp_min_(1)[ids]
        num_traj = per_row[:, :1]
        k = torch.cat([per_row[:, 1:].view(depth, -1, 1), k[None]])
    key = (gp.c_plus, gp.c_minus, dtype, dev)
    c = _CONSTS.get(key)
    if c is None:  # constant over a run: cached
        c = torch.tensor([[[p, m]] for p, m in zip(gp.c_plus, gp.c_minus)], dtype=dtype,
                         device=dev)
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        _CONSTS[key] = c
    # 1 / k is reciprocal(k) * 1 in torch, so this is (1 + 1 / k) * c bit for bit
    edge = torch.mul(k.reciprocal().add_(1), c)
    plan = _Plan(depth, ids, num_nodes, num_traj, k, c, edge, (k + 1) * c, -k,
                 lengths, h.lengths, gp.names)
    gp.cache[dtype] = plan
    return plan


def fiber_gate(x: Tensor, gp: GatePlan, *, stats: bool = False, compiled: bool = False
               ) -> tuple[Tensor, Regimes | None]:
    """``([B, T] G(r), regimes or None)`` of ``gp`` by the fast path.

    ``x``: ``[B, T]`` log-ratios, 0 outside the mask, not checked (the callers validate once);
    the caller masks the gradient outside the mask. ``stats=True`` also returns the regime
    statistics (:class:`~fibration_theory.fiberpo.stats.Regimes`) from what the forward
    computed; ``compiled=True`` uses the ``torch.compile``d kernels.
    """
    plan = _tensors(gp, x.dtype)
    sink: dict | None = {} if stats else None
    g = FiberGate.apply(x.contiguous(), plan, gp.eps, compiled, sink)
    return g, (_regimes(sink, x.device) if stats else None)


@functools.lru_cache(maxsize=64)
def _in_dtype(v: float, dtype: torch.dtype) -> float:
    """``v`` rounded to ``dtype``: what a comparison of a ``dtype`` tensor with ``v`` uses."""
    return v if dtype == torch.float64 else float(torch.tensor(v, dtype=dtype))


_NUMPY_FLOATS = (torch.float32, torch.float64)


@torch.no_grad()
def _regimes(sink: dict, device: torch.device) -> Regimes:
    """The regime statistics from the forward's per-row results. The ``[B]``-sized inputs
    are finished in numpy: on the CPU they are read in place (no torch op), elsewhere packed
    into one float64 tensor and moved to the host once.

    Padding holds ``x = 0``, so each padded token of a row is a ``+`` token with
    ``|u| = log s+``: its share of the row counts is removed in closed form.
    """
    rows, plan, width = sink["rows"], sink["plan"], sink["width"]
    eps = _in_dtype(sink["eps"], rows.pm.dtype)
    counts = sink["counts"]
    if isinstance(counts, Tensor):  # the compiled kernel's [B, 3]
        counts = counts.unbind(1)
    n_lev, b = rows.passing.shape[:2]
    if rows.pm.device.type == "cpu" and rows.pm.dtype in _NUMPY_FLOATS:
        ce_sum, cepos_sum, pos_sum, log_w, length = (
            t.numpy().astype(np.float64) for t in (*counts, rows.log_w, plan.raw_lengths))
        plus, minus = rows.pm.numpy().astype(np.float64).T
        passing = rows.passing.numpy().transpose(0, 2, 1)
        rolling = rows.rolling.numpy().transpose(0, 2, 1)
    else:
        f64 = torch.float64
        flags = torch.stack([rows.passing, rows.rolling]).to(f64).permute(0, 1, 3, 2)
        packed = torch.cat([torch.stack(counts).to(f64), rows.pm.to(f64).T,
                            rows.log_w.to(f64)[None], plan.raw_lengths[None].to(f64),
                            flags.reshape(-1, b)]).cpu().numpy()
        ce_sum, cepos_sum, pos_sum, plus, minus, log_w, length = packed[:7]
        passing, rolling = packed[7:].reshape(2, n_lev, 2, b) > 0
    pad = width - length
    ce_pad = (plus >= eps) * pad  # padded tokens with |u| = s+ >= eps
    n_eps = ce_sum - ce_pad
    # fiber clip: |u| >= eps, or |v| >= eps with |v| = s- for l = +, s+ for l = - (eq 15)
    n_clip = (np.where(minus >= eps, pos_sum - pad, cepos_sum - ce_pad)
              + np.where(plus >= eps, width - pos_sum, ce_sum - cepos_sum))
    codes = (2 - 2 * passing.astype(np.int64) - rolling)  # P / R / Z = 0 / 1 / 2, [L, 2, B]
    drift = [(d[:, 0], d[:, 1]) for d in rows.delta]
    return Regimes(codes, n_eps, n_clip, length, log_w, plan.names, drift, device)
