"""Parameters and data of the paper's Figures 2-4, computed through the library.

Pure functions returning numpy arrays; :mod:`fibration_theory.plotting.paper` draws them.
See that module's docstring for the readings of the paper the figures rest on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fibration_theory import gating, losses
from fibration_theory import regimes as rg
from fibration_theory.hierarchy import Hierarchy

F64 = torch.float64
SQ3 = float(np.sqrt(3.0))
#: ternary corners (r1, r2, r3) in plot coordinates, unit side as in the paper's Fig 3
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, SQ3 / 2]])
#: corners closer than this (barycentric) are left out: log r = -inf on the simplex's edges
EDGE_MARGIN = 2e-3

@dataclasses.dataclass(frozen=True)
class Fig2Params:
    """Fig 2: ``g_agg`` (eq 10) and the log base weight (eq 8) over ``(log s+, log s-)``."""

    c: float = 0.15  #: panel (a) budget; the paper's panel draws C = 0.15, C* = 0.2
    k: int = 3  #: panel (a) slope (the paper's panel title says k = 3)
    k_extra: tuple[int, ...] = (8, 30)  #: thinner curves: the rollback band narrows as k grows
    c_plus: float = 0.20  #: panel (b) C+
    c_minus: float = 0.10  #: panel (b) C-
    k_b: int = 2  #: panel (b) slope = tokens of the realising trajectory
    p_lim: tuple[float, float] = (-0.02, 0.40)  #: panel (b) axes, as in the paper
    n_lim: tuple[float, float] = (-0.02, 0.30)
    grid: int = 321  #: points per axis of panel (b)


@dataclasses.dataclass(frozen=True)
class Fig3Params:
    """Fig 3: regime maps of one ``T = 3`` trajectory on the simplex ``(1/3) sum r_t = 1``."""

    eps: float = 0.025
    c_plus: float = 0.15
    c_minus: float = 0.09
    advantages: tuple[float, float, float] = (1.0, -0.7, 0.5)  #: fitted, see module note
    zoom: float = 0.18  #: panel (a) half-width around the centroid (plot units)
    grid: int = 361  #: points per axis of each panel

    @property
    def T(self) -> int:
        return len(self.advantages)


@dataclasses.dataclass(frozen=True)
class Fig4Params:
    """Fig 4: drift ``r_i = 1 + t Delta_i`` of one trajectory, FiberPO against GRPO."""

    delta: tuple[float, ...] = (0.030, 0.075, -0.0105, -0.103, -0.038, -0.118, 0.039, 0.231,
                                -0.0435, -0.0625)  #: exp(log r_i) - 1 of Fig 4b's bars (t = 1)
    advantages: tuple[float, ...] = (0.455, 0.496, -0.344, -0.819, -0.384, -0.646, 1.014, 0.528,
                                     -1.108, -0.941)  #: fitted to Figs 4c-d, sign(A) = sign(Delta)
    k: int = 32
    eps: float = 0.04
    c_plus: float = 0.12
    c_minus: float = 0.05
    t_lim: tuple[float, float] = (-4.2, 5.0)
    n_t: int = 1841
    t_bar: float = 1.0  #: panel (b)
    tokens: tuple[int, int] = (7, 5)  #: panel (c)
    pn_lim: tuple[float, float] = (-0.02, 0.25)  #: panel (a) axes
    grid: int = 221

    @property
    def T(self) -> int:
        return len(self.delta)


# ----------------------------------------------------------------------------- data


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def threshold(c: float, k: float) -> float:
    """``C* = (1 + 1/k) C``: where ``g_agg`` reaches 0 (eq 10)."""
    return (1.0 + 1.0 / k) * c


def gagg_curves(x: np.ndarray, c: float, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """``{k: g_agg(x, C, k)}`` over the 1-D grid ``x`` (eq 10), via ``gating.g_agg``."""
    xt = torch.as_tensor(x, dtype=F64)
    return {k: _np(gating.g_agg(xt, c, k)) for k in ks}


@dataclasses.dataclass(frozen=True)
class BaseWeightMap:
    """Panel data over ``(P, N) = (log s+, log s-)``; arrays ``[len(n), len(p)]``.

    ``p_agg``/``n_agg`` are the aggregates the library recovered from the realising
    trajectories, ``global_`` the index into ``regimes.GLOBAL_LABELS`` (-1 where infeasible),
    ``log_w`` NaN where infeasible (``P < 0`` or ``N < 0``).
    """

    p: np.ndarray
    n: np.ndarray
    log_w: np.ndarray
    global_: np.ndarray
    p_agg: np.ndarray
    n_agg: np.ndarray


def base_weight_map(p: np.ndarray, n: np.ndarray, *, c_plus: float, c_minus: float,
                    k: int) -> BaseWeightMap:
    """Log base weight (eq 8) and global regimes on a ``(P, N)`` grid.

    Each feasible point is a real ``k``-token trajectory ``log r = (kP, -kN, 0, ..., 0)``, whose
    eq 9 aggregates are exactly ``(P, N)`` and whose gate slope is ``T_tau = k``.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 to realise (P, N) as a trajectory, got {k}")
    pp, nn = np.meshgrid(p, n)
    feasible = (pp >= 0) & (nn >= 0)
    x = torch.zeros(int(feasible.sum()), k, dtype=F64)
    x[:, 0] = torch.as_tensor(k * pp[feasible])
    x[:, 1] = torch.as_tensor(-k * nn[feasible])
    h = Hierarchy.from_padded(torch.ones_like(x, dtype=torch.bool))
    s_plus, s_minus = gating.trajectory_aggregates(x, h)
    log_w = gating.base_log_weight([(s_plus, s_minus)], [h.lengths], [c_plus], [c_minus])
    reg = gating.regimes(x, h, c_plus=c_plus, c_minus=c_minus, eps=1.0)
    out = {name: np.full(pp.shape, np.nan) for name in ("log_w", "p_agg", "n_agg")}
    labels = np.full(pp.shape, -1, dtype=int)
    out["log_w"][feasible], labels[feasible] = _np(log_w), _np(reg.global_)
    out["p_agg"][feasible], out["n_agg"][feasible] = _np(s_plus), _np(s_minus)
    return BaseWeightMap(p, n, out["log_w"], labels, out["p_agg"], out["n_agg"])


