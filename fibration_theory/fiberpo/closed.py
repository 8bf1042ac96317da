"""FiberPO's gate in closed form over any depth (eqs 6-18, 80; eqs 30-33).

Depth 0 is FiberPO: ``log G_i = log w_base_tau + log r~_fiber_i`` (eq 7). Deeper plans are
the FGH chain of FiberPO-Domain (eqs 31-32): every gated level ``k`` (coarse to fine, the
trajectory level last) gates its drift from the level above,
``log w = sum_k g_agg(s+_k - s+_{k-1}, C+_k, T_k) - g_agg(s-_k - s-_{k-1}, C-_k, T_k)``
with ``s_{-1} = 0``, and the fiber residual is the trajectory's (eqs 11-16).

Everything is computed in log space: ``log G`` is a sum of clipped, bounded terms, so
log-ratios of any finite size (700 included) never overflow. Tensor shapes: ``log_ratio`` is
``[B, T]`` (``log pi_theta - log pi_old`` per token; entries outside ``hierarchy.mask`` are
ignored), per-row quantities are ``[B]``.

Convention (finding F3): ``sign(0) = +1``. The paper's eq 13 leaves ``sign(0)`` undefined,
yet every on-policy token has ``log r = 0``. Such a token goes in the positive channel, both
in the label ``l_i`` and in the aggregates of eq 9, so that the derivative of ``log s+`` at
``log r_i = 0`` is ``1/T`` as Prop 5.2 (eq 20) assumes.
"""

from __future__ import annotations

import torch

from fibration_theory import regimes as _rg
from fibration_theory.fiberpo.plan import GatePlan
from fibration_theory.fiberpo.stats import Regimes
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.validation import check_float, check_nonneg, check_real

Tensor = torch.Tensor
Pair = tuple[Tensor, Tensor]

__all__ = ["base_log_weight", "drifts", "fiber_log_residual", "g_agg", "gate_log_ratio",
           "level_aggregates", "logclip", "sign_label", "trajectory_aggregates"]


def _check_no_nan(x, name: str) -> None:
    if isinstance(x, Tensor):
        if x.is_floating_point() and bool(torch.isnan(x).any()):
            raise ValueError(f"{name} holds NaN")
    else:
        check_real(x, name, finite=False)


def _check_nonneg_values(v, name: str) -> None:
    """Finite and ``>= 0``: a number, or a tensor of any shape (one value per element)."""
    if isinstance(v, Tensor) and v.dim() > 1:
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0 everywhere")
        return
    check_nonneg(v, name)


def g_agg(x: Tensor | float, c: Tensor | float, k: Tensor | float) -> Tensor:
    """Aggregate gate, eq 10 (= eq 78), elementwise.

    ``g(x) = x`` for ``|x| <= C`` (pass-through), ``sign(x)(k+1)C - k x`` for
    ``C < |x| < (1 + 1/k) C`` (rollback, slope ``-k``), ``0`` beyond (zeroed).
    Continuous; ``k`` is the level's token count (``T_tau``, ``T_g`` or ``T_D``).

    Raises:
        ValueError: ``x`` or ``k`` NaN, ``c`` not finite and ``>= 0``, ``k < 0``.
    """
    _check_no_nan(x, "x")
    _check_nonneg_values(c, "c")
    _check_no_nan(k, "k")
    if bool(torch.as_tensor(k).lt(0).any()):
        raise ValueError(f"k must be >= 0 (a token count), got {k}")
    x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, Tensor) else x
    return _g_agg(x, c, k)[0]


