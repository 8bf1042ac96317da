"""What ``fibration reproduce`` runs: the job lists of every experiment, quick and full.

Protocol (issue 4): every method of the sequence study gets the same grid
(``methods.GRID_FACTORS`` times its clip/budget parameters) on *tuning* seeds; the factor
with the best mean success AUC is then run on fresh *evaluation* seeds, which are disjoint
from the tuning seeds. The exact-settings experiment compares methods at one matched budget
(the budget is the object of study there, so it is not tuned); the Claim 3.5 sweep runs
GSPO over its ``eps`` grid; the depth study reuses FiberPO-Domain's tuned factor.

``--quick`` keeps every run's configuration and cuts the number of seeds only, so a quick
result is a noisier estimate of the same quantity as the full one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from fibration_theory.simulations import methods as mt
from fibration_theory.simulations.depth import CHAINS, DepthConfig
from fibration_theory.simulations.exact_settings import METHODS as EXACT_METHODS
from fibration_theory.simulations.exact_settings import ExactConfig
from fibration_theory.simulations.gspo_tv import EPS_GRID, LR_GRID, GspoTvConfig
from fibration_theory.simulations.runner import RunSpec
from fibration_theory.simulations.token_efficiency import SeqConfig

Job = tuple[RunSpec, Any]

#: first seed of the tuning seeds (evaluation seeds start at 0: the two never overlap)
TUNE_SEED0 = 1000

#: the exact-settings variants: (environment, gamma)
EXACT_VARIANTS: tuple[tuple[str, float], ...] = (
    ("bandit", 0.9), ("mdp", 0.9), ("mdp", 0.99), ("mdp", 0.999))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Seeds and configurations of one reproduction."""

    #: evaluation seeds of the sequence and depth studies
    eval_seeds: int
    #: tuning seeds per grid point
    tune_seeds: int
    #: seeds of the exact-settings experiment
    exact_seeds: int
    #: seeds per ``eps`` of the Claim 3.5 sweep
    gspo_seeds: int
    #: the sequence-study run
    seq: SeqConfig = dataclasses.field(default_factory=SeqConfig)
    #: the exact-settings run (``env`` and ``gamma`` replaced per variant)
    exact: ExactConfig = dataclasses.field(default_factory=ExactConfig)
    #: the Claim 3.5 run
    gspo: GspoTvConfig = dataclasses.field(default_factory=GspoTvConfig)

    @classmethod
    def quick(cls) -> Plan:
        return cls(eval_seeds=5, tune_seeds=2, exact_seeds=5, gspo_seeds=5)

    @classmethod
    def full(cls) -> Plan:
        return cls(eval_seeds=30, tune_seeds=3, exact_seeds=20, gspo_seeds=10)


def factor_name(f: float) -> str:
    """Variant name of a grid factor, e.g. ``x0.333``."""
    return f"x{f:.3g}"


