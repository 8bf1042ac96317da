"""From run files to ``summary.json``: one table per experiment, with bootstrap intervals.

Every entry of ``experiments`` has a ``metric`` (what the numbers are), ``lower_is_better``
and ``methods``: ``{method: {"median", "ci_low", "ci_high", "iqm", "iqm_ci_low",
"iqm_ci_high", "mean", "seeds", ...}}``. Where seeds are shared with ``grpo`` (the sequence
study), each method also carries the paired difference to grpo, ``paired_vs_grpo``
(median of per-seed differences and its interval).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fibration_theory.simulations import stats
from fibration_theory.simulations.streams import numpy_rng

Runs = list[dict[str, Any]]

#: the reference method of the paired comparisons
REFERENCE = "grpo"


def _rng(name: str) -> np.random.Generator:
    # one fixed stream per table, so a table's intervals do not depend on the others
    return numpy_rng(name)


def by_method(runs: Runs, key: Callable[[dict[str, Any]], str] | None = None
              ) -> dict[str, dict[int, dict[str, Any]]]:
    """``{method: {seed: run}}``."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        name = key(r) if key else r["spec"]["method"]
        out.setdefault(name, {})[int(r["spec"]["seed"])] = r
    return out


def table(runs: Runs, metric: str, description: str, *, lower_is_better: bool,
          value: Callable[[dict[str, Any]], float] | None = None,
          key: Callable[[dict[str, Any]], str] | None = None,
          paired: bool = False, extra: Callable[[list[dict[str, Any]]], dict] | None = None
          ) -> dict[str, Any]:
    """One experiment table of ``metric`` (a key of each run's ``final``) per method."""
    get = value or (lambda r: float(r["final"][metric]))
    groups = by_method(runs, key)
    rng = _rng(metric + description)
    methods: dict[str, Any] = {}
    ref = groups.get(REFERENCE)
    for name in sorted(groups):
        seeds = sorted(groups[name])
        vals = np.array([get(groups[name][s]) for s in seeds])
        entry = stats.summarize(vals, rng=rng)
        if paired and ref is not None and name != REFERENCE:
            shared = [s for s in seeds if s in ref]
            if shared:
                a = np.array([get(groups[name][s]) for s in shared])
                b = np.array([get(ref[s]) for s in shared])
                d = stats.paired_difference(a, b, "median", rng=rng)
                entry["paired_vs_grpo"] = {"median": d.point, "ci_low": d.low,
                                           "ci_high": d.high, "seeds": d.n,
                                           "prob_better": stats.prob_improvement(
                                               -a if lower_is_better else a,
                                               -b if lower_is_better else b)}
        if extra is not None:
            entry.update(extra([groups[name][s] for s in seeds]))
        methods[name] = entry
    return {"metric": f"{metric}: {description}", "lower_is_better": lower_is_better,
            "methods": methods}