def ternary_to_ratios(xy: np.ndarray, T: int = 3) -> np.ndarray:
    """``[M, 2]`` plot points -> ``[M, 3]`` ratios ``r = T b`` (``b`` barycentric, r1 at left)."""
    a = np.vstack([CORNERS.T, np.ones(3)])
    b = np.linalg.solve(a, np.vstack([xy.T, np.ones(len(xy))])).T
    return T * b


@dataclasses.dataclass(frozen=True)
class SimplexField:
    """Fig 3 panel data on a ``[n, n]`` plot grid ``(x, y)``; NaN / -1 outside the simplex."""

    x: np.ndarray
    y: np.ndarray
    ratios: np.ndarray  # [n, n, 3]
    delta_j: np.ndarray
    p_agg: np.ndarray
    n_agg: np.ndarray
    global_: np.ndarray
    local: np.ndarray


def simplex_field(x: np.ndarray, y: np.ndarray, params: Fig3Params) -> SimplexField:
    """``Delta J``, aggregates and regimes of ``T = 3`` trajectories at plot points ``(x, y)``."""
    xx, yy = np.meshgrid(x, y)
    r = ternary_to_ratios(np.column_stack([xx.ravel(), yy.ravel()]), params.T)
    inside = (r / params.T > EDGE_MARGIN).all(1)
    # row 0 is on-policy: J(1), the reference of Delta J
    log_r = torch.as_tensor(np.vstack([np.zeros(params.T), np.log(r[inside])]), dtype=F64)
    mask = torch.ones_like(log_r, dtype=torch.bool)
    adv = torch.as_tensor(params.advantages, dtype=F64).expand_as(log_r)
    kw = {"c_plus": params.c_plus, "c_minus": params.c_minus, "eps": params.eps}
    h = Hierarchy.from_padded(mask)
    out = losses.compute("fiberpo", log_r, torch.zeros_like(log_r), adv, mask, hierarchy=h, **kw)
    rgf = out.rgf
    j_row = _np((rgf.weights * rgf.gated_ratio * rgf.advantages).sum(1)) * h.num_traj
    s_plus, s_minus = gating.trajectory_aggregates(log_r, h)
    reg = gating.regimes(log_r, h, **kw)
    fields = {"delta_j": j_row[1:] - j_row[0], "p_agg": _np(s_plus)[1:],
              "n_agg": _np(s_minus)[1:], "global_": _np(reg.global_)[1:],
              "local": _np(reg.local)[1:]}
    grids = {}
    for name, vals in fields.items():
        g = np.full(inside.shape, -1 if vals.dtype.kind == "i" else np.nan, dtype=vals.dtype)
        g[inside] = vals
        grids[name] = g.reshape(xx.shape)
    return SimplexField(x, y, r.reshape(*xx.shape, params.T), **grids)


@dataclasses.dataclass(frozen=True)
class DriftPath:
    """Fig 4 data along ``t``: ``[n_t]`` per row, ``[n_t, T]`` per token.

    ``numer``/``denom``: ``clip(l_i u_i, eps)`` and ``clip(l_i v_i, eps)`` of eq 16;
    ``log_g = log_w + numer - denom``; ``j_tok_*``: ``G(r)_i A_i``; ``j_*``: ``(1/T) sum``.
    """

    t: np.ndarray
    log_r: np.ndarray
    p_agg: np.ndarray
    n_agg: np.ndarray
    log_w: np.ndarray
    u: np.ndarray
    numer: np.ndarray
    denom: np.ndarray
    log_g: np.ndarray
    j_tok_fiberpo: np.ndarray
    j_tok_grpo: np.ndarray
    j_fiberpo: np.ndarray
    j_grpo: np.ndarray


