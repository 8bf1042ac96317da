"""The protocol of every study: tune -> choose -> edge check -> evaluate -> summarise.

1. **tune**: every method runs at every factor of the same grid (its clip or budget
   parameters times :data:`fibration_theory.simulations.methods.GRID_FACTORS`) on the tuning
   seeds ``TUNE_SEED0, TUNE_SEED0 + 1, ...`` (evaluation seeds start at 0: the two never
   overlap);
2. **choose**: the factor with the best mean tuning score wins (ties go to the factor
   closest to 1, the method's published default), written to ``DIR/tuning.json``;
3. **edge check**: a choice on the edge of the grid also runs the two factors beyond it on
   the tuning seeds (role ``edge``; reported, never chosen: does the score keep rising past
   the grid?);
4. **evaluate**: the study's evaluation runs at the chosen factors;
5. **summarise**: the study's tables from the evaluation run files.

A :class:`Study` holds what differs between ``fibration reproduce`` (the sequence study,
scored by ``auc_success``) and ``fibration lm`` (scored by ``auc_reward``): its methods, grid,
seeds, the job of a method at a factor, and how a variant name maps back to its factor.
:func:`run_protocol` runs the stages on the resumable runner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fibration_theory.simulations import methods as mt
from fibration_theory.simulations.runner import RunSpec, _jsonable, run_all

from fibration_theory.atomic import write_text

Job = tuple[RunSpec, Any]
Runs = list[dict[str, Any]]

#: first seed of the tuning seeds (evaluation seeds start at 0: the two never overlap)
TUNE_SEED0 = 1000

#: factors tried beyond a grid edge (never used for the choice; a diagnostic of the grid)
EDGE_FACTORS = {"high": (30.0, 100.0), "low": (1 / 9, 1 / 27)}


def tuning_seeds(n: int) -> tuple[int, ...]:
    """The ``n`` tuning seeds."""
    return tuple(range(TUNE_SEED0, TUNE_SEED0 + n))


def factor_name(f: float) -> str:
    """Variant name of a grid factor, e.g. ``x0.333``."""
    return f"x{f:.3g}"


def parse_factor(variant: str) -> float:
    """The factor of a variant name, exact for the grid and edge factors (``x0.333`` is 1/3)."""
    known = list(mt.GRID_FACTORS) + [g for gs in EDGE_FACTORS.values() for g in gs]
    for g in known:
        if factor_name(g) == variant:
            return g
    return float(variant[1:])


def params_of(method: str, factor: float, depth: int, override: dict[str, Any] | None = None
              ) -> tuple[tuple[str, Any], ...]:
    """``method``'s hyperparameters at grid ``factor`` (then set by ``override``) as the
    sorted pairs of a ``RunSpec``."""
    d = mt.all_methods()[method].params(factor, depth) | (override or {})
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


@dataclasses.dataclass(frozen=True)
class Study:
    """The study-specific parts of the protocol."""

    #: tuning score: a key of each run's ``final``
    metric: str
    methods: tuple[str, ...]
    grid: tuple[float, ...]
    tune_seeds: tuple[int, ...]
    #: ``job(method, factor, role, seed)``: the run of ``method`` at grid ``factor``
    job: Callable[[str, float, str, int], Job]
    #: the grid factor of a run's variant name
    factor_of: Callable[[str], float]
    #: ``runs(out, role)``: this study's finished runs of ``role`` under ``out``
    runs: Callable[[Path, str], Runs]


def tuning_jobs(study: Study) -> list[Job]:
    """Every method x grid factor x tuning seed."""
    return [study.job(m, f, "tune", s) for m in study.methods for f in study.grid
            for s in study.tune_seeds]


def choose_factors(tune_runs: Runs, metric: str = "auc_success",
                   factor_of: Callable[[str], float] | None = None) -> dict[str, dict[str, Any]]:
    """Best grid factor per method: highest mean ``metric`` (of each run's ``final``) over
    tuning seeds; ``factor_of`` reads the factor from a variant name.

    Ties go to the factor closest to 1 (the method's published default).
    Returns ``{method: {"factor", "variant", "score", "scores"}}``.
    """
    factor_of = factor_of or parse_factor
    out = {}
    for method, scores in _mean_scores(tune_runs, metric).items():
        best = max(scores, key=lambda v: (round(scores[v], 12), -abs(factor_of(v) - 1.0)))
        out[method] = {"factor": factor_of(best), "variant": best, "score": scores[best],
                       "scores": scores}
    return out


def _mean_scores(runs: Runs, metric: str) -> dict[str, dict[str, float]]:
    """``{method: {variant: mean metric over seeds}}``."""
    by: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        s = run["spec"]
        by.setdefault(s["method"], {}).setdefault(s["variant"], []).append(
            float(run["final"][metric]))
    return {m: {v: sum(x) / len(x) for v, x in vs.items()} for m, vs in by.items()}


def edge_jobs(study: Study, chosen: dict[str, dict[str, Any]]) -> list[Job]:
    """For every method whose best factor lies on the edge of the grid, the next two factors
    beyond it, on the tuning seeds (role ``edge``)."""
    jobs = []
    for name, choice in sorted(chosen.items()):
        f = choice["factor"]
        side = "high" if f == max(study.grid) else "low" if f == min(study.grid) else None
        if side is None:
            continue
        jobs += [study.job(name, g, "edge", s) for g in EDGE_FACTORS[side]
                 for s in study.tune_seeds]
    return jobs


def edge_scores(edge_runs: Runs, chosen: dict[str, dict[str, Any]],
                metric: str = "auc_success", factor_of: Callable[[str], float] | None = None
                ) -> dict[str, dict[str, float]]:
    """``{method: {variant: mean tuning metric}}`` over the edge factors and, for the methods
    of ``chosen``, the grid, sorted by factor."""
    factor_of = factor_of or parse_factor
    table = {}
    for method, variants in _mean_scores(edge_runs, metric).items():
        scores = dict(chosen.get(method, {}).get("scores", {}))
        scores.update(variants)
        table[method] = dict(sorted(scores.items(), key=lambda kv: factor_of(kv[0])))
    return table


def run_protocol(out: Path, study: Study | None,
                 eval_jobs: Callable[[dict[str, dict[str, Any]]], Sequence[Job]], *,
                 workers: int, progress: bool, threads: int = 1, label: str = "",
                 eval_label: str = "evaluation") -> tuple[dict[str, dict[str, Any]], int]:
    """Stages 1-4 under ``out``; returns ``(chosen factors, failed runs)``.

    Without a ``study`` (or without tuning seeds) nothing is tuned and ``eval_jobs`` gets
    ``{}`` (every method at its defaults). ``label`` prefixes the progress bars.
    """
    failed = 0
    chosen: dict[str, dict[str, Any]] = {}
    kw = {"workers": workers, "progress": progress, "threads": threads}
    if study is not None and study.tune_seeds:
        failed += run_all(out, tuning_jobs(study), desc=f"{label}tuning", **kw)["failed"]
        chosen = choose_factors(study.runs(out, "tune"), study.metric, study.factor_of)
        write_text(out / "tuning.json", json.dumps(chosen, indent=1, sort_keys=True))
        failed += run_all(out, edge_jobs(study, chosen), desc=f"{label}grid-edge check",
                          **kw)["failed"]
    failed += run_all(out, list(eval_jobs(chosen)), desc=f"{label}{eval_label}",
                      **kw)["failed"]
    return chosen, failed


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path`` (non-finite floats as strings), atomically."""
    write_text(path, json.dumps(_jsonable(obj), indent=1))


def run_record(failed: int, start: float, **extra: Any) -> dict[str, Any]:
    """The ``summary["run"]`` entry: ``extra`` first, then the invocation's seconds, failed
    runs and the machine."""
    return {**extra, "seconds_this_invocation": round(time.perf_counter() - start, 1),
            "failed_runs": failed, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpus": os.cpu_count()}


def finish(out: Path, summary: dict[str, Any], failed: int, start: float) -> int:
    """Stage 5's end: write ``out/summary.json`` (with this invocation's seconds), say where
    it is, and return the exit status (1 if a run failed)."""
    summary["run"]["seconds_this_invocation"] = round(time.perf_counter() - start, 1)
    write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'} ({summary['run']['seconds_this_invocation']} s, "
          f"{failed} failed runs)")
    return 1 if failed else 0
