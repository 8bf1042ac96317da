"""``fibration reproduce [--quick] --out DIR``: run every experiment, write the summary.

Stages: (1) tuning runs of the sequence study, (2) the choice of each method's grid factor
(``DIR/tuning.json``) and, for a choice on the edge of the grid, two factors beyond it on the
same tuning seeds (reported, never chosen), (3) evaluation runs of every experiment, (4) ``DIR/summary.json``
and (5) the figures (``DIR/figures/*.png``, made from the run files by
:func:`fibration_theory.simulations.figures.make_figures`). Every finished run is a file under ``DIR/runs``;
rerunning the command skips them, so a killed reproduction resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from fibration_theory.simulations import plan as pl
from fibration_theory.simulations import summary as sm
from fibration_theory.simulations.runner import (
    _jsonable,
    atomic_write_text,
    count_runs,
    load_runs,
    run_all,
)

from fibration_theory.outputs import output_folder

EXPERIMENTS = ("exact", "sequence", "gspo_tv", "depth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="results directory (created; finished runs in it are kept)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds (5 evaluation, 2 tuning); same runs otherwise")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes, at most 2 (default 2)")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS),
                        help="run these experiments only (default: all)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def kept(args: argparse.Namespace) -> str:
    """What a stopped ``fibration reproduce`` leaves behind (printed on SIGINT/SIGTERM)."""
    return (f"kept {count_runs(args.out)} finished run files under {args.out}; the same "
            "command resumes from them")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 2:
        raise SystemExit("--workers must be 1 or 2 (the machine is shared)")
    with output_folder(args.out) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    plan = pl.Plan.quick() if args.quick else pl.Plan.full()
    start = time.perf_counter()
    progress = not args.no_progress
    atomic_write_text(out / "plan.json", json.dumps(_jsonable(dataclasses.asdict(plan)),
                                                    indent=1))
    failed = 0

    chosen: dict = {}
    if {"sequence", "depth"} & set(args.only):
        counts = run_all(out, pl.tuning_jobs(plan), workers=args.workers, desc="tuning",
                         progress=progress)
        failed += counts["failed"]
        chosen = pl.choose_factors(load_runs(out, "sequence", role="tune"))
        atomic_write_text(out / "tuning.json", json.dumps(chosen, indent=1, sort_keys=True))
        counts = run_all(out, pl.edge_jobs(plan, chosen), workers=args.workers,
                         desc="grid-edge check", progress=progress)
        failed += counts["failed"]

    jobs = pl.eval_jobs(plan, chosen, args.only)
    counts = run_all(out, jobs, workers=args.workers, desc="evaluation", progress=progress)
    failed += counts["failed"]

    summary = build_summary(out, plan, chosen)
    summary["run"] = {
        "quick": bool(args.quick), "workers": args.workers, "experiments": list(args.only),
        "seconds_this_invocation": round(time.perf_counter() - start, 1),
        "failed_runs": failed, "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if not args.no_figures:
        from fibration_theory.simulations.figures import make_figures

        paths = make_figures(out)
        summary["figures"] = [str(p.relative_to(out)) for p in paths]
    summary["run"]["seconds_this_invocation"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=1))
    print(f"wrote {out / 'summary.json'} ({summary['run']['seconds_this_invocation']} s, "
          f"{failed} failed runs)")
    return 1 if failed else 0


def build_summary(out: Path, plan: pl.Plan, chosen: dict) -> dict:
    """The ``summary.json`` dict from the evaluation run files under ``out``."""
    experiments: dict = {}
    exact = load_runs(out, "exact", role="eval")
    if exact:
        experiments.update(sm.exact_tables(exact))
    seq = load_runs(out, "sequence", role="eval")
    if seq:
        experiments.update(sm.sequence_tables(seq, plan.seq.token_budget))
    gspo = load_runs(out, "gspo_tv", role="eval")
    if gspo:
        experiments.update(sm.gspo_tables(gspo))
    depth = load_runs(out, "depth", role="eval")
    if depth:
        experiments.update(sm.depth_tables(depth, plan.seq.token_budget))
    edge = pl.edge_scores(load_runs(out, "sequence", role="edge"), chosen)
    return {"experiments": experiments, "figures": [], "tuning": chosen, "tuning_edge": edge,
            "plan": _jsonable(dataclasses.asdict(plan))}
