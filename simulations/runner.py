"""Resumable execution of many independent runs: one JSONL file per finished run.

A *run* is one ``(experiment, method, variant, role, seed)`` with its frozen config; the
experiment module's ``run_one(config, spec) -> RunResult`` computes it. The runner

* skips every run whose file already exists, is complete (every line parses and the last
  is the ``final`` line) and was made with the same parameters and config (a file exists only
  once the run finished: it is written to ``NAME.tmp`` and moved into place with
  ``os.replace``, which is atomic on POSIX), so a killed job loses at most the runs in
  flight, and a run whose config changed is redone;
* sets a corrupt or truncated run file aside (renamed ``NAME.corrupt``, with a warning
  naming it; :func:`fibration_theory.outputs.set_aside`) and recomputes the run;
* compares configs with the paths inside the results folder written relative to it
  (:func:`fibration_theory.outputs.relative_to`), so a moved or copied folder is reused; a
  config with an ``at(root)`` method gets its folder-relative paths resolved only for the
  run itself;
* runs the rest on at most ``workers`` processes (spawned, ``threads`` torch threads each,
  Ctrl-C left to the parent, which stops the pool), with a tqdm bar of runs done and time
  left;
* records a failed run in ``errors.jsonl`` and carries on; the run is retried next time.

File layout: ``DIR/runs/EXPERIMENT/METHOD/VARIANT/ROLE-seedSEED.jsonl``; line 1 is the spec
and the config, then one ``curve`` line per evaluation point, then one ``final`` line. Beside
it, ``ROLE-seedSEED.csv`` holds the curve as a table (one column per key, one row per point;
written atomically before the JSONL file, which alone marks the run done). With
``tensorboard=True`` every run this invocation makes is also logged for TensorBoard under
``DIR/tensorboard/EXPERIMENT/METHOD/VARIANT/ROLE-seedSEED`` (each curve key a scalar against
the sampled tokens, each final metric as ``final/KEY``; the optional extra
``fibration-theory[tensorboard]``).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import json
import math
import multiprocessing as mp
import signal
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fibration_theory.atomic import write_text
from fibration_theory.outputs import relative_to, set_aside

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
            "config": relative_to(_jsonable(config), root), "seconds": seconds}
    lines = [json.dumps(head)]
    lines += [json.dumps({"type": "curve", **_jsonable(p)}) for p in result.curve]
    lines.append(json.dumps({"type": "final", **_jsonable(result.final)}))
    path = root / spec.relpath()
    atomic_write_text(path.with_suffix(".csv"), curve_csv(result.curve))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def curve_csv(curve: Sequence[dict[str, Any]]) -> str:
    """The curve points as CSV: a header of every key (in first-seen order), one row per
    point; a key a point lacks is an empty cell, a list or dict is JSON, nan/inf as text."""
    keys = list(dict.fromkeys(k for p in curve for k in p))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for p in curve:
        writer.writerow(["" if k not in p else _cell(_jsonable(p[k])) for k in keys])
    return buf.getvalue()


def _cell(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


TENSORBOARD_MISSING = ("--tensorboard needs the `tensorboard` package: pip install "
                       "'fibration-theory[tensorboard]' (or pip install tensorboard)")


def require_tensorboard() -> None:
    """Raise ``RuntimeError`` (:data:`TENSORBOARD_MISSING`) unless TensorBoard is installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise RuntimeError(TENSORBOARD_MISSING) from None


def log_tensorboard(root: Path, spec: RunSpec, result: RunResult) -> Path:
    """One run's curve (step: its ``tokens``, else the point's index) and final metrics as
    TensorBoard scalars under ``root/tensorboard/...``; a rerun replaces the folder."""
    import shutil

    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(root, "tensorboard", *spec.relpath().with_suffix("").parts[1:])
    if folder.exists():
        shutil.rmtree(folder)
    with SummaryWriter(str(folder)) as writer:
        for i, p in enumerate(result.curve):
            step = int(p.get("tokens", i))
            for k, v in p.items():
                if _scalar(v):
                    writer.add_scalar(k, float(v), step)
        for k, v in result.final.items():
            if _scalar(v):
                writer.add_scalar(f"final/{k}", float(v), 0)
    return folder


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class IncompleteRunFile(ValueError):
    """A run file whose lines do not all parse, or whose last line is not the final one."""


def read_run(path: Path) -> dict[str, Any]:
    """``{"spec": {...}, "curve": [...], "final": {...}}`` of one run file.

    Raises :class:`IncompleteRunFile` naming ``path`` unless the first line is the spec, every
    line parses and the last one is the ``final`` line (a truncated file is never read as a
    finished run)."""
    spec, curve, final, last = None, [], None, None
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = _from_json(json.loads(line))
                    kind = rec.pop("type")
                except (ValueError, AttributeError, KeyError) as err:
                    raise IncompleteRunFile(f"path: {path}: line {n} does not parse "
                                            f"({type(err).__name__})") from None
                last = kind
                if kind == "spec" and spec is None and not curve:
                    spec = rec
                elif kind == "curve":
                    curve.append(rec)
                elif kind == "final":
                    final = rec
    except UnicodeDecodeError:
        raise IncompleteRunFile(f"path: {path}: not UTF-8 text") from None
    if spec is None or final is None or last != "final":
        raise IncompleteRunFile(f"path: {path} is not a complete run file (its last line "
                                "must be the final one)")
    return {"spec": spec, "curve": curve, "final": final}


