"""``fibration reproduce [--quick] --out DIR``: run every experiment, write the summary.

Stages (the protocol of :mod:`fibration_theory.simulations.protocol`, shared with
``fibration lm``): (1) tuning runs of the sequence study (every method's own parameters, the
same number of configurations each), (2) the choice of each method's configuration
(``DIR/tuning.json``, every configuration's score) and, for a chosen factor on the edge of its
parameter's range, two factors beyond it on the same tuning seeds (reported, never chosen),
(3) evaluation runs of every experiment,
(4) ``DIR/summary.json`` and (5) the figures (``DIR/figures/*.png``, made from the run files by
:func:`fibration_theory.simulations.figures.make_figures`). Every finished run is a file under ``DIR/runs``;
rerunning the command skips them, so a killed reproduction resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

from fibration_theory.simulations import plan as pl
from fibration_theory.simulations import protocol as pr
from fibration_theory.simulations import settings as st
from fibration_theory.simulations import summary as sm
from fibration_theory.simulations import verdict as vd
from fibration_theory.simulations.runner import (
    _jsonable,
    count_runs,
    load_runs,
    require_tensorboard,
)

from fibration_theory.outputs import output_folder

EXPERIMENTS = ("exact", "sequence", "gspo_tv", "depth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="results directory (created; finished runs in it are kept)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds (5 evaluation, 1 tuning); same runs and tuning design otherwise")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes, at most 2 (default 2)")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS),
                        help="run these experiments only (default: all)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log every run for TensorBoard under DIR/tensorboard (needs "
                             "the extra fibration-theory[tensorboard])")
    st.add_arguments(parser, pl.SETTINGS)


def kept(args: argparse.Namespace) -> str:
    """What a stopped ``fibration reproduce`` leaves behind (printed on SIGINT/SIGTERM)."""
    return (f"kept {count_runs(args.out)} finished run files under {args.out}; the same "
            "command resumes from them")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 2:
        raise SystemExit("--workers must be 1 or 2 (the machine is shared)")
    plan = pl.Plan.quick() if args.quick else pl.Plan.full()
    try:
        plan = pl.with_settings(plan, st.collect(args, pl.SETTINGS))
        if getattr(args, "tensorboard", False):
            require_tensorboard()
    except (ValueError, RuntimeError) as err:
        raise SystemExit(str(err)) from None
    with output_folder(args.out) as out:
        return _run(args, out, plan)


def _run(args: argparse.Namespace, out: Path, plan: pl.Plan) -> int:
    start = time.perf_counter()
    pr.write_json(out / "plan.json", dataclasses.asdict(plan))
    tuned = {"sequence", "depth"} & set(args.only)
    chosen, failed = pr.run_protocol(
        out, pl.study(plan) if tuned else None,
        lambda chosen: pl.eval_jobs(plan, chosen, args.only),
        workers=args.workers, progress=not args.no_progress,
        tensorboard=getattr(args, "tensorboard", False))
    summary = build_summary(out, plan, chosen)
    summary["run"] = pr.run_record(failed, start, quick=bool(args.quick),
                                   workers=args.workers, experiments=list(args.only))
    if not args.no_figures:
        from fibration_theory.simulations.figures import make_figures

        paths = make_figures(out)
        summary["figures"] = [str(p.relative_to(out)) for p in paths]
    print(verdict_of(out, plan, chosen, quick=bool(args.quick), listed=summary["figures"]),
          end="")
    return pr.finish(out, summary, failed, start)


def scores(budget: int, threshold: float) -> list[vd.Score]:
    """The scores of the sequence study's verdict: the tuning score and token efficiency
    (tokens to hold ``threshold``, censored at ``budget``)."""

    def censored(r: dict) -> float:
        t = float(r["final"]["tokens_to_threshold"])
        return t if math.isfinite(t) else float(budget)

    return [vd.Score("auc_success", "mean exact success rate over training, the tuning score "
                     "[fraction]"),
            vd.Score("tokens_to_threshold", f"sampled tokens until the success rate holds >= "
                     f"{threshold:g}, censored at the budget {budget:,} [tokens]",
                     lower_is_better=True, value=censored)]


def quick_note(plan: pl.Plan) -> str:
    full = pl.Plan.full()
    return (f"Quick plan: {plan.eval_seeds} evaluation seeds and {plan.tune_seeds} tuning "
            f"seed(s) per configuration. These seeds cannot support the full run's verdicts "
            f"(`fibration reproduce --out DIR`: {full.eval_seeds} evaluation seeds, "
            f"{full.tune_seeds} tuning seeds); the table below is this run's own.")


def verdict_of(out: Path, plan: pl.Plan, chosen: dict, *, quick: bool,
               listed: list[str]) -> str:
    """Write ``out/verdict.md``/``.json`` for the sequence study's evaluation runs, listing
    the figures ``listed`` (paths inside ``out``); returns the text to print."""
    runs = pl.current(load_runs(out, "sequence", role="eval"), plan.tag, chosen)
    v = vd.verdict(runs, scores(plan.seq.token_budget, plan.seq.threshold),
                   study="sequence study", note=quick_note(plan) if quick else "")
    return vd.write(out, v, listed)


def build_summary(out: Path, plan: pl.Plan, chosen: dict) -> dict:
    """The ``summary.json`` dict from the evaluation run files under ``out``."""
    experiments: dict = {}
    exact = load_runs(out, "exact", role="eval")
    if exact:
        experiments.update(sm.exact_tables(exact))
    seq = pl.current(load_runs(out, "sequence", role="eval"), plan.tag, chosen)
    if seq:
        experiments.update(sm.sequence_tables(seq, plan.seq.token_budget))
    gspo = load_runs(out, "gspo_tv", role="eval")
    if gspo:
        experiments.update(sm.gspo_tables(gspo))
    depth = pl.current(load_runs(out, "depth", role="eval"), plan.tag, chosen)
    if depth:
        experiments.update(sm.depth_tables(depth, plan.seq.token_budget))
    edge = pr.edge_table(chosen)
    return {"experiments": experiments, "figures": [], "tuning": chosen, "tuning_edge": edge,
            "plan": _jsonable(dataclasses.asdict(plan))}
