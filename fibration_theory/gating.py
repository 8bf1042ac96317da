"""FiberPO's gates in closed form (Section 5, eqs 6-18, 80; Section 6, eqs 30-33).

Everything is computed in log space: the gated ratio is ``exp(log G)`` with ``log G`` a
sum of clipped, bounded terms, so log-ratios of any finite size (700 included) never
overflow. Tensor shapes: ``log_ratio`` is ``[B, T]`` (``log pi_theta - log pi_old`` per
token; entries outside ``hierarchy.mask`` are ignored), trajectory quantities are ``[B]``.

Convention (finding F3): ``sign(0) = +1``. The paper's eq 13 leaves ``sign(0)`` undefined,
yet every on-policy token has ``log r = 0``. We put such a token in the positive channel,
both in the label ``l_i`` and in the aggregates of eq 9, so that the derivative of
``log s+`` at ``log r_i = 0`` is ``1/T`` as Prop 5.2 (eq 20) assumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fibration_theory import regimes as _rg
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.validation import check_float, check_nonneg

Tensor = torch.Tensor
Budget = float | Sequence[float]

__all__ = [
    "g_agg", "logclip", "sign_label", "trajectory_aggregates", "level_aggregates",
    "base_log_weight", "fiber_log_residual", "fiberpo_log_ratio", "fiberpo_ratio",
    "fiberpo_domain_log_ratio", "fiberpo_domain_ratio", "regimes", "Regimes", "level_budgets",
]


def g_agg(x: Tensor | float, c: Tensor | float, k: Tensor | float) -> Tensor:
    """Aggregate gate, eq 10 (= eq 78), elementwise.

    ``g(x) = x`` for ``|x| <= C`` (pass-through), ``sign(x)(k+1)C - k x`` for
    ``C < |x| < (1 + 1/k) C`` (rollback, slope ``-k``), ``0`` beyond (zeroed).
    Continuous; ``k`` is the level's token count (``T_tau``, ``T_g`` or ``T_D``).
    """
    x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, Tensor) else x
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    regime = _rg.channel_regime(x, c, k)
    rollback = torch.sign(x) * (k + 1) * c - k * x
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(regime == 0, x, torch.where(regime == 1, rollback, zero))


def logclip(log_x: Tensor, eps: float) -> Tensor:
    """``log logclip(x, eps)`` of eq 12: ``clip(log x, -eps, +eps)``, kept in log space."""
    return log_x.clamp(-eps, eps)


def sign_label(log_ratio: Tensor) -> Tensor:
    """``l_i = sign(log r_i)`` of eq 13 with ``sign(0) = +1``; same dtype as the input."""
    one = torch.ones((), dtype=log_ratio.dtype, device=log_ratio.device)
    return torch.where(log_ratio >= 0, one, -one)


def trajectory_aggregates(log_ratio: Tensor, hierarchy: Hierarchy) -> tuple[Tensor, Tensor]:
    """Sign-split trajectory aggregates of eq 9, ``([B] log s+, [B] log s-)``.

    ``log s+ = (1/T_tau) sum_t max(log r_t, 0)``, ``log s- = (1/T_tau) sum_t max(-log r_t, 0)``,
    with the zero tokens in the positive channel (see the module note).
    """
    x = _masked(log_ratio, hierarchy)
    pos = x >= 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    plus = hierarchy.row_mean(torch.where(pos, x, zero))
    minus = hierarchy.row_mean(torch.where(pos, zero, -x))
    return plus, minus


def level_aggregates(log_ratio: Tensor, hierarchy: Hierarchy) -> list[tuple[Tensor, Tensor]]:
    """Per-row aggregates of every level, coarse to fine, the trajectory level last.

    Each entry is ``([B] log s+_node(row), [B] log s-_node(row))``; a level's aggregate is the
    mean of its trajectories' (eq 33), one segmented reduction over the row aggregates.
    """
    plus, minus = trajectory_aggregates(log_ratio, hierarchy)
    out = []
    for k, lv in enumerate(hierarchy.levels):
        out.append((hierarchy.node_mean(k, plus)[lv.ids], hierarchy.node_mean(k, minus)[lv.ids]))
    out.append((plus, minus))
    return out


def level_budgets(c: Budget, depth: int, name: str) -> list[float]:
    """One budget per level (coarse to fine, trajectory last): a scalar is shared by all."""
    check_nonneg(c, name)
    if isinstance(c, (int, float)) or (isinstance(c, Tensor) and c.dim() == 0):
        return [float(c)] * (depth + 1)
    values = [float(v) for v in c]
    if len(values) != depth + 1:
        raise ValueError(f"{name} has {len(values)} entries; this hierarchy needs one per level "
                         f"plus the trajectory level ({depth + 1})")
    return values


def level_token_counts(hierarchy: Hierarchy) -> list[Tensor]:
    """``[B]`` token count of each row's node at every level (``T_D``, ``T_g``, ..., ``T_tau``)."""
    return [lv.num_tokens[lv.ids] for lv in hierarchy.levels] + [hierarchy.lengths]


