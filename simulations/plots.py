"""Plot helpers shared by the figures of every study (no study imports another's figures).

Every curve is the median over seeds with a pointwise 95% percentile-bootstrap band; every
bar carries its 95% bootstrap interval; each band or bar draws from its own named stream.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fibration_theory.simulations import stats
from fibration_theory.simulations.streams import numpy_rng

Runs = list[dict[str, Any]]

#: fixed colours so a method looks the same in every figure (the one method -> colour map)
COLORS = {
    "fiberpo": "#d62728", "fiberpo_domain": "#ff7f0e", "fiberpo_domain_levels": "#8c564b",
    "grpo": "#1f77b4", "dapo": "#17becf", "gspo": "#2ca02c", "ppo_clip": "#9467bd",
    "cispo": "#e377c2", "gmpo": "#7f7f7f", "apc": "#bcbd22",
    "fiberpo_clamp": "#000080", "tv_trpo": "#000000", "apc_relaxed": "#dbdb8d",
    "depth0": "#d62728", "depth1": "#ff9896", "depth2": "#ff7f0e", "depth3": "#8c564b",
    "depth4": "#c49c94",
}

#: colours of methods not in ``COLORS`` (picked by a hash of the name, never by rank)
_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252",
          "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b",
          "#ce6dbd", "#9c9ede", "#cedb9c", "#e7cb94", "#e7969c", "#de9ed6")


def rng(tag: str) -> np.random.Generator:
    """The bootstrap stream of the band or bar named ``tag`` (a named stream of
    :mod:`fibration_theory.simulations.streams`)."""
    return numpy_rng(tag)


def method_color(name: str) -> str:
    """The colour of method ``name``, the same in every figure: ``COLORS[name]``, else one of
    ``_SPARE`` chosen by a checksum of the name (colours follow the method, never its rank)."""
    if name in COLORS:
        return COLORS[name]
    return _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def group_runs(runs: Runs, key: str = "method") -> dict[str, Runs]:
    """``{spec[key]: runs}``."""
    out: dict[str, Runs] = {}
    for r in runs:
        out.setdefault(str(r["spec"][key]), []).append(r)
    return out


def band_plot(ax, x, curves, label, color, tag):
    """Median of ``curves [runs, points]`` over runs at ``x``, with its pointwise 95%
    bootstrap band."""
    center, lo, hi = stats.curve_band(np.asarray(curves), rng=rng(tag))
    ax.plot(x, center, color=color, label=label, lw=1.6)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def ci_bars(ax, names, runs_by, value, *, horizontal=True, tag="bars", ref=None):
    """Median with 95% CI per name, as horizontal bars."""
    meds, los, his = [], [], []
    for n in names:
        est = stats.bootstrap_ci([value(r) for r in runs_by[n]], "median", rng=rng(tag + n))
        meds.append(est.point)
        los.append(est.point - est.low)
        his.append(est.high - est.point)
    pos = np.arange(len(names))
    colors = [method_color(n) for n in names]
    ax.barh(pos, meds, xerr=[los, his], color=colors, alpha=0.85, capsize=3)
    ax.set_yticks(pos, names)
    ax.invert_yaxis()
    if ref is not None:
        ax.axvline(ref, color="k", ls="--", lw=1)
    return meds


def legend_outside(ax, **kw) -> None:
    """``ax``'s legend to the right of it, outside the data (``tight_layout`` makes room)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize=kw.pop("fontsize", 7), frameon=False, **kw)


def legend_below(ax, ncol: int = 4, **kw) -> None:
    """``ax``'s legend under its x label, outside the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=ncol, frameon=False,
              fontsize=kw.pop("fontsize", 7), **kw)


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