def _params(d: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def tuning_jobs(plan: Plan, method_names: Sequence[str] | None = None) -> list[Job]:
    """Every method x grid factor x tuning seed of the sequence study."""
    ms = mt.all_methods()
    names = list(ms) if method_names is None else list(method_names)
    depth = len(plan.seq.levels)
    jobs = []
    for name in names:
        for f in mt.GRID_FACTORS:
            params = _params(ms[name].params(f, depth))
            for k in range(plan.tune_seeds):
                spec = RunSpec("sequence", name, factor_name(f), "tune", TUNE_SEED0 + k, params)
                jobs.append((spec, plan.seq))
    return jobs


def choose_factors(tune_runs: list[dict[str, Any]], metric: str = "auc_success",
                   factor_of: Callable[[str], float] | None = None) -> dict[str, dict[str, Any]]:
    """Best grid factor per method: highest mean ``metric`` (of each run's ``final``) over
    tuning seeds; ``factor_of`` reads the factor from a variant name.

    Ties go to the factor closest to 1 (the method's published default).
    Returns ``{method: {"factor", "variant", "score", "scores"}}``.
    """
    by: dict[str, dict[str, list[float]]] = {}
    for run in tune_runs:
        s = run["spec"]
        by.setdefault(s["method"], {}).setdefault(s["variant"], []).append(
            float(run["final"][metric]))
    factor_of = factor_of or parse_factor
    out = {}
    for method, variants in by.items():
        scores = {v: sum(x) / len(x) for v, x in variants.items()}
        best = max(scores, key=lambda v: (round(scores[v], 12), -abs(factor_of(v) - 1.0)))
        out[method] = {"factor": factor_of(best), "variant": best, "score": scores[best],
                       "scores": scores}
    return out


#: factors tried beyond a grid edge (never used for the choice; a diagnostic of the grid)
EDGE_FACTORS = {"high": (30.0, 100.0), "low": (1 / 9, 1 / 27)}


def edge_jobs(plan: Plan, chosen: dict[str, dict[str, Any]]) -> list[Job]:
    """For every method whose best factor lies on the edge of the grid, the next two factors
    beyond it, on the tuning seeds (role ``edge``): does the score keep rising past the grid?"""
    ms = mt.all_methods()
    depth = len(plan.seq.levels)
    jobs = []
    for name, choice in sorted(chosen.items()):
        f = choice["factor"]
        side = ("high" if f == max(mt.GRID_FACTORS) else
                "low" if f == min(mt.GRID_FACTORS) else None)
        if side is None:
            continue
        for g in EDGE_FACTORS[side]:
            params = _params(ms[name].params(g, depth))
            for k in range(plan.tune_seeds):
                spec = RunSpec("sequence", name, factor_name(g), "edge", TUNE_SEED0 + k, params)
                jobs.append((spec, plan.seq))
    return jobs


def edge_scores(edge_runs: list[dict[str, Any]], chosen: dict[str, dict[str, Any]],
                metric: str = "auc_success", factor_of: Callable[[str], float] | None = None
                ) -> dict[str, dict[str, float]]:
    """``{method: {variant: mean tuning metric}}`` over the grid and the edge factors."""
    factor_of = factor_of or parse_factor
    out: dict[str, dict[str, float]] = {}
    for run in edge_runs:
        s = run["spec"]
        out.setdefault(s["method"], {}).setdefault(s["variant"], []).append(
            float(run["final"][metric]))
    table = {}
    for method, variants in out.items():
        scores = dict(chosen.get(method, {}).get("scores", {}))
        scores.update({v: sum(x) / len(x) for v, x in variants.items()})
        table[method] = dict(sorted(scores.items(), key=lambda kv: factor_of(kv[0])))
    return table


def parse_factor(variant: str) -> float:
    """The factor of a variant name, exact for the grid and edge factors (``x0.333`` is 1/3)."""
    known = list(mt.GRID_FACTORS) + [g for gs in EDGE_FACTORS.values() for g in gs]
    for g in known:
        if factor_name(g) == variant:
            return g
    return float(variant[1:])


def eval_jobs(plan: Plan, chosen: dict[str, dict[str, Any]],
              experiments: Sequence[str]) -> list[Job]:
    """Evaluation runs of every experiment in ``experiments``."""
    ms = mt.all_methods()
    jobs: list[Job] = []
    if "exact" in experiments:
        for env, gamma in EXACT_VARIANTS:
            cfg = dataclasses.replace(plan.exact, env=env, gamma=gamma)
            for m in EXACT_METHODS:
                for seed in range(plan.exact_seeds):
                    jobs.append((RunSpec("exact", m, f"{env}-g{gamma:g}", "eval", seed), cfg))
    if "sequence" in experiments:
        depth = len(plan.seq.levels)
        for name, choice in sorted(chosen.items()):
            params = _params(ms[name].params(choice["factor"], depth))
            for seed in range(plan.eval_seeds):
                jobs.append((RunSpec("sequence", name, choice["variant"], "eval", seed, params),
                             plan.seq))
    if "gspo_tv" in experiments:
        for lr in LR_GRID:
            cfg = dataclasses.replace(plan.gspo, seq=dataclasses.replace(plan.gspo.seq, lr=lr))
            for eps in EPS_GRID:
                for seed in range(plan.gspo_seeds):
                    spec = RunSpec("gspo_tv", f"gspo-lr{lr:g}", f"eps{eps:g}", "eval", seed,
                                   (("eps", eps),))
                    jobs.append((spec, cfg))
    if "depth" in experiments:
        f = chosen.get("fiberpo_domain", {"factor": 1.0})["factor"]
        for d in CHAINS:
            params = _params(ms["fiberpo_domain"].params(f, d))
            cfg = DepthConfig(seq=plan.seq, depth=d)
            for seed in range(plan.eval_seeds):
                jobs.append((RunSpec("depth", f"depth{d}", factor_name(f), "eval", seed, params),
                             cfg))
    return jobs
