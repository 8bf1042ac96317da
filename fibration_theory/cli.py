"""The ``fibration`` command.

Each subcommand lives in the module that owns its concept; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the invoked subcommand's
module is imported, so ``fibration --help`` stays fast (no torch, no cvxpy).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module path, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "losses": ("fibration_theory.losses.cli", "list the registered objectives, one line each"),
    "verify": ("fibration_theory.proofs.runner", "run every certificate of the paper's statements (V1-V14)"),
    "figures": ("fibration_theory.figures_cli", "regenerate the paper's figures or plot results"),
    "reproduce": ("fibration_theory.simulations.reproduce", "run the experiments and write DIR/summary.json"),
    "lm": ("fibration_theory.simulations.lm.cli", "RL-fine-tune a small LM with FiberPO and the baselines"),
    "bench": ("fibration_theory.benchmarks.run", "time every objective against ppo_clip, and the exact solvers"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fibration",
        description="Fibration Policy Optimization toolkit (arXiv 2603.08239).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def _version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    from importlib import metadata

    try:
        return metadata.version("fibration-theory")
    except metadata.PackageNotFoundError:
        from fibration_theory import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in SUBCOMMANDS:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
