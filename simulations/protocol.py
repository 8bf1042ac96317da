"""The protocol of every study: tune -> choose -> edge check -> evaluate -> summarise.

1. **tune**: every method runs every configuration of its tuning design
   (:mod:`fibration_theory.simulations.tuning`: each of its own parameters varied separately,
   the same number of configurations for every method) on the tuning seeds
   ``TUNE_SEED0, TUNE_SEED0 + 1, ...`` (evaluation seeds start at 0: the two never overlap);
2. **choose**: the configuration with the best mean tuning score wins (ties go to the one
   closest to the method's published defaults); every configuration's score is written to
   ``DIR/tuning.json``;
3. **edge check**: a chosen factor on the edge of its parameter's range also gets the
   factors beyond it (``Study.edge_steps``; that parameter moved, the others kept) on the
   tuning seeds (role ``edge``; reported in ``tuning.json``, never chosen: does the score
   keep rising past the range?);
4. **evaluate**: the study's evaluation runs at the chosen configurations;
5. **summarise**: the study's tables from the evaluation run files.

A :class:`Study` holds what differs between ``fibration reproduce`` (the sequence study,
scored by ``auc_success``) and ``fibration lm`` (scored by ``auc_reward``): its methods, the
number of configurations, seeds, the job of a method at a configuration and the variant name
of a configuration. :func:`run_protocol` runs the stages on the resumable runner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fibration_theory.simulations import methods as mt
from fibration_theory.simulations import tuning as tu
from fibration_theory.simulations.runner import RunSpec, _jsonable, run_all
from fibration_theory.simulations.tuning import Config, factor_name  # noqa: F401 - re-exported

from fibration_theory.atomic import write_text

Job = tuple[RunSpec, Any]
Runs = list[dict[str, Any]]
#: ``{method: its tuning record}`` (the content of ``tuning.json``)
Tuning = dict[str, dict[str, Any]]

#: first seed of the tuning seeds (evaluation seeds start at 0: the two never overlap)
TUNE_SEED0 = 1000


def tuning_seeds(n: int) -> tuple[int, ...]:
    """The ``n`` tuning seeds."""
    return tuple(range(TUNE_SEED0, TUNE_SEED0 + n))


def params_of(method: str, factors: Mapping[str, float] | float, depth: int,
              override: dict[str, Any] | None = None) -> tuple[tuple[str, Any], ...]:
    """``method``'s hyperparameters at ``factors`` (a factor per tuned parameter, or one
    joint factor), then set by ``override``, as the sorted pairs of a ``RunSpec``."""
    m = mt.all_methods()[method]
    d = (m.params(factors, depth) if isinstance(factors, (int, float))
         else m.params(1.0, depth, factors)) | (override or {})
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def factors_of(tuning: Tuning, method: str) -> dict[str, float]:
    """The chosen factors of ``method`` (``{}``, the defaults, when it was not tuned)."""
    return dict(tuning.get(method, {}).get("factors", {}))


@dataclasses.dataclass(frozen=True)
class Study:
    """The study-specific parts of the protocol."""

    #: tuning score: a key of each run's ``final``
    metric: str
    methods: tuple[str, ...]
    #: tuning configurations per method (the same for all)
    n_configs: int
    tune_seeds: tuple[int, ...]
    #: the :class:`~fibration_theory.simulations.methods.Method` of a method name
    method_of: Callable[[str], mt.Method]
    #: ``job(method, config, role, seed)``: the run of ``method`` at ``config``
    job: Callable[[str, Config, str, int], Job]
    #: the variant name of a configuration's runs
    variant: Callable[[Config], str]
    #: ``runs(out, role)``: this study's finished runs of ``role`` under ``out``
    runs: Callable[[Path, str], Runs]
    #: multiples of an edge value tried beyond it (the grid-edge check)
    edge_steps: tuple[float, ...] = tu.EDGE_STEPS

    def design(self, method: str) -> tu.Design:
        return tu.design(self.method_of(method).tuned, self.n_configs)


def tuning_jobs(study: Study) -> list[Job]:
    """Every method x configuration of its design x tuning seed."""
    return [study.job(m, c, "tune", s) for m in study.methods for c in study.design(m).configs
            for s in study.tune_seeds]


def _seed_scores(runs: Runs, metric: str, variants: Mapping[str, str]
                 ) -> dict[str, dict[int, float]]:
    """``{config name: {seed: score}}`` of the runs whose variant is a key of ``variants``
    (variant -> config name)."""
    out: dict[str, dict[int, float]] = {}
    for run in runs:
        name = variants.get(run["spec"]["variant"])
        if name is not None:
            out.setdefault(name, {})[int(run["spec"]["seed"])] = float(run["final"][metric])
    return out


def _entry(study: Study, method: str, c: Config, seeds: Mapping[int, float]) -> dict[str, Any]:
    defaults = study.method_of(method).tuned_defaults()
    vals = list(seeds.values())
    return {"variant": study.variant(c), "factors": c.as_dict,
            "values": {p: defaults[p] * f for p, f in c.factors},
            "score": float(np.mean(vals)) if vals else None,
            "seed_scores": {str(s): v for s, v in sorted(seeds.items())}}


def choose(study: Study, tune_runs_by_method: Mapping[str, Runs]) -> Tuning:
    """Stage 2: the tuning record of every method (design, every configuration's score, the
    choice) from its tuning runs; methods without any scored configuration are left out."""
    out: Tuning = {}
    for m in study.methods:
        d = study.design(m)
        names = {study.variant(c): c.name for c in d.configs}
        scores = _seed_scores(tune_runs_by_method.get(m, []), study.metric, names)
        if not scores:
            continue
        best = tu.choose(d, {k: list(v.values()) for k, v in scores.items()})
        configs = [_entry(study, m, c, scores.get(c.name, {})) for c in d.configs]
        chosen = _entry(study, m, best, scores[best.name])
        out[m] = {"design": d.kind, "n_configs": len(d.configs), "parameters": list(d.params),
                  "shared": [list(g) for g in d.shared],
                  "defaults": study.method_of(m).tuned_defaults(),
                  "tune_seeds": list(study.tune_seeds), "metric": study.metric,
                  "configs": configs, "chosen": chosen, "edge": [],
                  # the choice at the top level, for readers of earlier summaries
                  "variant": chosen["variant"], "factors": chosen["factors"],
                  "score": chosen["score"],
                  "scores": {e["variant"]: e["score"] for e in configs
                             if e["score"] is not None}}
    return out


def _edge_configs(study: Study, tuning: Tuning) -> list[tuple[str, str, str, Config]]:
    out = []
    for m in sorted(tuning):
        d = study.design(m)
        best = Config(tuple((p, tuning[m]["factors"][p]) for p in d.params))
        out += [(m, p, where, c) for p, where, c in d.edge_configs(best, study.edge_steps)]
    return out


def edge_jobs(study: Study, tuning: Tuning) -> list[Job]:
    """Stage 3: for every chosen factor on the edge of its parameter's range, the two factors
    beyond it (that parameter moved, the others kept), on the tuning seeds (role ``edge``)."""
    return [study.job(m, c, "edge", s) for m, _, _, c in _edge_configs(study, tuning)
            for s in study.tune_seeds]


def add_edge_scores(study: Study, tuning: Tuning, edge_runs_by_method: Mapping[str, Runs]
                    ) -> Tuning:
    """``tuning`` with each method's ``edge`` list filled from its edge runs."""
    for m, p, where, c in _edge_configs(study, tuning):
        scores = _seed_scores(edge_runs_by_method.get(m, []), study.metric,
                              {study.variant(c): c.name})
        tuning[m]["edge"].append({"parameter": p, "side": where,
                                  **_entry(study, m, c, scores.get(c.name, {}))})
    return tuning