def base_log_weight(aggregates: list[tuple[Tensor, Tensor]], counts: list[Tensor],
                    c_plus: list[float], c_minus: list[float]) -> Tensor:
    """``[B]`` log base weight: eq 8 for one level, eq 31 for a chain of levels.

    ``log w = sum_k g_agg(s+_k - s+_{k-1}, C+_k, T_k) - g_agg(s-_k - s-_{k-1}, C-_k, T_k)``,
    with ``s_{-1} = 0``: each level gates its drift away from the level above.
    """
    log_w = torch.zeros_like(aggregates[-1][0])
    prev_p = prev_m = torch.zeros_like(log_w)
    for (p, m), t, cp, cm in zip(aggregates, counts, c_plus, c_minus):
        t = t.to(log_w.dtype).clamp_min(1)
        log_w = log_w + g_agg(p - prev_p, cp, t) - g_agg(m - prev_m, cm, t)
        prev_p, prev_m = p, m
    return log_w


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
    return logclip(l * u, eps) - logclip(l * v, eps), u, v


def fiberpo_log_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: float,
                      c_minus: float, eps: float) -> Tensor:
    """``[B, T]`` ``log G(r)_i`` of eq 7 (FiberPO, trajectory level only)."""
    _check_gate_args(log_ratio, hierarchy, c_plus, c_minus, eps)
    x = _masked(log_ratio, hierarchy)
    plus, minus = trajectory_aggregates(x, hierarchy)
    log_w = base_log_weight([(plus, minus)], [hierarchy.lengths], [float(c_plus)],
                            [float(c_minus)])
    fiber, _, _ = fiber_log_residual(x, plus, minus, eps)
    return log_w[:, None] + fiber


def fiberpo_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: float, c_minus: float,
                  eps: float) -> Tensor:
    """``[B, T]`` gated ratio ``G(r)_i = w_base_tau * r~_fiber_i`` of eq 7 (Def 5.1, eq 80)."""
    return fiberpo_log_ratio(log_ratio, hierarchy, c_plus=c_plus, c_minus=c_minus,
                             eps=eps).exp()


def fiberpo_domain_log_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget,
                             c_minus: Budget, eps: float) -> Tensor:
    """``[B, T]`` ``log(w_Base_i * r~_Fiber_i)`` of eqs 31-32 over every level of ``hierarchy``.

    With the levels (domain, group) this is FiberPO-Domain exactly as eq 31 writes it; with no
    level it is FiberPO; with more levels it is the deeper FGH chain. ``c_plus``/``c_minus``:
    one pair for all levels (the paper's eq 31) or one entry per level, coarse to fine, the
    trajectory level last (the per-level budgets the text of Section 6 describes; F4).
    """
    depth = hierarchy.depth
    cp = level_budgets(c_plus, depth, "c_plus")
    cm = level_budgets(c_minus, depth, "c_minus")
    _check_gate_args(log_ratio, hierarchy, cp, cm, eps)
    x = _masked(log_ratio, hierarchy)
    aggs = level_aggregates(x, hierarchy)
    log_w = base_log_weight(aggs, level_token_counts(hierarchy), cp, cm)
    fiber, _, _ = fiber_log_residual(x, *aggs[-1], eps)
    return log_w[:, None] + fiber


