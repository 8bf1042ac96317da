"""The paper's Figures 2, 3 and 4 (Section 5, pp. 11, 14, 15), recomputed through the library.

Every plotted number comes from :mod:`fibration_theory.gating`, :mod:`fibration_theory.regimes`
or :func:`fibration_theory.losses.compute`; nothing here re-implements a gate, so the pictures
certify the code. Each figure has a frozen parameter dataclass, a data builder (pure, returns
numpy arrays) and a plot function ``(data, params) -> (fig, axes)`` with no file I/O;
:func:`make_paper_figures` is the only writer.

Readings of the paper (stated in ``docs/figures.md``):

* Fig 3 colours by ``Delta J = J(r) - J(1)``, the FiberPO objective of one trajectory
  (``(1/T) sum_i G(r)_i A_i``, eq 18) minus its on-policy value, for a fixed advantage vector.
  The paper prints no advantages; ``A = (1, -0.7, 0.5)`` is a least-squares fit of this
  reading to the colours of the paper's Fig 3b (fit: ``(1.02, -0.68, 0.53)``).
* Fig 4 decouples the gate's slope ``k = 32`` from the length ``T = 10``; ``gating.fiberpo_ratio``
  ties ``k`` to ``T_tau``, so the figure composes the same library pieces
  (``trajectory_aggregates``, ``base_log_weight`` with counts ``k``, ``fiber_log_residual``).
  ``Delta`` is read off the bars of Fig 4b; ``A`` is fitted to the curves of Figs 4c-d.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fibration_theory import gating, losses
from fibration_theory import regimes as rg
from fibration_theory.hierarchy import Hierarchy

F64 = torch.float64
CMAP = "RdBu_r"
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


# ----------------------------------------------------------------------------- plots


def _figure(w: float, h: float, ncols: int, nrows: int = 1):
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


BOX = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "alpha": 0.85}


def plot_fig2(params: Fig2Params = Fig2Params(), data: BaseWeightMap | None = None):
    """Fig 2: (a) ``g_agg`` with its three regimes, (b) ``log w_base`` with regime labels."""
    fig, axes = _figure(11.5, 4.8, 2)
    ax = axes[0, 0]
    c, cs = params.c, threshold(params.c, params.k)
    x = np.linspace(-0.3, 0.3, 1201)
    curves = gagg_curves(x, c, (params.k, *params.k_extra))
    ax.axvspan(-c, c, color="tab:blue", alpha=0.07)
    for side in (-1, 1):
        ax.axvspan(side * c, side * 0.3, color="tab:orange", alpha=0.07)
        ax.axvline(side * c, color="tab:blue", ls="--", lw=0.8)
        ax.axvline(side * cs, color="tab:red", ls=":", lw=0.8)
    ax.plot(x, x, color="0.6", ls="--", lw=0.7, label="identity")
    for kk in params.k_extra:
        ax.plot(x, curves[kk], lw=0.9, alpha=0.6, label=f"k = {kk}")
    ax.plot(x, curves[params.k], color="tab:blue", lw=2.4, label=f"$g^{{agg}}$, k = {params.k}")
    ax.text(0.0, 0.24, "pass-through\n$|x| \\leq C$", ha="center", color="tab:blue")
    ax.annotate(f"rollback\nslope $-k = -{params.k}$", (c + 0.6 * (cs - c), 0.06),
                (0.215, 0.2), color="tab:orange", fontsize=8,
                arrowprops={"arrowstyle": "->", "color": "tab:orange"})
    ax.set(xlim=(-0.3, 0.3), ylim=(-0.33, 0.33), xlabel="$\\log s$",
           ylabel="$g^{agg}(\\log s, C, k)$",
           title=f"(a) $g^{{agg}}$ (eq 10), C = {c}, $C^* = (1+1/k)C$ = {cs:.3g}")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[0, 1]
    d = data if data is not None else fig2_data(params)
    im = ax.pcolormesh(d.p, d.n, d.log_w, cmap=CMAP, vmin=-0.3, vmax=0.3, shading="auto")
    cl = ax.contour(d.p, d.n, d.log_w, levels=np.arange(-0.28, 0.29, 0.04), colors="0.45",
                    linewidths=0.4)
    ax.clabel(cl, fontsize=6, fmt="%.2f")
    fig.colorbar(im, ax=ax, label="$\\log w^{base}_\\tau$ (eq 8)")
    _pn_boundaries(ax, params.c_plus, params.c_minus, params.k_b)
    (p0, p1), (n0, n1) = params.p_lim, params.n_lim
    for xy, w, h in (((p0, n0), p1 - p0, -n0), ((p0, n0), -p0, n1 - n0)):
        ax.add_patch(Rectangle(xy, w, h, fc="0.93", ec="0.6", hatch="//", lw=0))
    ax.text(0.03, -0.014, "infeasible", fontsize=8, style="italic", color="0.4")
    pp, nn = np.meshgrid(d.p, d.n)
    for lab, target in FIG2_LABELS:
        xy = nearest_in_region(pp, nn, d.global_, rg.GLOBAL_LABELS.index(lab), target)
        ax.text(*xy, lab, ha="center", va="center", fontsize=9, bbox=BOX)
    ax.set(xlim=params.p_lim, ylim=params.n_lim, xlabel="$P = \\log s^+$",
           ylabel="$N = \\log s^-$",
           title=f"(b) $\\log w^{{base}}$, k = {params.k_b}, $C^+$ = {params.c_plus}, "
                 f"$C^-$ = {params.c_minus}")
    return fig, axes


#: where panel (b) names each region (moved onto the nearest grid point of that regime)
FIG2_LABELS = (("G-I", (0.10, 0.05)), ("G-II,r", (0.25, 0.05)), ("G-II,r", (0.09, 0.125)),
               ("G-II", (0.35, 0.05)), ("G-II", (0.09, 0.22)), ("G-III,r", (0.25, 0.125)),
               ("G-III,r", (0.25, 0.22)), ("G-III,r", (0.35, 0.125)), ("G-III", (0.35, 0.22)))


def fig2_data(params: Fig2Params) -> BaseWeightMap:
    return base_weight_map(np.linspace(*params.p_lim, params.grid),
                           np.linspace(*params.n_lim, params.grid), c_plus=params.c_plus,
                           c_minus=params.c_minus, k=params.k_b)


def _pn_boundaries(ax, c_plus: float, c_minus: float, k: int, legend: bool = False) -> None:
    """Dashed ``C+-`` (rollback onset), dotted ``C*+-`` (zeroing onset)."""
    ax.axvline(c_plus, color="tab:blue", ls="--", lw=1.6, label=f"$C^+$ = {c_plus}")
    ax.axhline(c_minus, color="tab:red", ls="--", lw=1.6, label=f"$C^-$ = {c_minus}")
    ax.axvline(threshold(c_plus, k), color="tab:blue", ls=":", lw=1.2, label="$C^{*+}$")
    ax.axhline(threshold(c_minus, k), color="tab:red", ls=":", lw=1.2, label="$C^{*-}$")
    if legend:
        ax.legend(loc="upper left", fontsize=8)


def fig3_data(params: Fig3Params) -> tuple[SimplexField, SimplexField]:
    """(local zoom, full simplex) fields."""
    cx, cy = CORNERS.mean(0)
    z = np.linspace(-params.zoom, params.zoom, params.grid)
    local = simplex_field(cx + z, cy + z, params)
    full = simplex_field(np.linspace(0, 1, params.grid), np.linspace(0, SQ3 / 2, params.grid),
                         params)
    return local, full


#: (label, where in its region, where the text goes or None to write it there)
FIG3_GLOBAL_LABELS = (("G-I", (0.51, 0.28), (0.60, 0.36)), ("G-II,r", (0.40, 0.27), (0.30, 0.20)),
                      ("G-II", (0.35, 0.33), (0.22, 0.40)), ("G-III,r", (0.74, 0.30), None),
                      ("G-III", (0.15, 0.05), None), ("G-III", (0.85, 0.05), None))
FIG3_LOCAL_LABELS = (("L-II", (0.53, 0.27), None), ("L-III", (0.62, 0.17), None))


def plot_fig3(params: Fig3Params = Fig3Params(),
              data: tuple[SimplexField, SimplexField] | None = None):
    """Fig 3: (a) local regimes around the centroid, (b) global regimes, coloured by Delta J."""
    local, full = data if data is not None else fig3_data(params)
    vmax = float(np.nanmax(np.abs(np.concatenate([local.delta_j.ravel(),
                                                  full.delta_j.ravel()]))))
    fig, axes = _figure(12, 5.2, 2)
    k = params.T
    for ax, f in zip(axes[0], (local, full)):
        im = ax.pcolormesh(f.x, f.y, f.delta_j, cmap=CMAP, vmin=-vmax, vmax=vmax,
                           shading="auto")
        fig.colorbar(im, ax=ax, shrink=0.85, label="$\\Delta\\hat J^{FiberPO} = J(r) - J(1)$")
        ax.set_aspect("equal")
        ax.plot(*CORNERS.mean(0), "k+", ms=10, mew=2)
    ax = axes[0, 0]
    ax.contourf(local.x, local.y, (local.local == 2).astype(float), [0.5, 1.5],
                colors="darkviolet", alpha=0.10)
    ax.contour(local.x, local.y, (local.local == 0).astype(float), [0.5], colors="teal",
               linewidths=1.6)
    ax.contour(local.x, local.y, (local.local == 2).astype(float), [0.5], colors="darkviolet",
               linewidths=1.0)
    ax.contour(local.x, local.y, local.n_agg, [params.c_minus], colors="tab:red",
               linestyles="--", linewidths=1.4)
    ax.contour(local.x, local.y, local.p_agg, [params.c_plus], colors="tab:blue",
               linestyles="--", linewidths=1.4)
    ax.plot([], [], color="teal", label="L-I / L-II boundary")
    ax.plot([], [], color="darkviolet", label="L-II / L-III boundary")
    ax.plot([], [], "--", color="tab:red", label=f"N = $C^-$ = {params.c_minus}")
    ax.plot([], [], "--", color="tab:blue", label=f"P = $C^+$ = {params.c_plus}")
    ax.legend(loc="lower left", fontsize=7)
    cx, cy = CORNERS.mean(0)
    ax.annotate("L-I", (cx, cy), (cx + 0.04, cy + 0.08), fontsize=11, weight="bold",
                arrowprops={"arrowstyle": "->"}, bbox=BOX)
    _write_labels(ax, local, local.local, rg.LOCAL_LABELS, FIG3_LOCAL_LABELS, 10)
    ax.set(xlim=(cx - params.zoom, cx + params.zoom), ylim=(cy - params.zoom, cy + params.zoom),
           xticks=[], yticks=[], title=f"(a) local L-I/II/III (zoom $\\pm${params.zoom})")

    ax = axes[0, 1]
    tri = np.vstack([CORNERS, CORNERS[:1]])
    ax.plot(tri[:, 0], tri[:, 1], "k", lw=1.2)
    for i, (dx, dy, ha) in enumerate(((-0.02, -0.03, "right"), (0.02, -0.03, "left"),
                                      (0.0, 0.03, "center"))):
        ax.text(CORNERS[i, 0] + dx, CORNERS[i, 1] + dy, f"$r_{i + 1}$ = {k}", ha=ha)
    for field, c, color, name in ((full.n_agg, params.c_minus, "tab:red", "N"),
                                  (full.p_agg, params.c_plus, "tab:blue", "P")):
        ax.contour(full.x, full.y, field, [c], colors=color, linewidths=1.6)
        ax.contour(full.x, full.y, field, [threshold(c, k)], colors=color, linestyles=":",
                   linewidths=1.4)
        sym = "-" if name == "N" else "+"
        ax.plot([], [], color=color, label=f"{name} = $C^{sym}$ = {c}")
        ax.plot([], [], ":", color=color,
                label=f"{name} = $C^{{*{sym}}}$ = {threshold(c, k):.3g}")
    ax.legend(loc="upper left", fontsize=7)
    _write_labels(ax, full, full.global_, rg.GLOBAL_LABELS, FIG3_GLOBAL_LABELS, 8)
    ax.set(xlim=(-0.08, 1.08), ylim=(-0.08, 0.95), xticks=[], yticks=[],
           title="(b) global G-I, G-II,r, G-II, G-III,r, G-III")
    ax.axis("off")
    return fig, axes


def _write_labels(ax, f: SimplexField, labels: np.ndarray, names: tuple[str, ...],
                  spec: tuple, fontsize: int) -> None:
    xx, yy = np.meshgrid(f.x, f.y)
    for lab, target, text_at in spec:
        xy = nearest_in_region(xx, yy, labels, names.index(lab), target)
        if text_at is None:
            ax.text(*xy, lab, ha="center", va="center", fontsize=fontsize, weight="bold", bbox=BOX)
        else:
            ax.annotate(lab, xy, text_at, ha="center", va="center", fontsize=fontsize,
                        weight="bold", bbox=BOX, arrowprops={"arrowstyle": "->"})


def plot_fig4(params: Fig4Params = Fig4Params(), data: DriftPath | None = None,
              weight_map: BaseWeightMap | None = None):
    """Fig 4: (a) path in ``(P, N)`` over ``log w``, (b) fiber correction at ``t_bar``,
    (c) per-token objective, (d) total objective, FiberPO against GRPO (same eps)."""
    d = data if data is not None else drift_path(params)
    wm = weight_map if weight_map is not None else fig4_weight_map(params)
    marks = drift_markers(d, params)
    fig, axes = _figure(12, 9.5, 2, 2)

    ax = axes[0, 0]
    im = ax.pcolormesh(wm.p, wm.n, wm.log_w, cmap=CMAP, vmin=-0.22, vmax=0.22, shading="auto")
    fig.colorbar(im, ax=ax, label="$\\log w$")
    _pn_boundaries(ax, params.c_plus, params.c_minus, params.k, legend=True)
    pos, neg = d.t >= 0, d.t <= 0
    ax.plot(d.p_agg[pos], d.n_agg[pos], "k-", lw=1.6)
    ax.plot(d.p_agg[neg], d.n_agg[neg], "k--", lw=1.6)
    for tv in np.arange(-4, 5):
        i = int(np.flatnonzero(d.t == tv)[0])
        if d.n_agg[i] < params.pn_lim[1] and d.p_agg[i] < params.pn_lim[1]:
            ax.plot(d.p_agg[i], d.n_agg[i], "ko", ms=8 if tv == 0 else 4)
            ax.annotate("t=0" if tv == 0 else f"{tv:+d}", (d.p_agg[i], d.n_agg[i]),
                        (5, -10 if tv < 0 else 4), textcoords="offset points", fontsize=8)
    ax.set(xlim=params.pn_lim, ylim=params.pn_lim, xlabel="$P = \\log s^+$",
           ylabel="$N = \\log s^-$", title=f"(a) $\\log w$ + path (k = {params.k})")

    ax = axes[0, 1]
    i = int(np.flatnonzero(d.t == params.t_bar)[0])
    idx = np.arange(params.T)
    orange = d.log_w[i] - d.denom[i]
    ax.bar(idx - 0.2, d.log_r[i], 0.4, color="cornflowerblue", alpha=0.6,
           label="raw $\\log r_i$")
    ax.bar(idx + 0.2, d.numer[i], 0.4, color="tab:red", alpha=0.6,
           label="clip(numer$_i$) = clip($l_i u_i$, $\\epsilon$)")
    ax.bar(idx + 0.2, orange, 0.4, bottom=d.numer[i], color="tab:orange", alpha=0.6,
           label="$\\log w$ - clip(denom$_i$)")
    ax.plot(idx + 0.2, d.log_g[i], "k_", ms=12, mew=2, label="$\\log(w \\tilde r_i)$")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set(xlabel="token index i", ylabel="log-space correction", xticks=idx,
           title=f"(b) fiber correction at t = {params.t_bar}")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    for tok, color, ls in zip(params.tokens, ("tab:red", "tab:blue"), ("-", "--")):
        ax.plot(d.t, d.j_tok_fiberpo[:, tok], color=color, ls=ls, lw=2,
                label=f"FiberPO tok{tok}: $\\Delta$ = {params.delta[tok]:+.3f}")
        ax.plot(d.t, d.j_tok_grpo[:, tok], color="0.55", ls=ls, lw=0.9, label=f"GRPO tok{tok}")
    ax.set(ylabel="$w \\cdot \\tilde r_i \\cdot \\hat A_i$", title="(c) per-token objective")
    ax.legend(fontsize=8, loc="lower left", ncols=2)

    ax = axes[1, 1]
    ax.plot(d.t, d.j_fiberpo, color="tab:blue", lw=2.2, label="$\\hat J^{FiberPO}$")
    ax.plot(d.t, d.j_grpo, color="0.4", ls="--", lw=1.6, label="GRPO")
    ax.set(ylabel="$(1/T) \\sum_i \\hat J_i$", title="(d) total objective")
    ax.legend(fontsize=9, loc="center right")
    ax.text(0.55, 0.06, f"T={params.T}, k={params.k}, $\\epsilon$={params.eps}, "
            f"$C^+$={params.c_plus}, $C^-$={params.c_minus}", transform=ax.transAxes,
            ha="center", fontsize=8, bbox=BOX)
    for ax in axes[1]:
        _drift_marks(ax, marks)
        ax.axvline(0, color="0.2", lw=1.5)
        ax.set(xlim=params.t_lim, xlabel="t")
    return fig, axes


def _drift_marks(ax, marks: dict[str, np.ndarray]) -> None:
    for tv in marks["eps"]:
        ax.axvline(tv, color="0.85", lw=0.7, zorder=0)
    for key, color, ls, text in (("minus_rollback", "tab:red", "-", "N=$C^-$"),
                                 ("minus_zeroed", "tab:red", ":", None),
                                 ("plus_rollback", "tab:blue", "-", "P=$C^+$"),
                                 ("plus_zeroed", "tab:blue", ":", None)):
        for tv in marks[key]:
            ax.axvline(tv, color=color, ls=ls, lw=1.0, alpha=0.6)
            if text:
                ax.text(tv, 0.99, text, color=color, fontsize=8, ha="center", va="top",
                        transform=ax.get_xaxis_transform(), bbox={"fc": "white", "ec": "none",
                                                                      "alpha": 0.7, "pad": 0.5})


def fig4_weight_map(params: Fig4Params) -> BaseWeightMap:
    g = np.linspace(*params.pn_lim, params.grid)
    return base_weight_map(g, g, c_plus=params.c_plus, c_minus=params.c_minus, k=params.k)


def make_paper_figures(out_dir: str | Path, *, fig2: Fig2Params = Fig2Params(),
                       fig3: Fig3Params = Fig3Params(), fig4: Fig4Params = Fig4Params(),
                       dpi: int = 150) -> list[Path]:
    """Write ``fig2.png``, ``fig3.png``, ``fig4.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (fig, _) in (("fig2", plot_fig2(fig2)), ("fig3", plot_fig3(fig3)),
                           ("fig4", plot_fig4(fig4))):
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