def _mean_of(key: str) -> Callable[[list[dict[str, Any]]], dict[str, float]]:
    def f(runs: list[dict[str, Any]]) -> dict[str, float]:
        vals = [float(r["final"].get(key, np.nan)) for r in runs]
        return {key: float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")}
    return f


def _merge(*fs):
    def f(runs):
        out = {}
        for g in fs:
            out.update(g(runs))
        return out
    return f


def sequence_tables(runs: Runs, budget: int, prefix: str = "sequence",
                    key: Callable[[dict[str, Any]], str] | None = None,
                    paired: bool = True) -> dict[str, Any]:
    """Token-efficiency tables: tokens to threshold (censored), success at the budget, AUC,
    collapses."""
    def censored(r):
        t = float(r["final"]["tokens_to_threshold"])
        return t if np.isfinite(t) else float(budget)

    def reached(rs):
        return {"reached_frac": float(np.mean([np.isfinite(float(r["final"]["tokens_to_threshold"]))
                                               for r in rs]))}

    def collapse(r):
        return float(bool(r["final"]["collapsed"]))

    occupancy = _merge(*[_mean_of(f"mean_regime/{g}") for g in
                         ("G-I", "G-II,r", "G-II", "G-III,r", "G-III", "L-I", "L-II", "L-III")],
                       _mean_of("sec_per_update"), _mean_of("mean_tv/tj"))
    return {
        f"{prefix}_tokens_to_threshold": table(
            runs, "tokens_to_threshold",
            f"sampled tokens until the exact success rate holds >= threshold; runs that never "
            f"get there count as the budget ({budget})", lower_is_better=True, value=censored,
            key=key, paired=paired, extra=reached),
        f"{prefix}_success_at_budget": table(
            runs, "final_success", f"exact success rate after {budget} sampled tokens",
            lower_is_better=False, key=key, paired=paired, extra=occupancy),
        f"{prefix}_auc_success": table(
            runs, "auc_success", "mean exact success rate over training updates",
            lower_is_better=False, key=key, paired=paired),
        **rollback_tables(runs, prefix, key),
        f"{prefix}_collapse_rate": table(
            runs, "collapsed", "fraction of runs whose success fell 0.25 below its maximum",
            lower_is_better=True, value=collapse, key=key, paired=False),
    }


def rollback_tables(runs: Runs, prefix: str, key=None) -> dict[str, Any]:
    """Trajectory-level rollback: how often it fires, and the share of fired channels whose
    drift a plain gradient step on the loss (and the actual Adam step) reduces."""
    base = "total_rb/trajectory/"

    def frac(num: str, den: str):
        def f(r):
            d = float(r["final"].get(base + den, 0.0))
            return float(r["final"].get(base + num, 0.0)) / d
        return f

    def fired(rs):
        return {"fired_per_update": float(np.mean([r["final"].get(base + "fired", 0.0)
                                                   / max(r["final"]["iters"], 1) for r in rs]))}

    out = {}
    for name, num, den, what in (
            ("grad_restores", "grad_restores", "fired", "all"),
            ("grad_restores_pos", "grad_restores_pos", "fired_pos", "advantage > 0"),
            ("grad_restores_neg", "grad_restores_neg", "fired_neg", "advantage < 0"),
            ("update_restores", "update_restores", "fired", "all (Adam step)")):
        rs = [r for r in runs if float(r["final"].get(base + den, 0.0)) > 0]
        if rs:
            out[f"{prefix}_rollback_{name}"] = table(
                rs, f"rollback_{name}", f"share of trajectory channels in rollback whose drift "
                f"shrinks after a gradient step ({what}); runs without rollback omitted",
                lower_is_better=False, value=frac(num, den), key=key, extra=fired)
    return out


def exact_tables(runs: Runs) -> dict[str, Any]:
    """One table per exact-settings variant (normalised suboptimality), plus adherence."""
    out = {}
    variants = sorted({r["spec"]["variant"] for r in runs})
    for v in variants:
        rs = [r for r in runs if r["spec"]["variant"] == v]
        out[f"exact_{v}_gap"] = table(
            rs, "auc_gap", "mean normalised suboptimality (J* - J)/(J* - J0) over iterations",
            lower_is_better=True, paired=True, extra=_merge(_mean_of("final_gap"), _mean_of("adherence"),
                                               _mean_of("early_improvement"),
                                               _mean_of("max_true_tv"), _mean_of("delta_trpo")))
        out[f"exact_{v}_tv_over_budget"] = table(
            rs, "mean_tv_over_budget", "realised sample max-TV (eq 39) / the method's budget, "
            "mean over iterations with M > 0", lower_is_better=True,
            extra=_mean_of("adherence"))
    return out


def gspo_tables(runs: Runs) -> dict[str, Any]:
    """Claim 3.5: trajectory TV per eps, and its ratio to sqrt(eps/2)."""
    def key(r):
        return f'{r["spec"]["method"]}/{r["spec"]["variant"]}'

    extra = _merge(_mean_of("bound"), _mean_of("eps"), _mean_of("max_tv_tj"),
                   _mean_of("mean_kl_tj"), _mean_of("frac_within_tv_tj"),
                   _mean_of("mean_tv_tj_exact"))
    return {
        "gspo_tv_tj": table(runs, "mean_tv_tj", "mean over updates of the sample trajectory-"
                            "normalised TV (eq 51 with eq 46's 1/2)", lower_is_better=True,
                            key=key, extra=extra),
        "gspo_tv_tj_over_bound": table(runs, "mean_tv_tj_over_bound",
                                       "mean trajectory TV / sqrt(eps/2) (Claim 3.5 holds "
                                       "below 1)", lower_is_better=True, key=key),
        "gspo_max_tv_tj_over_bound": table(runs, "max_tv_tj_over_bound",
                                           "largest per-update trajectory TV / sqrt(eps/2)",
                                           lower_is_better=True, key=key),
    }


def depth_tables(runs: Runs, budget: int) -> dict[str, Any]:
    tabs = sequence_tables(runs, budget, prefix="depth", paired=False)
    tabs["depth_sec_per_update"] = table(
        runs, "sec_per_update", "wall-clock seconds per update of training (one CPU thread; "
        "inflated by other load on the machine)", lower_is_better=True)
    tabs["depth_loss_ms"] = table(
        runs, "loss_ms", "best-of-15 milliseconds for hierarchy + loss + backward on one full "
        "batch (144 rows)", lower_is_better=True)
    return tabs


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 1 or a == 0:
        return f"{x:.3g}"
    return f"{x:.3g}"


def markdown_table(entry: dict[str, Any], *, extra: tuple[str, ...] = ()) -> str:
    """One experiment table of ``summary.json`` as Markdown, best method first.

    Columns: median [95% CI], IQM [95% CI], seeds, the paired difference to grpo where
    present, and any ``extra`` keys of the method entries.
    """
    methods = entry["methods"]
    sign = 1 if entry["lower_is_better"] else -1
    order = sorted(methods, key=lambda m: sign * methods[m]["median"])
    paired = any("paired_vs_grpo" in methods[m] for m in methods)
    head = ["method", "median [95% CI]", "IQM [95% CI]", "seeds"]
    if paired:
        head.append("paired diff. vs grpo [95% CI]")
    head += list(extra)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in order:
        e = methods[m]
        row = [m, f"{_fmt(e['median'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]",
               f"{_fmt(e['iqm'])} [{_fmt(e['iqm_ci_low'])}, {_fmt(e['iqm_ci_high'])}]",
               str(e["seeds"])]
        if paired:
            p = e.get("paired_vs_grpo")
            row.append("(reference)" if p is None else
                       f"{_fmt(p['median'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]")
        row += [_fmt(float(e.get(k, float("nan")))) for k in extra]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
