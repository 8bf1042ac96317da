"""Figures of the experiments, made from the run files alone.

``make_figures(results_dir)`` reads ``results_dir/runs`` (and ``summary.json`` when present)
and writes ``results_dir/figures/*.png``. The ``plot_*`` functions take loaded runs and
return ``(fig, axes)``; they do no file I/O. Every curve is the median over seeds with a
pointwise 95% percentile-bootstrap band; every bar carries its 95% bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from fibration_theory.simulations import stats
from fibration_theory.simulations.plots import band_plot, legend_below, legend_outside, method_color
from fibration_theory.simulations.plots import ci_bars as _ci_bars
from fibration_theory.simulations.plots import group_runs as _group
from fibration_theory.simulations.plots import rng as _rng
from fibration_theory.simulations.plots import save as save_figure
from fibration_theory.simulations.runner import load_runs
from fibration_theory.simulations.sensitivity import make_sensitivity_figures

Runs = list[dict[str, Any]]

EXACT_ORDER = ("tv_trpo", "apc", "apc_relaxed", "ppo_clip", "grpo", "gspo", "fiberpo")


# ---------------------------------------------------------------- exact settings
def plot_exact_curves(runs: Runs):
    """Normalised suboptimality per iteration, one panel per (environment, gamma)."""
    variants = sorted({r["spec"]["variant"] for r in runs}, key=_variant_key)
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.6), squeeze=False)
    for ax, v in zip(axes[0], variants):
        by = _group([r for r in runs if r["spec"]["variant"] == v])
        for m in [m for m in EXACT_ORDER if m in by]:
            curves = [[p["gap"] for p in r["curve"]] for r in by[m]]
            x = np.arange(len(curves[0]))
            ls = "--" if m in ("tv_trpo", "apc") else "-"
            band_plot(ax, x, curves, m, method_color(m), f"exact{v}{m}")
            ax.lines[-1].set_linestyle(ls)
        dt = by[next(iter(by))][0]["final"]["delta_trpo"]
        ax.set_title(f"{v}  (delta_TRPO = {dt:.2g})", fontsize=10)
        ax.set_xlabel("policy-iteration step")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("(J* - J) / (J* - J0)  [normalised]")
    legend_outside(axes[0][-1])
    fig.suptitle("Exact settings: exact TV-TRPO / APC at delta(APC) (dashed) vs relaxed "
                 "methods at a matched budget", fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_exact_adherence(runs: Runs):
    """Realised sample max-TV over each method's budget (1 = on the trust-region boundary)."""
    variants = sorted({r["spec"]["variant"] for r in runs}, key=_variant_key)
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.2), squeeze=False,
                             sharey=True)
    for ax, v in zip(axes[0], variants):
        by = _group([r for r in runs if r["spec"]["variant"] == v])
        names = [m for m in EXACT_ORDER if m in by]
        _ci_bars(ax, names, by, lambda r: r["final"]["mean_tv_over_budget"], tag="adh" + v, ref=1.0)
        ax.set_title(v, fontsize=10)
        ax.set_xlabel("sample max-TV / budget  [ratio]")
    fig.suptitle("Trust-region adherence (median over seeds, 95% CI); dashed: the budget",
                 fontsize=10)
    fig.tight_layout()
    return fig, axes


def _variant_key(v: str):
    env, g = v.split("-g")
    return (env != "bandit", float(g))


# ---------------------------------------------------------------- sequence study
def _token_grid(runs: Runs, n: int = 60) -> np.ndarray:
    top = min(r["curve"][-1]["tokens"] for r in runs)
    return np.linspace(0, top, n)


def _interp(run, grid, key="success"):
    t = np.array([p["tokens"] for p in run["curve"]], dtype=float)
    y = np.array([p[key] for p in run["curve"]], dtype=float)
    return np.interp(grid, t, y)


