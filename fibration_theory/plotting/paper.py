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

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fibration_theory import regimes as rg
from fibration_theory.plotting.paper_data import *  # noqa: F401,F403  (re-exported data API)
from fibration_theory.plotting.paper_data import (
    CORNERS,
    SQ3,
    BaseWeightMap,
    DriftPath,
    Fig2Params,
    Fig3Params,
    Fig4Params,
    SimplexField,
    base_weight_map,
    drift_markers,
    drift_path,
    gagg_curves,
    nearest_in_region,
    simplex_field,
    threshold,
)

CMAP = "RdBu_r"

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
