"""``fibration figures``: regenerate the paper's Figures 2-4, or plot an experiment's results.

``fibration figures --paper --out docs/img`` writes ``fig2.png``, ``fig3.png``, ``fig4.png``
(:func:`fibration_theory.plotting.make_paper_figures`). ``fibration figures --from DIR``
hands a results folder of ``fibration reproduce`` to ``fibration_theory.simulations.figures.make_figures``,
imported only then; with ``--out`` its files are also copied there.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

from fibration_theory.outputs import output_folder

#: where ``--paper`` writes when ``--out`` is not given
DEFAULT_OUT = Path("figures")
EXPERIMENT_MODULE = "fibration_theory.simulations.figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paper", action="store_true",
                        help="regenerate the paper's Figures 2, 3 and 4 from the library")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", type=Path, default=None,
                        help="plot the experiment results in DIR (output of `fibration "
                             "reproduce`) with fibration_theory.simulations.figures.make_figures")
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help=f"output folder (default for --paper: {DEFAULT_OUT}/; with "
                             "--from, the files are also copied here)")


def _experiment_figures(from_dir: Path, out: Path | None) -> list[Path] | None:
    """Paths written by ``fibration_theory.simulations.figures.make_figures(from_dir)``, or None on error."""
    if not from_dir.is_dir():
        print(f"fibration figures: --from {from_dir}: no such directory", file=sys.stderr)
        return None
    try:
        module = importlib.import_module(EXPERIMENT_MODULE)
    except ModuleNotFoundError as err:
        # only the plotting module itself being absent is expected; a missing dependency
        # *inside* it is a real error and propagates
        if err.name not in (EXPERIMENT_MODULE, EXPERIMENT_MODULE.split(".")[0]):
            raise
        print(f"fibration figures: --from needs the experiment plotting module "
              f"{EXPERIMENT_MODULE} (simulations/figures.py), which is not available in this "
              f"installation yet; `fibration figures --paper` works without it.",
              file=sys.stderr)
        return None
    make = getattr(module, "make_figures", None)
    if make is None:
        print(f"fibration figures: {EXPERIMENT_MODULE} has no make_figures(DIR) function",
              file=sys.stderr)
        return None
    try:
        paths = [Path(p) for p in make(from_dir)]
    except ValueError as err:  # bad results folder: say so without a traceback
        print(f"fibration figures: --from {from_dir}: {err}", file=sys.stderr)
        return None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)  # checked by `fibration` before it ran
        copied = []
        for p in paths:
            target = out / p.name
            if p.resolve() != target.resolve():
                shutil.copyfile(p, target)
            copied.append(target)
        paths = copied
    return paths


def run(args: argparse.Namespace) -> int:
    if not args.paper and args.from_dir is None:
        print("fibration figures: choose --paper (the paper's Figs 2-4) and/or --from DIR "
              "(experiment results)", file=sys.stderr)
        return 2
    if args.out is None:
        return _run(args)
    try:
        with output_folder(args.out):  # removed again if the command fails before writing
            status = _run(args)
            if status:
                raise _Failed(status)
    except _Failed as failed:
        return int(failed.args[0])
    return 0


class _Failed(Exception):
    """A failed run inside :func:`output_folder`, so that its empty folder is removed."""


def _run(args: argparse.Namespace) -> int:
    written: list[Path] = []
    if args.paper:
        from fibration_theory.plotting import make_paper_figures

        written += make_paper_figures(args.out if args.out is not None else DEFAULT_OUT)
    if args.from_dir is not None:
        paths = _experiment_figures(args.from_dir, args.out)
        if paths is None:
            return 1
        written += paths
    for path in written:
        print(path)
    return 0
