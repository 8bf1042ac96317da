"""Resumable execution of many independent runs: one JSONL file per finished run.

A *run* is one ``(experiment, method, variant, role, seed)`` with its frozen config; the
experiment module's ``run_one(config, spec) -> RunResult`` computes it. The runner

* skips every run whose file already exists with the same parameters and config (a file
  exists only once the run finished: it is written to ``NAME.tmp`` and moved into place with
  ``os.replace``, which is atomic on POSIX), so a killed job loses at most the runs in
  flight, and a run whose config changed is redone;
* runs the rest on at most ``workers`` processes (spawned, ``torch.set_num_threads(1)``),
  with a tqdm bar of runs done and time left;
* records a failed run in ``errors.jsonl`` and carries on; the run is retried next time.

File layout: ``DIR/runs/EXPERIMENT/METHOD/VARIANT/ROLE-seedSEED.jsonl``; line 1 is the spec
and the config, then one ``curve`` line per evaluation point, then one ``final`` line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import multiprocessing as mp
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fibration_theory.atomic import write_text

#: experiment name -> module exposing ``run_one(config, spec) -> RunResult``
EXPERIMENT_MODULES = {
    "exact": "fibration_theory.simulations.exact_settings",
    "sequence": "fibration_theory.simulations.token_efficiency",
    "gspo_tv": "fibration_theory.simulations.gspo_tv",
    "depth": "fibration_theory.simulations.depth",
    "lm": "fibration_theory.simulations.lm.rl",
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Identity of one run. ``params`` are the method's hyperparameters as sorted pairs."""

    experiment: str
    method: str
    variant: str
    role: str  # "tune" or "eval"
    seed: int
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("experiment", "method", "variant", "role"):
            value = getattr(self, name)
            if not value or any(c in value for c in "/\\\n") or value.startswith("."):
                raise ValueError(f"{name} must be a plain non-empty name, got {value!r}")

    @property
    def param_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params}

    def relpath(self) -> Path:
        return Path("runs", self.experiment, self.method, self.variant,
                    f"{self.role}-seed{self.seed}.jsonl")


@dataclasses.dataclass
class RunResult:
    """What ``run_one`` returns: evaluation curve points and final metrics (JSON-able)."""

    curve: list[dict[str, Any]]
    final: dict[str, Any]


def _jsonable(x: Any) -> Any:
    """Floats that JSON cannot hold (nan, inf) become strings; tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    return x


def _from_json(x: Any) -> Any:
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, dict):
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


atomic_write_text = write_text  # one writer for every result file of the toolkit


def write_run(root: Path, spec: RunSpec, config: Any, result: RunResult, seconds: float) -> Path:
    """Write one finished run as JSONL (spec+config, curve lines, final line), atomically."""
    head = {"type": "spec", **_jsonable(dataclasses.asdict(spec)), "params": spec.param_dict,
            "config": _jsonable(config), "seconds": seconds}
    lines = [json.dumps(head)]
    lines += [json.dumps({"type": "curve", **_jsonable(p)}) for p in result.curve]
    lines.append(json.dumps({"type": "final", **_jsonable(result.final)}))
    path = root / spec.relpath()
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_run(path: Path) -> dict[str, Any]:
    """``{"spec": {...}, "curve": [...], "final": {...}}`` of one run file."""
    spec, curve, final = None, [], None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = _from_json(json.loads(line))
            kind = rec.pop("type")
            if kind == "spec":
                spec = rec
            elif kind == "curve":
                curve.append(rec)
            elif kind == "final":
                final = rec
    if spec is None or final is None:
        raise ValueError(f"path: {path} is not a complete run file")
    return {"spec": spec, "curve": curve, "final": final}


def load_runs(root: Path, experiment: str, *, role: str | None = None) -> list[dict[str, Any]]:
    """Every finished run of ``experiment`` under ``root`` (optionally one role)."""
    base = Path(root) / "runs" / experiment
    if not base.exists():
        return []
    out = []
    for path in sorted(base.glob("*/*/*.jsonl")):
        if role is not None and not path.name.startswith(role + "-"):
            continue
        out.append(read_run(path))
    return out


def is_done(root: Path, spec: RunSpec, config: Any = None) -> bool:
    """Is this run on disk, finished, and (when ``config`` is given) made with the same
    parameters and config? A stale file (same name, other parameters) counts as not done
    and is overwritten, so changing a config never silently reuses old results."""
    path = Path(root) / spec.relpath()
    if not path.exists():
        return False
    if config is None:
        return True
    with open(path, encoding="utf-8") as fh:
        head = _from_json(json.loads(fh.readline()))
    same_params = head.get("params") == _from_json(_jsonable(spec.param_dict))
    same_config = head.get("config") == _from_json(_jsonable(config))
    return same_params and same_config


def _init_worker(threads: int = 1) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (in-process runs)
        pass


def _execute(job: tuple[RunSpec, Any]) -> tuple[RunSpec, Any, RunResult | None, float, str]:
    spec, config = job
    start = time.perf_counter()
    try:
        module = importlib.import_module(EXPERIMENT_MODULES[spec.experiment])
        result = module.run_one(config, spec)
        return spec, config, result, time.perf_counter() - start, ""
    except Exception:  # noqa: BLE001 - a failed run is recorded, the others go on
        return spec, config, None, time.perf_counter() - start, traceback.format_exc()


def run_all(root: Path, jobs: Sequence[tuple[RunSpec, Any]], *, workers: int = 2,
            desc: str = "runs", progress: bool = True, threads: int = 1) -> dict[str, int]:
    """Run every job not already on disk; returns ``{"done", "skipped", "failed"}`` counts.

    Jobs are ordered longest-first when the config offers ``cost`` (better packing on two
    workers). ``workers <= 1`` runs in this process (used by the tests).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(root)
    seen: set[RunSpec] = set()
    todo = []
    for spec, config in jobs:
        if spec in seen:
            raise ValueError(f"jobs: duplicate run {spec}")
        seen.add(spec)
        if not is_done(root, spec, config):
            todo.append((spec, config))
    skipped = len(jobs) - len(todo)
    todo.sort(key=lambda j: -float(getattr(j[1], "cost", 1.0)))
    counts = {"done": 0, "skipped": skipped, "failed": 0}
    if not todo:
        return counts
    bar = _progress(len(todo), desc, progress)
    try:
        results: Iterable
        if workers == 1:
            _init_worker(threads)
            results = map(_execute, todo)
            _handle(root, results, counts, bar)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                _handle(root, pool.imap_unordered(_execute, todo), counts, bar)
    finally:
        bar.close()
    return counts


def _handle(root: Path, results: Iterable, counts: dict[str, int], bar) -> None:
    for spec, config, result, seconds, err in results:
        if result is None:
            counts["failed"] += 1
            rec = {"spec": dataclasses.asdict(spec), "error": err, "time": time.time()}
            with open(root / "errors.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_jsonable(rec)) + "\n")
            bar.write(f"FAILED {spec.relpath()}:\n{err.strip().splitlines()[-1]}")
        else:
            write_run(root, spec, config, result, seconds)
            counts["done"] += 1
        bar.update(1)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, dynamic_ncols=True,
                smoothing=0.05)