def drift_log_ratio(t: np.ndarray, delta: tuple[float, ...]) -> torch.Tensor:
    """``[n_t, T]`` ``log(1 + t Delta_i)``; raises if a ratio would be ``<= 0``."""
    r = 1.0 + np.outer(t, delta)
    if (r <= 0).any():
        raise ValueError(f"t: 1 + t Delta <= 0 for some t in [{t.min()}, {t.max()}]")
    return torch.as_tensor(np.log(r), dtype=F64)


def fiberpo_log_gate(log_r: torch.Tensor, h: Hierarchy, *, c_plus: float, c_minus: float,
                     eps: float, k: float) -> tuple[torch.Tensor, ...]:
    """``log G`` of eq 7 with the gate slope ``k`` set apart from ``T_tau`` (Fig 4: 32 vs 10).

    Returns ``(log_g [B,T], log_w [B], P [B], N [B], u [B,T], v [B,T])`` (``u``, ``v`` of
    eqs 14-15); with ``k = T_tau`` ``log_g`` is ``gating.fiberpo_log_ratio`` (tested).
    """
    s_plus, s_minus = gating.trajectory_aggregates(log_r, h)
    counts = torch.full_like(s_plus, float(k))
    log_w = gating.base_log_weight([(s_plus, s_minus)], [counts], [c_plus], [c_minus])
    fiber, u, v = gating.fiber_log_residual(log_r, s_plus, s_minus, eps)
    return log_w[:, None] + fiber, log_w, s_plus, s_minus, u, v


def drift_path(params: Fig4Params) -> DriftPath:
    """Evaluate Fig 4 on a ``t`` grid that contains ``0``, ``+-1..4`` and ``t_bar`` exactly."""
    t = np.unique(np.concatenate([np.linspace(*params.t_lim, params.n_t),
                                  np.arange(-4.0, 5.0), [params.t_bar]]))
    log_r = drift_log_ratio(t, params.delta)
    mask = torch.ones_like(log_r, dtype=torch.bool)
    h = Hierarchy.from_padded(mask)
    adv = torch.as_tensor(params.advantages, dtype=F64).expand_as(log_r)
    log_g, log_w, s_plus, s_minus, u, v = fiberpo_log_gate(
        log_r, h, c_plus=params.c_plus, c_minus=params.c_minus, eps=params.eps, k=params.k)
    lab = gating.sign_label(log_r)
    numer = gating.logclip(lab * u, params.eps)  # eq 16's two clips, drawn apart in panel (b)
    denom = gating.logclip(lab * v, params.eps)
    grpo = losses.compute("grpo", log_r, torch.zeros_like(log_r), adv, mask, hierarchy=h,
                          eps_low=params.eps, eps_high=params.eps)
    g_fib = log_g.exp()
    return DriftPath(
        t=t, log_r=_np(log_r), p_agg=_np(s_plus), n_agg=_np(s_minus), log_w=_np(log_w),
        u=_np(u), numer=_np(numer), denom=_np(denom), log_g=_np(log_g),
        j_tok_fiberpo=_np(g_fib * adv), j_tok_grpo=_np(grpo.gated_ratio * adv),
        j_fiberpo=_np((g_fib * adv).mean(1)),
        j_grpo=_np((grpo.weights * grpo.gated_ratio * adv).sum(1)) * h.num_traj)


def crossings(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The ``t`` where ``f`` changes sign, linearly interpolated between grid points."""
    s = np.sign(f)
    i = np.where(s[:-1] * s[1:] < 0)[0]
    return t[i] - f[i] * (t[i + 1] - t[i]) / (f[i + 1] - f[i])


def drift_markers(d: DriftPath, params: Fig4Params) -> dict[str, np.ndarray]:
    """Vertical markers of Figs 4c-d: each token's ``|u_i| = eps`` (L-I -> L-II) and the
    channels' entries into rollback (``= C``) and zeroing (``= C*``), from ``channel_regime``."""
    k = params.k
    out = {"eps": np.concatenate([crossings(d.t, np.abs(d.u[:, i]) - params.eps)
                                  for i in range(params.T)])}
    for name, agg, c in (("plus", d.p_agg, params.c_plus), ("minus", d.n_agg, params.c_minus)):
        reg = _np(rg.channel_regime(torch.as_tensor(agg), c, k))
        for key, level, level_c in (("rollback", 1, c), ("zeroed", 2, threshold(c, k))):
            # the library's label brackets the change; the aggregate places it inside
            i = np.flatnonzero((reg[:-1] >= level) != (reg[1:] >= level))
            out[f"{name}_{key}"] = d.t[i] + (level_c - agg[i]) * (d.t[i + 1] - d.t[i]) / (
                agg[i + 1] - agg[i])
    return out


def nearest_in_region(xx: np.ndarray, yy: np.ndarray, labels: np.ndarray, label: int,
                      target: tuple[float, float]) -> tuple[float, float]:
    """The grid point labelled ``label`` closest to ``target`` (where its name is written)."""
    d = np.where(labels == label, (xx - target[0]) ** 2 + (yy - target[1]) ** 2, np.inf)
    i = np.unravel_index(np.argmin(d), d.shape)
    if not np.isfinite(d[i]):
        raise ValueError(f"label {label} does not occur on this grid")
    return float(xx[i]), float(yy[i])