def _g_agg(x: Tensor, c, k) -> tuple[Tensor, Tensor]:
    """``(g_agg(x, c, k), channel regime)`` of eq 10, unchecked; the regime (0 P, 1 R, 2 Z)
    selects the branch (``regimes.channel_regime``)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    regime = _rg.channel_regime(x, c, k)
    rollback = torch.sign(x) * (k + 1) * c - k * x
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(regime == 0, x, torch.where(regime == 1, rollback, zero)), regime


def logclip(log_x: Tensor, eps: float) -> Tensor:
    """``log logclip(x, eps)`` of eq 12: ``clip(log x, -eps, +eps)``, kept in log space.

    Raises:
        ValueError: ``log_x`` holds NaN, or ``eps`` is not finite and ``>= 0``.
    """
    _check_no_nan(log_x, "log_x")
    check_nonneg(eps, "eps")
    return log_x.clamp(-eps, eps)


def sign_label(log_ratio: Tensor) -> Tensor:
    """``l_i = sign(log r_i)`` of eq 13 with ``sign(0) = +1``; same dtype as the input."""
    one = torch.ones((), dtype=log_ratio.dtype, device=log_ratio.device)
    return torch.where(log_ratio >= 0, one, -one)


def masked(log_ratio: Tensor, hierarchy: Hierarchy) -> Tensor:
    """``log_ratio`` with 0 outside ``hierarchy.mask``."""
    return torch.where(hierarchy.mask, log_ratio, torch.zeros((), dtype=log_ratio.dtype,
                                                               device=log_ratio.device))


def _row_aggregates(x: Tensor, hierarchy: Hierarchy) -> Pair:
    """Eq 9 for ``x`` already 0 outside the mask."""
    pos = x >= 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return (hierarchy.row_mean(torch.where(pos, x, zero)),
            hierarchy.row_mean(torch.where(pos, zero, -x)))


def _check_log_ratio(log_ratio: Tensor, hierarchy: Hierarchy) -> None:
    if not isinstance(hierarchy, Hierarchy):
        raise ValueError(f"hierarchy must be a Hierarchy, got {type(hierarchy).__name__}")  # noqa: TRY004
    check_float(log_ratio, "log_ratio", hierarchy.mask.shape, hierarchy.mask)


def trajectory_aggregates(log_ratio: Tensor, hierarchy: Hierarchy) -> Pair:
    """Sign-split trajectory aggregates of eq 9, ``([B] log s+, [B] log s-)``.

    ``log s+ = (1/T_tau) sum_t max(log r_t, 0)``, ``log s- = (1/T_tau) sum_t max(-log r_t, 0)``,
    with the zero tokens in the positive channel (see the module note).

    Raises:
        ValueError: ``log_ratio`` not a ``[B, T]`` floating tensor, finite on the mask.
    """
    _check_log_ratio(log_ratio, hierarchy)
    return _row_aggregates(masked(log_ratio, hierarchy), hierarchy)


def _aggregates(x: Tensor, hierarchy: Hierarchy, depth: int) -> list[Pair]:
    """Per-row aggregates of the ``depth`` coarsest levels, the trajectory level last; a
    level's aggregate is the mean of its trajectories' (eq 33)."""
    plus, minus = _row_aggregates(x, hierarchy)
    out = []
    for k, lv in enumerate(hierarchy.levels[:depth]):
        out.append((hierarchy.node_mean(k, plus)[lv.ids], hierarchy.node_mean(k, minus)[lv.ids]))
    out.append((plus, minus))
    return out


def level_aggregates(log_ratio: Tensor, hierarchy: Hierarchy) -> list[Pair]:
    """Per-row aggregates of every level, coarse to fine, the trajectory level last.

    Each entry is ``([B] log s+_node(row), [B] log s-_node(row))``; a level's aggregate is the
    mean of its trajectories' (eq 33), one segmented reduction over the row aggregates.
    """
    _check_log_ratio(log_ratio, hierarchy)
    return _aggregates(masked(log_ratio, hierarchy), hierarchy, hierarchy.depth)


def drifts(aggregates: list[Pair]) -> list[Pair]:
    """Each level's drift ``(s+_k - s+_{k-1}, s-_k - s-_{k-1})`` with ``s_{-1} = 0``: the
    argument of ``g_agg`` at every level of eq 31 (eq 8 for one level, where it is the
    trajectory aggregate itself)."""
    out = []
    prev: Pair | None = None
    for p, m in aggregates:
        out.append((p, m) if prev is None else (p - prev[0], m - prev[1]))
        prev = (p, m)
    return out


def _level_gates(drift: list[Pair], counts: list[Tensor], c_plus, c_minus, slope: float = 1.0
                 ) -> tuple[Tensor, list[Pair]]:
    """``([B] log w, per level (regime+, regime-))``: eq 8 / eq 31 and the channel regimes of
    ``g_agg`` it selected, accumulated left to right ``((0 + g+_0) - g-_0) + g+_1 ...``;
    ``slope`` scales the rollback slope ``k = slope * T`` (1: eq 10 as printed)."""
    log_w = torch.zeros_like(drift[-1][0])
    channel = []
    for (dp, dm), t, cp, cm in zip(drift, counts, c_plus, c_minus):
        t = t.to(log_w.dtype).clamp_min(1)
        if slope != 1.0:
            t = t * slope
        gp, rp = _g_agg(dp, cp, t)
        gm, rm = _g_agg(dm, cm, t)
        log_w = log_w + gp - gm
        channel.append((rp, rm))
    return log_w, channel


def base_log_weight(aggregates: list[Pair], counts: list[Tensor], c_plus: list[float],
                    c_minus: list[float]) -> Tensor:
    """``[B]`` log base weight: eq 8 for one level, eq 31 for a chain of levels.

    ``log w = sum_k g_agg(s+_k - s+_{k-1}, C+_k, T_k) - g_agg(s-_k - s-_{k-1}, C-_k, T_k)``,
    with ``s_{-1} = 0``: each level gates its drift away from the level above. ``counts``:
    ``[B]`` token counts ``T_k`` per level; one budget per level.
    """
    if not (len(aggregates) == len(counts) == len(c_plus) == len(c_minus)):
        raise ValueError(f"c_plus: aggregates, counts, c_plus and c_minus need one entry per "
                         f"level, got {len(aggregates)}, {len(counts)}, {len(c_plus)}, "
                         f"{len(c_minus)}")
    check_nonneg(list(c_plus), "c_plus")
    check_nonneg(list(c_minus), "c_minus")
    return _level_gates(drifts(aggregates), counts, c_plus, c_minus)[0]


def fiber_log_residual(log_ratio: Tensor, log_s_plus: Tensor, log_s_minus: Tensor,
                       eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``[B, T]`` log of the gated residual, eqs 11, 14-16.

    ``log r~_i = clip(log r_i - l_i log s^(l_i), +-eps) - clip(-l_i log s^(-l_i), +-eps)``.
    Returns ``(log r~, u, v)`` with ``u_i = l_i log r_i - log s^(l_i)`` (eq 14) and
    ``v_i = -log s^(-l_i)`` (eq 15).
    """
    l = sign_label(log_ratio)
    pos = l > 0
    same = torch.where(pos, log_s_plus[:, None], log_s_minus[:, None])  # log s^(l_i)
    other = torch.where(pos, log_s_minus[:, None], log_s_plus[:, None])  # log s^(-l_i)
    u = l * log_ratio - same
    v = -other
    return (l * u).clamp(-eps, eps) - (l * v).clamp(-eps, eps), u, v


