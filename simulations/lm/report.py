"""``summary.json`` and figures of ``fibration lm``, made from the run files alone.

``summary.json``::

    {"domains": [names],
     "methods": {METHOD: {"reward_before", "reward_after", "improvement", "tokens",
                          "seeds", "reward_after_ci", "improvement_ci", "paired_vs_grpo",
                          "per_domain": {DOMAIN: {"before", "after"}}, "mean_tv/...", ...}},
     "tables": {"reward_after": ..., "improvement": ...},   # fibration_theory.simulations.summary.table
     "warm_start": {...}, "plan": {...}, "run": {...}}

Values per method are medians over seeds; intervals are 95% percentile-bootstrap intervals;
``paired_vs_grpo`` is the median over seeds of the method's final reward minus GRPO's on the
same seed (same warm start, same held-out problems, same evaluation stream).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fibration_theory.simulations import stats
from fibration_theory.simulations import summary as sm
from fibration_theory.simulations import tuning as tu
from fibration_theory.simulations import verdict as vd
from fibration_theory.simulations.plots import band_plot, legend_outside, method_color, save
from fibration_theory.simulations.plots import rng as plot_rng
from fibration_theory.simulations.runner import _jsonable, load_runs
from fibration_theory.simulations.sensitivity import make_sensitivity_figures

Runs = list[dict[str, Any]]

#: per-run diagnostics averaged over updates, reported per method (median over seeds);
#: ``mean_loss/*`` are the objective's own metrics during the minibatch steps (the fraction
#: of tokens clipped, of trajectories or nodes in rollback), the others are measured on the
#: whole batch after the update
DIAGNOSTICS = ("mean_tv/token", "mean_tv/trajectory", "mean_tv/group", "mean_tv/domain",
               "mean_kl/tj", "mean_regime/G-I", "mean_regime/G-II,r", "mean_regime/G-II",
               "mean_regime/L-I", "mean_regime/L-III", "mean_loss/clip_frac",
               "mean_loss/rollback_frac/trajectory", "mean_loss/rollback_frac/group",
               "mean_loss/rollback_frac/domain", "mean_entropy", "mean_response_length",
               "sec_per_update")


#: the scores of the LM study's verdict (:mod:`fibration_theory.simulations.verdict`)
SCORES = (vd.Score("auc_reward", "mean held-out reward over the run, the tuning score "
                   "[fraction correct]"),
          vd.Score("reward_after", "held-out reward after the token budget [fraction correct]"))


def build_summary(out: Path, plan: Any) -> dict[str, Any]:
    """The ``summary.json`` dict of the runs of ``plan`` under ``out``."""
    runs = [r for r in load_runs(out, "lm", role="eval") if r["spec"]["variant"] == plan.name]
    domains = list(plan.rl.tasks.domains)
    tables = {}
    methods: dict[str, Any] = {}
    if runs:
        tables["reward_after"] = sm.table(runs, "reward_after", "mean reward on held-out "
                                          "problems after the token budget", lower_is_better=False,
                                          paired=True)
        tables["improvement"] = sm.table(runs, "improvement", "reward after minus reward before "
                                         "(same seed)", lower_is_better=False, paired=True)
    for name, by_seed in sm.by_method(runs).items():
        rs = list(by_seed.values())

        def med(key: str, rs=rs) -> float:
            return float(np.median([float(r["final"][key]) for r in rs]))

        after = tables["reward_after"]["methods"][name]
        imp = tables["improvement"]["methods"][name]
        entry = {"reward_before": med("reward_before"), "reward_after": med("reward_after"),
                 "improvement": med("improvement"), "tokens": int(med("tokens")),
                 "seeds": len(rs), "reward_after_ci": [after["ci_low"], after["ci_high"]],
                 "improvement_ci": [imp["ci_low"], imp["ci_high"]],
                 "improved_seeds": int(sum(r["final"]["improvement"] > 0 for r in rs)),
                 "per_domain": {d: {"before": med(f"reward/{d}_before"),
                                    "after": med(f"reward/{d}_after")} for d in domains}}
        if "paired_vs_grpo" in after:
            entry["paired_vs_grpo"] = after["paired_vs_grpo"]
        entry.update({k: med(k) for k in DIAGNOSTICS if k in rs[0]["final"]})
        methods[name] = entry
    warm: dict[str, Any] = {"source": plan.rl.source}
    folder = plan.rl.warm_folder if plan.warm is not None else None
    meta = Path(out) / folder / "meta.json" if folder else None
    if meta is not None and meta.exists():
        record = json.loads(meta.read_text(encoding="utf-8"))
        warm.update({k: record[k] for k in ("steps", "seconds", "reached_band")},
                    final_check=record["history"][-1] if record["history"] else None)
    return {"domains": domains, "methods": methods, "tables": tables, "warm_start": warm,
            "plan": _jsonable(dataclasses.asdict(plan))}


def _eval_curve(run: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [p for p in run["curve"] if key in p]
    return (np.array([p["tokens"] for p in pts], dtype=float),
            np.array([p[key] for p in pts], dtype=float))


def plot_reward_curves(runs: Runs, domains: list[str]):
    """Held-out reward against sampled tokens per method (median over seeds, 95% band):
    one panel for the mean over domains, one per domain."""
    by = sm.by_method(runs)
    keys = ["reward"] + [f"reward/{d}" for d in domains]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), sharey=True)
    top = min(float(r["curve"][-1]["tokens"]) for r in runs)
    grid = np.linspace(0, top, 40)
    # a run of a few hundred tokens (a pretrained model on a CPU) is not drawn in thousands
    scale, unit = (1e3, "thousands") if top >= 5_000 else (1.0, "tokens")
    for ax, key in zip(np.atleast_1d(axes), keys):
        for name in sorted(by):
            curves = [np.interp(grid, *_eval_curve(r, key)) for r in by[name].values()]
            band_plot(ax, grid / scale, curves, name, method_color(name), "lm" + key + name)
        ax.set_title("mean over domains" if key == "reward" else key.split("/")[1], fontsize=9)
        ax.set_xlabel(f"sampled tokens  [{unit}]")
    np.atleast_1d(axes)[0].set_ylabel("held-out reward  [fraction correct]")
    legend_outside(np.atleast_1d(axes)[-1])
    fig.suptitle("Small LM: reward vs sampled tokens (median over seeds, 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_level_tv(runs: Runs):
    """Mean per-update sample TV at each level of the hierarchy, per method: median over
    seeds with its 95% percentile-bootstrap interval."""
    by = sm.by_method(runs)
    levels = ["token", "trajectory", "group", "domain"]
    names = sorted(by)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        meds, lo, hi = [], [], []
        for lv in levels:
            vals = [r["final"][f"mean_tv/{lv}"] for r in by[name].values()
                    if np.isfinite(r["final"].get(f"mean_tv/{lv}", np.nan))]
            if not vals:
                meds.append(np.nan)
                lo.append(0.0)
                hi.append(0.0)
                continue
            est = stats.bootstrap_ci(vals, "median", rng=plot_rng(f"lm_level_tv/{name}/{lv}"))
            meds.append(est.point)
            lo.append(est.point - est.low)
            hi.append(est.high - est.point)
        ax.bar(np.arange(len(levels)) + k * width, meds, width, yerr=[lo, hi], capsize=2,
               label=name, color=method_color(name))
    ax.set_xticks(np.arange(len(levels)) + 0.4 - width / 2, levels)
    ax.set_ylabel("sample TV per update  [median over seeds]")
    ax.set_title("Per-level sample TV of each update (median over seeds, 95% CI)", fontsize=9)
    legend_outside(ax)
    fig.tight_layout()
    return fig, ax


def make_lm_figures(out: Path) -> list[Path]:
    """Write the figures of the LM runs under ``out`` to ``out/figures``; returns the paths."""
    runs = load_runs(out, "lm", role="eval")
    if not runs:
        return []
    plan = json.loads((Path(out) / "plan.json").read_text(encoding="utf-8"))
    runs = [r for r in runs if r["spec"]["variant"] == plan["name"]]
    domains = list(plan["rl"]["tasks"]["domains"])
    fig_dir = Path(out) / "figures"
    fig_dir.mkdir(exist_ok=True)
    made = []
    for name, (fig, _) in (("lm_reward.png", plot_reward_curves(runs, domains)),
                           ("lm_level_tv.png", plot_level_tv(runs))):
        made.append(save(fig, fig_dir / name))
    v = vd.verdict(runs, SCORES, study=f"small-LM study ({plan['name']})")
    made += vd.make_figures(Path(out), runs, v, SCORES[0], prefix="lm_")
    return made + make_sensitivity_figures(Path(out))


def _ci(x: float, lo_hi: list[float]) -> str:
    return f"{x:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def render_markdown(summary: dict[str, Any]) -> str:
    """The tables of ``docs/results-lm.md`` from a ``summary.json`` (pasted, not retyped)."""
    methods = summary["methods"]
    order = sorted(methods, key=lambda m: -methods[m]["reward_after"])
    tuning = summary.get("tuning") or {}
    head = ("| method | tuned | reward before | reward after [95% CI] | improvement [95% CI] "
            "| improved seeds | paired vs grpo [95% CI] | tokens |")
    lines = [head, "|" + "---|" * 8]
    for m in order:
        e = methods[m]
        p = e.get("paired_vs_grpo")
        paired = "(reference)" if p is None else _ci(p["median"], [p["ci_low"], p["ci_high"]])
        lines.append(f"| {m} | {tu.label(tuning.get(m, {}).get('factors', {}))} | "
                     f"{e['reward_before']:.3f} | {_ci(e['reward_after'], e['reward_after_ci'])} | "
                     f"{_ci(e['improvement'], e['improvement_ci'])} | "
                     f"{e['improved_seeds']}/{e['seeds']} | {paired} | {e['tokens']:,} |")
    doms = summary["domains"]
    lines += ["", "| method | " + " | ".join(f"{d} before -> after" for d in doms) + " |",
              "|" + "---|" * (len(doms) + 1)]
    for m in order:
        pd = methods[m]["per_domain"]
        lines.append(f"| {m} | " + " | ".join(f"{pd[d]['before']:.3f} -> {pd[d]['after']:.3f}"
                                              for d in doms) + " |")
    diag = [k for k in DIAGNOSTICS if any(k in methods[m] for m in methods)]
    lines += ["", "| method | " + " | ".join(k.replace("mean_", "") for k in diag) + " |",
              "|" + "---|" * (len(diag) + 1)]
    for m in order:
        lines.append(f"| {m} | " + " | ".join("–" if methods[m].get(k) is None else
                                              f"{methods[m][k]:.3g}" for k in diag) + " |")
    if tuning:
        lines += ["", "Tuning (score: mean held-out reward over the run, on the tuning seeds):",
                  "", tu.markdown(tuning).rstrip("\n")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Markdown tables of a `fibration lm` summary")
    parser.add_argument("results", type=Path, help="a `fibration lm` folder or its summary.json")
    args = parser.parse_args(argv)
    path = args.results / "summary.json" if args.results.is_dir() else args.results
    print(render_markdown(json.loads(path.read_text(encoding="utf-8"))), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
