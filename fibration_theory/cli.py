"""The ``fibration`` command.

Each subcommand lives in the module that owns its concept; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the invoked subcommand's
module is imported, so ``fibration --help`` stays fast (no torch, no cvxpy).

Before a command runs, every output path it was given (``--out``, ``--json``,
``--markdown``) is checked (:func:`fibration_theory.outputs.check_paths`: one line and exit
status 2 for a path that cannot be written). SIGINT and SIGTERM end the command with one line
saying what was kept (the module's ``kept(args) -> str`` where it has one) and exit status
128 + the signal number, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

#: name -> (module path, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "losses": ("fibration_theory.losses.cli", "list the registered objectives, one line each"),
    "verify": ("fibration_theory.proofs.runner", "run every certificate of the paper's statements (V1-V14)"),
    "figures": ("fibration_theory.figures_cli", "regenerate the paper's figures or plot results"),
    "reproduce": ("fibration_theory.simulations.reproduce", "run the experiments and write DIR/summary.json"),
    "lm": ("fibration_theory.simulations.lm.cli", "RL-fine-tune a small LM with FiberPO and the baselines"),
    "bench": ("fibration_theory.benchmarks.run", "time every objective against ppo_clip, and the exact solvers"),
    "certify": ("fibration_theory.conformance.cli", "check the properties of every registered objective (the property matrix)"),
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
    from fibration_theory.outputs import check_paths

    check_paths(args, args.command)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
        kept = getattr(module, "kept", None)
        what = kept(args) if callable(kept) else "nothing was written"
        print(f"fibration {args.command}: stopped by {signal.Signals(signum).name}; {what}",
              file=sys.stderr)
        _STOPPED.append(int(signum))
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


#: the signal that stopped :func:`main` in this process, if one did (read by :func:`entry`)
_STOPPED: list[int] = []


def entry() -> None:
    """The ``fibration`` program: :func:`main`, then exit with its status.

    After a stop by a signal the process runs its exit handlers and ends with ``os._exit``
    (streams flushed; the runs on disk are complete, atomic files): CPython kills itself with SIGINT at exit when it
    believes a KeyboardInterrupt went unhandled, a flag that an interrupt arriving inside a
    library's nested evaluation can leave set even though :func:`main` handled it, and the
    status must be 128 + the signal either way."""
    code = main()
    if _STOPPED:
        import atexit

        atexit._run_exitfuncs()  # what a normal exit runs (multiprocessing's clean-up among it)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so worker pools stop with their parent."""
    raise KeyboardInterrupt(signum)


if __name__ == "__main__":
    entry()
