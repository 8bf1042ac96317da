"""Sensitivity of each method to its tuned parameters, drawn from ``tuning.json`` alone.

One figure per method, one panel per tuned parameter: every tuning configuration's mean
score (over the tuning seeds) as a point at that parameter's value, the mean score per value
as a line (in an orthogonal-array design each value's mean averages every level of the other
parameters equally: the parameter's main effect), the chosen configuration as a star and the
grid-edge checks (that parameter moved beyond its range, the others as chosen; never chosen)
as hollow points. ``make_sensitivity_figures(root)`` writes ``root/figures/tuning_METHOD.png``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fibration_theory.simulations.plots import method_color, save
from matplotlib.ticker import NullFormatter


def level_means(record: Mapping[str, Any], param: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, mean score per value)`` of ``param`` over the scored configurations of a
    method's tuning record, sorted by value (shapes ``(n_values,)``)."""
    by: dict[float, list[float]] = {}
    for e in record["configs"]:
        if e["score"] is not None:
            by.setdefault(float(e["values"][param]), []).append(float(e["score"]))
    xs = np.array(sorted(by))
    return xs, np.array([np.mean(by[x]) for x in xs])


def plot_sensitivity(method: str, record: Mapping[str, Any], metric: str = ""):
    """The sensitivity figure of one method's tuning record; returns ``(fig, axes)``."""
    params = list(record["parameters"])
    fig, axes = plt.subplots(1, len(params), figsize=(max(5.2, 3.1 * len(params) + 0.6), 3.4),
                             squeeze=False, sharey=True, layout="constrained")
    color = method_color(method)
    chosen = record["chosen"]
    for ax, p in zip(axes[0], params):
        pts = [(e["values"][p], e["score"]) for e in record["configs"] if e["score"] is not None]
        ax.scatter(*zip(*pts), s=16, color=color, alpha=0.55, lw=0, label="configuration")
        xs, means = level_means(record, p)
        ax.plot(xs, means, "-", color=color, lw=1.6, label="mean per value")
        edge = [(e["values"][p], e["score"]) for e in record.get("edge", [])
                if e["parameter"] == p and e["score"] is not None]
        if edge:
            ax.scatter(*zip(*edge), s=22, facecolors="none", edgecolors=color,
                       label="beyond the edge (never chosen)")
        ax.scatter([chosen["values"][p]], [chosen["score"]], marker="*", s=110, color="k",
                   zorder=3, label="chosen")
        ax.axvline(record["defaults"][p], color="0.6", ls=":", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(xs) <= 6:  # the levels themselves as ticks
            ax.set_xticks(xs, [f"{x:.3g}" for x in xs], fontsize=7)
        ax.set_xlabel(f"{p}  [dotted: default {record['defaults'][p]:.3g}]", fontsize=8)
    axes[0][0].set_ylabel(f"mean tuning score{f'  [{metric}]' if metric else ''}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    seeds = len(record.get("tune_seeds", []))
    fig.suptitle(f"{method}: tuning sensitivity ({record['design']}, {seeds} tuning "
                 f"seed{'s' if seeds != 1 else ''})", fontsize=9)
    return fig, axes


def make_sensitivity_figures(root: Path) -> list[Path]:
    """``root/figures/tuning_METHOD.png`` for every method of ``root/tuning.json`` (none
    without it, or for a record of the earlier joint-factor format)."""
    path = Path(root) / "tuning.json"
    if not path.exists():
        return []
    tuning = json.loads(path.read_text(encoding="utf-8"))
    made = []
    for m, rec in sorted(tuning.items()):
        if "configs" not in rec or not any(e["score"] is not None for e in rec["configs"]):
            continue
        fig, _ = plot_sensitivity(m, rec, rec.get("metric", ""))
        made.append(save(fig, Path(root) / "figures" / f"tuning_{m}.png"))
    return made