def fiberpo_domain_ratio(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget,
                         c_minus: Budget, eps: float) -> Tensor:
    """``[B, T]`` ``w_Base_i * r~_Fiber_i`` of eqs 31-32 (Def 6.4)."""
    return fiberpo_domain_log_ratio(log_ratio, hierarchy, c_plus=c_plus, c_minus=c_minus,
                                    eps=eps).exp()


class Regimes:
    """Per-row regime labels: ``global_`` (trajectory level), ``local``, and ``per_level``
    (one global label per level, coarse to fine, trajectory last); indices into
    ``regimes.GLOBAL_LABELS`` / ``LOCAL_LABELS``; ``rollback_plus/minus`` per level."""

    def __init__(self, per_level: list[Tensor], local: Tensor, channel: list[tuple[Tensor, Tensor]],
                 names: list[str], valid: Tensor):
        self.per_level = per_level
        self.global_ = per_level[-1]
        self.local = local
        self.channel = channel
        self.names = names
        self.valid = valid

    def labels(self) -> tuple[list[str], list[str]]:
        """Readable ``(global, local)`` labels per row."""
        return ([_rg.GLOBAL_LABELS[i] for i in self.global_.tolist()],
                [_rg.LOCAL_LABELS[i] for i in self.local.tolist()])

    def occupancy(self) -> dict[str, float]:
        """Fractions of valid rows per regime (trajectory level, local) and per upper level."""
        out = _rg.occupancy(self.global_, self.valid, _rg.GLOBAL_LABELS, "regime/")
        out.update(_rg.occupancy(self.local, self.valid, _rg.LOCAL_LABELS, "regime/"))
        for name, lab in zip(self.names[:-1], self.per_level[:-1]):
            out.update(_rg.occupancy(lab, self.valid, _rg.GLOBAL_LABELS, f"regime/{name}/"))
        for name, (p, m) in zip(self.names, self.channel):
            out[f"rollback_frac/{name}"] = float((((p == 1) | (m == 1)) & self.valid).sum()) / max(
                int(self.valid.sum()), 1)
        return out


@torch.no_grad()
def regimes(log_ratio: Tensor, hierarchy: Hierarchy, *, c_plus: Budget, c_minus: Budget,
            eps: float, levels: bool = False) -> Regimes:
    """Regime labels per trajectory (G-I..G-III, L-I..L-III; see ``fibration_theory.regimes``).

    ``levels=False`` labels FiberPO (trajectory level only); ``levels=True`` labels every
    level of the hierarchy as FiberPO-Domain gates them.
    """
    h_levels = hierarchy.levels if levels else ()
    depth = len(h_levels)
    cp = level_budgets(c_plus, depth, "c_plus")
    cm = level_budgets(c_minus, depth, "c_minus")
    x = _masked(log_ratio, hierarchy)
    aggs = level_aggregates(x, hierarchy)
    if not levels:
        aggs = aggs[-1:]
    counts = ([lv.num_tokens[lv.ids] for lv in h_levels] + [hierarchy.lengths])
    per_level, channel = [], []
    prev_p = prev_m = torch.zeros_like(aggs[-1][0])
    for (p, m), t, a, b in zip(aggs, counts, cp, cm):
        t = t.clamp_min(1)
        rp, rm = _rg.channel_regime(p - prev_p, a, t), _rg.channel_regime(m - prev_m, b, t)
        per_level.append(_rg.global_regime(rp, rm))
        channel.append((rp, rm))
        prev_p, prev_m = p, m
    _, u, _ = fiber_log_residual(x, *aggs[-1], eps)
    local = _rg.local_regime(u.abs() >= eps, hierarchy.mask)
    names = [lv.name for lv in h_levels] + ["trajectory"]
    return Regimes(per_level, local, channel, names, hierarchy.valid)


def _masked(log_ratio: Tensor, hierarchy: Hierarchy) -> Tensor:
    return torch.where(hierarchy.mask, log_ratio, torch.zeros((), dtype=log_ratio.dtype,
                                                               device=log_ratio.device))


def _check_gate_args(log_ratio: Tensor, hierarchy: Hierarchy, c_plus, c_minus, eps) -> None:
    check_float(log_ratio, "log_ratio", hierarchy.mask.shape, hierarchy.mask)
    check_nonneg(c_plus, "c_plus")
    check_nonneg(c_minus, "c_minus")
    check_nonneg(eps, "eps")