def plot_success_curves(runs: Runs, threshold: float | None = None, title: str = ""):
    """Exact success rate against sampled tokens, two panels (FiberPO family + GRPO; rest)."""
    by = _group(runs)
    grid = _token_grid(runs)
    fam = [m for m in by if m.startswith("fiberpo") or m == "grpo"]
    rest = [m for m in by if m not in fam] + (["grpo"] if "grpo" in by else [])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, names in zip(axes, (fam, rest)):
        for m in sorted(set(names)):
            band_plot(ax, grid / 1e3, [_interp(r, grid) for r in by[m]], m, method_color(m), "sc" + m)
        if threshold is not None:
            ax.axhline(threshold, color="k", ls=":", lw=1)
        ax.set_xlabel("sampled tokens  [thousands]")
        legend_below(ax, ncol=3)
    axes[0].set_ylabel("exact success rate  [fraction of prompts]")
    fig.suptitle(title or "Sequence task: success rate vs sampled tokens (median, 95% CI)",
                 fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_token_efficiency(runs: Runs, budget: float, key: str = "method", title: str = ""):
    """Tokens to threshold (censored at the budget) and success at the budget, with CIs."""
    by = _group(runs, key)
    names = sorted(by, key=lambda n: np.median([_ttt(r, budget) for r in by[n]]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(names) + 1.8))
    _ci_bars(axes[0], names, by, lambda r: _ttt(r, budget) / 1e3, tag="ttt")
    axes[0].set_xlabel("sampled tokens to hold the success threshold  [thousands]")
    _ci_bars(axes[1], names, by, lambda r: r["final"]["final_success"], tag="sab")
    axes[1].set_xlabel(f"exact success rate after {budget / 1e3:g}k tokens  [fraction]")
    fig.suptitle(title or "Token efficiency (median over evaluation seeds, 95% bootstrap CI)",
                 fontsize=10)
    fig.tight_layout()
    return fig, axes


def _ttt(run, budget):
    t = float(run["final"]["tokens_to_threshold"])
    return t if np.isfinite(t) else float(budget)


def plot_paired(runs: Runs, budget: float):
    """Per-seed difference to GRPO in tokens to threshold (negative: fewer tokens than GRPO)."""
    by = _group(runs)
    ref = {r["spec"]["seed"]: _ttt(r, budget) for r in by.get("grpo", [])}
    names = [m for m in sorted(by) if m != "grpo"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.5))
    diffs = {m: [{"d": (_ttt(r, budget) - ref[r["spec"]["seed"]]) / 1e3} for r in by[m]
                 if r["spec"]["seed"] in ref] for m in names}
    names = [m for m in names if diffs[m]]
    _ci_bars(ax, names, diffs, lambda r: r["d"], tag="pair", ref=0.0)
    ax.set_xlabel("tokens to threshold minus GRPO's, same seed  [thousands]")
    ax.set_title("Paired difference to GRPO (median, 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig, ax


def plot_level_tv(runs: Runs):
    """Mean per-update sample TV at every level of the hierarchy, per method."""
    by = _group(runs)
    levels = [k for k in ("tv/token", "tv/tj", "tv/trajectory", "tv/group", "tv/domain")
              if f"mean_{k}" in runs[0]["final"]]
    names = sorted(by)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(levels)
    for j, lev in enumerate(levels):
        meds, lo, hi = [], [], []
        for n in names:
            est = stats.bootstrap_ci([r["final"][f"mean_{lev}"] for r in by[n]], "median",
                                     rng=_rng(lev + n))
            meds.append(est.point)
            lo.append(est.point - est.low)
            hi.append(est.high - est.point)
        ax.bar(np.arange(len(names)) + j * width, meds, width, yerr=[lo, hi], capsize=2,
               label=LEVEL_LABELS[lev])
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel("sample TV of one update  [probability]")
    legend_outside(ax, title="level", title_fontsize=8)
    ax.set_title("Per-level sample TV of each update (mean over updates; median over seeds, "
                 "95% CI)", fontsize=10)
    fig.tight_layout()
    return fig, ax


LEVEL_LABELS = {
    "tv/token": "token: mean |r-1|/2",
    "tv/tj": "trajectory-normalised (eq 51)",
    "tv/trajectory": "trajectory aggregate |s-1|/2",
    "tv/group": "group aggregate",
    "tv/domain": "domain aggregate",
}

GLOBAL = ("G-I", "G-II,r", "G-II", "G-III,r", "G-III")
LOCAL = ("L-I", "L-II", "L-III")


def plot_regimes(runs: Runs, methods=("fiberpo", "fiberpo_domain", "grpo", "gspo")):
    """Regime occupancy over training: stacked fractions of trajectories per update."""
    by = _group(runs)
    methods = [m for m in methods if m in by]
    fig, axes = plt.subplots(2, len(methods), figsize=(3.6 * len(methods), 5.6), squeeze=False,
                             sharex=True, sharey=True)
    for j, m in enumerate(methods):
        for i, labels in enumerate((GLOBAL, LOCAL)):
            ax = axes[i][j]
            n = min(len(r["curve"]) for r in by[m])
            x = np.arange(1, n)
            # means (not medians) so that the stacked fractions add up to one
            ys = [np.mean([[r["curve"][t].get(f"regime/{lab}", 0.0) for t in range(1, n)]
                           for r in by[m]], axis=0) for lab in labels]
            ax.stackplot(x, ys, labels=labels, alpha=0.85)
            ax.set_ylim(0, 1)
            if i == 0:
                ax.set_title(m + ("" if m.startswith("fiberpo") else " (reference gate)"),
                             fontsize=9)
            if i == 1:
                ax.set_xlabel("update")
    legend_outside(axes[0][-1], fontsize=6)
    legend_outside(axes[1][-1], fontsize=6)
    axes[0][0].set_ylabel("global regime  [fraction]")
    axes[1][0].set_ylabel("local regime  [fraction]")
    fig.suptitle("Regime occupancy of the trajectories during training (mean over seeds and "
                 "over the gradient steps of each update)", fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_rollback(runs: Runs):
    """How often trajectory-level rollback fires, and how often the gradient restores it."""
    by = _group(runs)
    names = sorted(by)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(names) + 1.8), sharey=True)
    def rate(r, num, den):
        n = r["final"].get(den, 0.0)
        return r["final"].get(num, 0.0) / n if n else np.nan
    specs = [
        ("total_rb/trajectory/fired", None, "rollback channels per update  [count]"),
        ("total_rb/trajectory/grad_restores_pos", "total_rb/trajectory/fired_pos",
         "restored by the gradient, A > 0  [fraction]"),
        ("total_rb/trajectory/grad_restores_neg", "total_rb/trajectory/fired_neg",
         "restored by the gradient, A < 0  [fraction]"),
    ]
    for ax, (num, den, label) in zip(axes, specs):
        if den is None:
            val = lambda r, num=num: r["final"].get(num, 0.0) / max(r["final"]["iters"], 1)
        else:
            val = lambda r, num=num, den=den: rate(r, num, den)
        keep = {n: [r for r in by[n] if np.isfinite(val(r))] for n in names}
        shown = [n for n in names if keep[n]]
        _ci_bars(ax, shown, keep, val, tag="rb" + num)
        ax.set_xlabel(label)
    axes[0].set_title("Rollback (Section 5.1); baselines labelled with the reference gate",
                      fontsize=9, loc="left")
    fig.tight_layout()
    return fig, axes