def _read_or_set_aside(path: Path) -> dict[str, Any] | None:
    try:
        return read_run(path)
    except IncompleteRunFile as err:
        set_aside(path, str(err).removeprefix(f"path: {path}").lstrip(": ") or "incomplete")
        return None


def load_runs(root: Path, experiment: str, *, role: str | None = None) -> list[dict[str, Any]]:
    """Every finished run of ``experiment`` under ``root`` (optionally one role); a corrupt
    or truncated file is set aside with a warning (its run is recomputed next time)."""
    base = Path(root) / "runs" / experiment
    if not base.exists():
        return []
    out = []
    for path in sorted(base.glob("*/*/*.jsonl")):
        if role is not None and not path.name.startswith(role + "-"):
            continue
        run = _read_or_set_aside(path)
        if run is not None:
            out.append(run)
    return out


def stored_config(config: Any, root: Path) -> Any:
    """``config`` as a run file holds it: JSON values, paths inside ``root`` relative to it."""
    return _from_json(relative_to(_jsonable(config), root))


def is_done(root: Path, spec: RunSpec, config: Any = None) -> bool:
    """Is this run on disk, complete, and (when ``config`` is given) made with the same
    parameters and config? A stale file (same name, other parameters) counts as not done
    and is overwritten, so changing a config never silently reuses old results; a corrupt
    or truncated file is set aside (renamed, with a warning) and counts as not done."""
    path = Path(root) / spec.relpath()
    if not path.exists():
        return False
    run = _read_or_set_aside(path)
    if run is None:
        return False
    if config is None:
        return True
    head = run["spec"]
    same_params = head.get("params") == _from_json(_jsonable(spec.param_dict))
    same_config = (stored_config(head.get("config"), root)
                   == stored_config(config, root))
    return same_params and same_config


def _ensure_csv(path: Path) -> None:
    """Write the CSV curve of a finished run file that has none (a run made before the CSV
    logs existed), from the run file itself."""
    csv_path = path.with_suffix(".csv")
    if not csv_path.exists():
        atomic_write_text(csv_path, curve_csv(read_run(path)["curve"]))


def count_runs(root: Path) -> int:
    """Number of run files under ``root/runs`` (what a stopped command keeps)."""
    base = Path(root) / "runs"
    return sum(1 for _ in base.glob("*/*/*/*.jsonl")) if base.exists() else 0


def _init_worker(threads: int = 1, pool: bool = False) -> None:
    import torch

    if pool:  # Ctrl-C reaches the whole process group: the parent alone handles it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (in-process runs)
        pass


def _execute(job: tuple[RunSpec, Any, Path]
             ) -> tuple[RunSpec, Any, RunResult | None, float, str]:
    spec, config, root = job
    start = time.perf_counter()
    try:
        module = importlib.import_module(EXPERIMENT_MODULES[spec.experiment])
        at = getattr(config, "at", None)
        result = module.run_one(at(root) if callable(at) else config, spec)
        return spec, config, result, time.perf_counter() - start, ""
    except Exception:  # noqa: BLE001 - a failed run is recorded, the others go on
        return spec, config, None, time.perf_counter() - start, traceback.format_exc()


def run_all(root: Path, jobs: Sequence[tuple[RunSpec, Any]], *, workers: int = 2,
            desc: str = "runs", progress: bool = True, threads: int = 1,
            tensorboard: bool = False) -> dict[str, int]:
    """Run every job not already on disk; returns ``{"done", "skipped", "failed"}`` counts.

    Jobs are ordered longest-first when the config offers ``cost`` (better packing on two
    workers). ``workers <= 1`` runs in this process (used by the tests). Each run uses
    ``threads`` torch threads. ``tensorboard``: also log each run made for TensorBoard.
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
            todo.append((spec, config, root))
        else:
            _ensure_csv(root / spec.relpath())
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
            _handle(root, results, counts, bar, tensorboard)
        else:
            ctx = mp.get_context("spawn")
            # Ctrl-C is held back (blocked, not ignored) while the workers start: they inherit
            # the block and then ignore it (_init_worker), so they print no traceback; the
            # parent gets a Ctrl-C of that moment as soon as it unblocks, inside the try below
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                pool = ctx.Pool(min(workers, len(todo)), initializer=_init_worker,
                                initargs=(threads, True))
            except BaseException:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                raise
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                _handle(root, pool.imap_unordered(_execute, todo), counts, bar, tensorboard)
            except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed
                _stop_pool(pool)
                raise
            pool.close()
            pool.join()
    finally:
        bar.close()
    return counts


def _stop_pool(pool, timeout: float = 10.0) -> None:
    """``pool.terminate()``, and if that has not finished after ``timeout`` seconds (it can
    wait on a worker's queue lock) the workers killed; the command then ends either way."""
    stopper = threading.Thread(target=pool.terminate, daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        for child in mp.active_children():
            child.kill()


def _handle(root: Path, results: Iterable, counts: dict[str, int], bar,
            tensorboard: bool = False) -> None:
    for spec, config, result, seconds, err in results:
        if result is None:
            counts["failed"] += 1
            rec = {"spec": dataclasses.asdict(spec), "error": err, "time": time.time()}
            with open(root / "errors.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_jsonable(rec)) + "\n")
            bar.write(f"FAILED {spec.relpath()}:\n{err.strip().splitlines()[-1]}")
        else:
            write_run(root, spec, config, result, seconds)
            if tensorboard:
                log_tensorboard(root, spec, result)
            counts["done"] += 1
        bar.update(1)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, dynamic_ncols=True,
                smoothing=0.05)