def edge_table(tuning: Tuning) -> dict[str, dict[str, float]]:
    """``{method: {variant: mean tuning score}}`` of the edge runs (``summary["tuning_edge"]``)."""
    return {m: {e["variant"]: e["score"] for e in rec.get("edge", []) if e["score"] is not None}
            for m, rec in tuning.items() if rec.get("edge")}


def _by_method(runs: Runs) -> dict[str, Runs]:
    out: dict[str, Runs] = {}
    for r in runs:
        out.setdefault(r["spec"]["method"], []).append(r)
    return out


def tuning_record(study: Study, out: Path, *, edge: bool = True) -> Tuning:
    """Stages 2 (and 3's scores, with ``edge``) from the run files under ``out``."""
    tuning = choose(study, _by_method(study.runs(out, "tune")))
    return add_edge_scores(study, tuning, _by_method(study.runs(out, "edge"))) if edge else tuning


def run_protocol(out: Path, study: Study | None,
                 eval_jobs: Callable[[Tuning], Sequence[Job]], *,
                 workers: int, progress: bool, threads: int = 1, label: str = "",
                 eval_label: str = "evaluation", tensorboard: bool = False
                 ) -> tuple[Tuning, int]:
    """Stages 1-4 under ``out``; returns ``(tuning record, failed runs)``.

    Without a ``study`` (or without tuning seeds) nothing is tuned and ``eval_jobs`` gets
    ``{}`` (every method at its defaults). ``label`` prefixes the progress bars;
    ``tensorboard`` logs every run made for TensorBoard (:func:`runner.log_tensorboard`).
    """
    failed = 0
    tuning: Tuning = {}
    kw = {"workers": workers, "progress": progress, "threads": threads,
          "tensorboard": tensorboard}
    if study is not None and study.tune_seeds:
        failed += run_all(out, tuning_jobs(study), desc=f"{label}tuning", **kw)["failed"]
        tuning = tuning_record(study, out, edge=False)
        write_json(out / "tuning.json", tuning)
        failed += run_all(out, edge_jobs(study, tuning), desc=f"{label}grid-edge check",
                          **kw)["failed"]
        tuning = tuning_record(study, out)
        write_json(out / "tuning.json", tuning)
    failed += run_all(out, list(eval_jobs(tuning)), desc=f"{label}{eval_label}",
                      **kw)["failed"]
    return tuning, failed


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