# ---------------------------------------------------------------- Claim 3.5
def plot_gspo_tv(runs: Runs):
    """Trajectory-level TV kept by GSPO against Claim 3.5's sqrt(eps/2), per learning rate."""
    lrs = sorted({float(r["final"]["lr"]) for r in runs})
    eps = sorted({float(r["final"]["eps"]) for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for j, lr in enumerate(lrs):
        mine = [r for r in runs if float(r["final"]["lr"]) == lr]
        c = f"C{j}"
        for key, lab, style in (("mean_tv_tj", "mean over updates", "o-"),
                                ("max_tv_tj", "max over updates", "s--")):
            med, lo, hi = _per_eps(mine, eps, key, f"{key}{lr}")
            axes[0].plot(eps, med, style, color=c, label=f"lr={lr:g}: {lab}")
            axes[0].fill_between(eps, lo, hi, color=c, alpha=0.15)
        med, lo, hi = _per_eps(mine, eps, "mean_kl_tj", f"kl{lr}")
        axes[1].plot(eps, np.abs(med), "o-", color=c, label=f"lr={lr:g}: |mean trajectory KL|")
    grid = np.geomspace(min(eps), max(eps), 50)
    axes[0].plot(grid, np.sqrt(grid / 2), "k-", lw=2, label="sqrt(eps/2)  (Claim 3.5)")
    axes[1].plot(grid, grid, "k-", lw=2, label="eps")
    for ax, ylab in zip(axes, ("trajectory-normalised TV per update (eq 51, with 1/2)",
                               "trajectory-normalised KL per update (eq 49)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("GSPO clip eps  [ratio units]")
        ax.set_ylabel(ylab)
        if ax is axes[1]:
            legend_outside(ax)
        else:
            legend_below(ax, ncol=2)
    fig.suptitle("Claim 3.5: the trajectory-level divergence GSPO keeps (sample estimate; "
                 "median over seeds, 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig, axes


def _per_eps(runs: Runs, eps: list[float], key: str, tag: str):
    med, lo, hi = [], [], []
    for e in eps:
        vals = [r["final"][key] for r in runs if float(r["final"]["eps"]) == e]
        est = stats.bootstrap_ci(vals, "median", rng=_rng(tag + str(e)))
        med.append(est.point)
        lo.append(est.low)
        hi.append(est.high)
    return np.array(med), np.array(lo), np.array(hi)


# ---------------------------------------------------------------- depth
def plot_depth(runs: Runs, budget: float):
    """Token efficiency, success and cost per update against the FGH depth."""
    depths = sorted({int(r["final"]["depth"]) for r in runs})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    specs = [(lambda r: _ttt(r, budget) / 1e3, "tokens to threshold  [thousands]"),
             (lambda r: r["final"]["auc_success"], "mean success over training  [fraction]"),
             (lambda r: r["final"]["loss_ms"], "hierarchy + loss + backward  [ms, 1 thread]")]
    for ax, (f, lab) in zip(axes, specs):
        med, lo, hi = [], [], []
        for d in depths:
            est = stats.bootstrap_ci([f(r) for r in runs if int(r["final"]["depth"]) == d],
                                     "median", rng=_rng(lab + str(d)))
            med.append(est.point)
            lo.append(est.point - est.low)
            hi.append(est.high - est.point)
        ax.errorbar(depths, med, yerr=[lo, hi], fmt="o-", capsize=3)
        ax.set_xticks(depths)
        ax.set_xlabel("FGH depth  [levels above the trajectories]")
        ax.set_ylabel(lab)
    fig.suptitle("FGH depth on the sequence task: 0 = FiberPO, 2 = FiberPO-Domain (median over "
                 "seeds, 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig, axes


# ---------------------------------------------------------------- I/O
def make_figures(results_dir) -> list[Path]:
    """Write every figure whose data exist under ``results_dir``; returns the PNG paths."""
    root = Path(results_dir)
    if not (root / "runs").is_dir():
        raise ValueError(f"results_dir: {root} has no runs/ directory (run `fibration "
                         f"reproduce --out {root}` first)")
    plan = _plan(root)
    budget = float(plan.get("seq", {}).get("token_budget", 30_000))
    threshold = float(plan.get("seq", {}).get("threshold", 0.8))
    out_dir = root / "figures"
    out_dir.mkdir(exist_ok=True)
    made: list[Path] = []

    def save(name, fig_axes):
        made.append(save_figure(fig_axes[0], out_dir / name))

    exact = load_runs(root, "exact", role="eval")
    if exact:
        save("exact_curves.png", plot_exact_curves(exact))
        save("exact_adherence.png", plot_exact_adherence(exact))
    import json

    from fibration_theory.simulations.plan import current

    tuning_path = root / "tuning.json"
    tuning = json.loads(tuning_path.read_text()) if tuning_path.exists() else {}
    tag = str(plan.get("tag", ""))
    seq = current(load_runs(root, "sequence", role="eval"), tag, tuning)
    if seq:
        save("sequence_success.png", plot_success_curves(seq, threshold))
        save("sequence_tokens.png", plot_token_efficiency(seq, budget))
        if any(r["spec"]["method"] == "grpo" for r in seq):
            save("sequence_paired_vs_grpo.png", plot_paired(seq, budget))
        save("sequence_level_tv.png", plot_level_tv(seq))
        save("sequence_regimes.png", plot_regimes(seq))
        save("sequence_rollback.png", plot_rollback(seq))
        from fibration_theory.simulations import verdict as vd
        from fibration_theory.simulations.reproduce import scores

        sc = scores(int(budget), threshold)
        made += vd.make_figures(root, seq, vd.verdict(seq, sc, study="sequence study"), sc[0])
    gspo = load_runs(root, "gspo_tv", role="eval")
    if gspo:
        save("gspo_tv.png", plot_gspo_tv(gspo))
    depth = current(load_runs(root, "depth", role="eval"), tag, tuning)
    if depth:
        save("depth.png", plot_depth(depth, budget))
        save("depth_tokens.png", plot_token_efficiency(
            depth, budget, title="FGH depth: token efficiency (median, 95% CI)"))
    if (root / "runs" / "lm").is_dir():  # a `fibration lm` folder (its tuning figures too)
        from fibration_theory.simulations.lm.report import make_lm_figures

        made += make_lm_figures(root)
    else:
        made += make_sensitivity_figures(root)
    return made


def _plan(root: Path) -> dict[str, Any]:
    import json

    path = root / "plan.json"
    return json.loads(path.read_text()) if path.exists() else {}
