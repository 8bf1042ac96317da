"""What a study's evaluation runs say, method by method against GRPO: the verdict table.

For each score (a key of each run's ``final``) and each method:

* the paired difference to GRPO: the median over shared seeds of the method's score minus
  GRPO's on the same seed, with its 95% percentile-bootstrap interval
  (:func:`fibration_theory.simulations.stats.paired_difference`);
* the probability of improvement over GRPO with its stratified-bootstrap interval
  (:mod:`fibration_theory.simulations.rliable_metrics`; for a lower-is-better score, the
  probability of a lower score);
* the verdict: ``better`` / ``worse`` than GRPO when the difference's interval excludes 0
  and at least :data:`MIN_SEEDS` seeds are shared (a percentile bootstrap over fewer pairs
  is little more than their range), else ``not resolved``.

Written to ``DIR/verdict.md`` and ``DIR/verdict.json`` and printed at the end of every study
command, with the paths of the figures, among them ``verdict_poi.png`` (the probabilities of
improvement) and ``verdict_profiles.png`` (rliable's performance profiles of the first score).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fibration_theory.simulations import rliable_metrics as rm
from fibration_theory.simulations import stats
from fibration_theory.simulations.plots import method_color, save
from fibration_theory.simulations.streams import numpy_rng

from fibration_theory.atomic import write_text

Runs = list[dict[str, Any]]

#: the reference method
REFERENCE = "grpo"


@dataclasses.dataclass(frozen=True)
class Score:
    """One evaluation score of the verdict table."""

    key: str
    #: what it is, in words (with its unit)
    description: str
    lower_is_better: bool = False
    #: the score of a run (default: ``float(run["final"][key])``)
    value: Callable[[dict[str, Any]], float] | None = None

    def of(self, run: dict[str, Any]) -> float:
        return self.value(run) if self.value else float(run["final"][self.key])


def _by_seed(runs: Runs) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["spec"]["method"], {})[int(r["spec"]["seed"])] = r
    return out


#: fewest shared seeds for a ``better``/``worse`` verdict
MIN_SEEDS = 5


def _word(low: float, high: float, lower_is_better: bool, n: int) -> str:
    if n < MIN_SEEDS:
        return f"not resolved (fewer than {MIN_SEEDS} shared seeds)"
    if low > 0:
        return "worse" if lower_is_better else "better"
    if high < 0:
        return "better" if lower_is_better else "worse"
    return "not resolved (the interval holds 0)"


def verdict(runs: Runs, scores: Sequence[Score], *, study: str, note: str = "") -> dict:
    """The verdict of ``runs`` (evaluation runs, methods sharing seeds with GRPO) on each of
    ``scores``: ``{"study", "note", "reference", "scores": [{"key", "description",
    "lower_is_better", "rows": [{"method", "seeds", "paired_diff": {"median", "ci_low",
    "ci_high"}, "poi": {"point", "ci_low", "ci_high"}, "verdict"}]}]}``."""
    by = _by_seed(runs)
    ref = by.get(REFERENCE, {})
    tables = []
    for sc in scores:
        rows = []
        for m in sorted(by):
            if m == REFERENCE:
                continue
            shared = sorted(set(by[m]) & set(ref))
            if not shared:
                continue
            a = np.array([sc.of(by[m][s]) for s in shared])
            b = np.array([sc.of(ref[s]) for s in shared])
            d = stats.paired_difference(a, b, "median", rng=numpy_rng(f"verdict/{sc.key}/{m}"))
            sign = -1.0 if sc.lower_is_better else 1.0
            p, plo, phi = rm.poi_interval(sign * a, sign * b,
                                          rng=numpy_rng(f"verdict/poi/{sc.key}/{m}"))
            rows.append({"method": m, "seeds": d.n,
                         "paired_diff": {"median": d.point, "ci_low": d.low, "ci_high": d.high},
                         "poi": {"point": p, "ci_low": plo, "ci_high": phi},
                         "verdict": _word(d.low, d.high, sc.lower_is_better, d.n)})
        tables.append({"key": sc.key, "description": sc.description,
                       "lower_is_better": sc.lower_is_better, "rows": rows})
    return {"study": study, "note": note, "reference": REFERENCE, "scores": tables}


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def markdown(v: dict, figures: Sequence[str] = ()) -> str:
    """The verdict as Markdown: the note, one table per score, the figures."""
    parts = [f"## Verdict: {v['study']}, each method against {v['reference']}"]
    if v.get("note"):
        parts.append(f"**{v['note']}**")
    for t in v["scores"]:
        better = "lower" if t["lower_is_better"] else "higher"
        head = (f"| method | paired diff. vs {v['reference']} [95% CI] | P(improvement) "
                "[95% CI] | seeds | verdict |")
        lines = [f"`{t['key']}`: {t['description']} ({better} is better)", "", head,
                 "|---|---|---|---|---|"]
        for r in t["rows"]:
            d, p = r["paired_diff"], r["poi"]
            lines.append(f"| {r['method']} | {_num(d['median'])} [{_num(d['ci_low'])}, "
                         f"{_num(d['ci_high'])}] | {p['point']:.2f} [{p['ci_low']:.2f}, "
                         f"{p['ci_high']:.2f}] | {r['seeds']} | {r['verdict']} |")
        if not t["rows"]:
            lines.append(f"| (no method shares seeds with {v['reference']}) | | | | |")
        parts.append("\n".join(lines))
    if figures:
        parts.append("Figures:\n" + "\n".join(f"- {f}" for f in figures))
    return "\n\n".join(parts) + "\n"


def write(out: Path, v: dict, figures: Sequence[str] = ()) -> str:
    """``out/verdict.md`` and ``out/verdict.json`` (atomically), listing ``figures`` (paths
    inside ``out``) as they are, so the files stay right when the folder moves; returns the
    Markdown to print, with the figures as ``out/...`` paths."""
    write_text(Path(out) / "verdict.md", markdown(v, figures))
    write_text(Path(out) / "verdict.json", json.dumps({**v, "figures": list(figures)}, indent=1))
    return markdown(v, [str(Path(out) / f) for f in figures])


# ------------------------------------------------------------------------------- figures
def plot_poi(v: dict):
    """Probability of improvement over the reference per method and score, with its 95%
    stratified-bootstrap interval (0.5: no difference)."""
    tables = [t for t in v["scores"] if t["rows"]]
    fig, axes = plt.subplots(1, max(len(tables), 1), squeeze=False, layout="constrained",
                             figsize=(4.6 * max(len(tables), 1),
                                      0.32 * max((len(t["rows"]) for t in tables), default=1)
                                      + 1.6))
    for ax, t in zip(axes[0], tables):
        names = [r["method"] for r in t["rows"]]
        pos = np.arange(len(names))
        for k, r in enumerate(t["rows"]):
            p = r["poi"]
            ax.errorbar([p["point"]], [k], xerr=[[p["point"] - p["ci_low"]],
                                                 [p["ci_high"] - p["point"]]],
                        fmt="o", color=method_color(r["method"]), capsize=3)
        ax.axvline(0.5, color="k", ls="--", lw=1)
        ax.set_yticks(pos, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        what = "lower" if t["lower_is_better"] else "higher"
        ax.set_xlabel(f"P({what} {t['key']} than {v['reference']})  [probability]", fontsize=8)
    fig.suptitle(f"{v['study']}: probability of improvement over {v['reference']} (rliable; "
                 "95% stratified bootstrap CI)", fontsize=9)
    return fig, axes


def plot_profiles(runs: Runs, score: Score, title: str = ""):
    """rliable's performance profile of ``score``: the fraction of a method's runs scoring
    above ``tau``, against ``tau``, with pointwise 95% stratified-bootstrap bands."""
    by = _by_seed(runs)
    vals = {m: np.array([score.of(r) for r in rs.values()]) for m, rs in sorted(by.items())}
    allv = np.concatenate(list(vals.values()))
    taus = np.linspace(allv.min(), allv.max(), 60)
    fig, ax = plt.subplots(figsize=(6.8, 3.8), layout="constrained")
    for m, x in vals.items():
        f, lo, hi = rm.profile_interval(x, taus, rng=numpy_rng(f"verdict/profile/{m}"))
        c = method_color(m)
        ax.plot(taus, f, color=c, lw=1.6, label=m, ls="--" if m == REFERENCE else "-")
        ax.fill_between(taus, lo, hi, color=c, alpha=0.07, lw=0)
    ax.set_xlabel(f"tau  [{score.key}; {score.description}]", fontsize=8)
    ax.set_ylabel("fraction of runs with score > tau", fontsize=8)
    fig.legend(fontsize=7, loc="outside right upper")
    ax.set_title(title or f"Performance profiles ({score.key}; rliable, 95% CI)", fontsize=9)
    return fig, ax


def make_figures(out: Path, runs: Runs, v: dict, score: Score, prefix: str = "") -> list[Path]:
    """``out/figures/{prefix}verdict_poi.png`` and ``{prefix}verdict_profiles.png``."""
    if not runs or not any(t["rows"] for t in v["scores"]):
        return []
    fig_dir = Path(out) / "figures"
    return [save(plot_poi(v)[0], fig_dir / f"{prefix}verdict_poi.png"),
            save(plot_profiles(runs, score, f"{v['study']}: performance profiles of "
                               f"{score.key} (rliable, 95% CI)")[0],
                 fig_dir / f"{prefix}verdict_profiles.png")]