def gate_log_ratio(x: Tensor, plan: GatePlan, *, stats: bool = False
                   ) -> tuple[Tensor, Regimes | None]:
    """``([B, T] log G(r), regimes or None)`` of ``plan`` (eq 7 at depth 0, eqs 31-32 deeper).

    ``x``: ``[B, T]`` log-ratios, 0 outside the mask (:func:`masked`), not checked here (the
    public entry points check it); ``stats=True`` also returns the regime statistics of
    :class:`~fibration_theory.fiberpo.stats.Regimes` from the same aggregates and clips.
    """
    h = plan.hierarchy
    aggs = _aggregates(x, h, plan.depth)
    drift = drifts(aggs)
    log_w, channel = _level_gates(drift, plan.counts(), plan.c_plus, plan.c_minus, plan.slope)
    fiber, u, v = fiber_log_residual(x, *aggs[-1], plan.eps)
    log_g = log_w[:, None] + fiber
    if not stats:
        return log_g, None
    with torch.no_grad():
        mask = h.mask
        clip_u = u.abs() >= plan.eps
        n_eps = (clip_u & mask).sum(1)
        n_clip = ((clip_u | (v.abs() >= plan.eps)) & mask).sum(1)
        codes = torch.stack([torch.stack(pair) for pair in channel])  # [L, 2, B]
        reg = Regimes.from_tensors(codes, n_eps, n_clip, h.lengths, log_w.detach(),
                                   plan.names, [(p.detach(), m.detach()) for p, m in drift])
    return log_g, reg
