"""``fibration certify [NAME ...] [--module MOD] [--json PATH] [--markdown PATH]``.

Certifies every registered objective (or the NAMEs), after importing ``--module`` (a
dotted module name or a ``.py`` file) so that the objectives it registers are certified
too. Output paths and names are checked before any work (one-line error, exit 2); a
progress bar runs on stderr; the command ends with the matrix and where it was written.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fibration_theory.conformance.certify import DEFAULT_MAX_EXAMPLES

    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="objectives to certify (default: every registered one)")
    parser.add_argument("--module", action="append", default=[], metavar="MOD",
                        help="import MOD (dotted name or .py file) first; repeatable")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the report as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                        help="write the property matrix as Markdown (docs/properties.md)")
    parser.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                        help=f"examples per property (default {DEFAULT_MAX_EXAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")


def _path_error(flag: str, path: Path) -> str | None:
    """Why ``path`` cannot be written, or None."""
    if path.is_dir():
        return f"{flag} {path}: is a directory"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{flag} {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK):
        return f"{flag} {path}: {parent} is not writable"
    return None


def _import(module: str) -> None:
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ImportError(f"no such file {module}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        importlib.import_module(module)


def _fail(message: str) -> int:
    print(f"fibration certify: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None and (err := _path_error(flag, path)):
            return _fail(err)
    if args.max_examples < 1:
        return _fail(f"--max-examples must be >= 1, got {args.max_examples}")
    from fibration_theory import losses

    for module in args.module:
        try:
            _import(module)
        except Exception as exc:  # noqa: BLE001 -- a user's module: any failure, one line
            return _fail(f"--module {module}: {type(exc).__name__}: {exc}")
    names = args.names or losses.available()
    unknown = [n for n in names if n not in losses.available()]
    if unknown:
        return _fail(f"unknown objective {unknown[0]!r}; available: "
                     f"{', '.join(losses.available())}")
    from tqdm import tqdm

    from fibration_theory.atomic import write_text
    from fibration_theory.conformance import report
    from fibration_theory.conformance.certify import PROPERTIES, certify

    data: dict = {"objectives": {}}
    with tqdm(total=len(names) * len(PROPERTIES), file=sys.stderr, unit="check",
              dynamic_ncols=True) as bar:
        for name in names:
            bar.set_description(name)
            result = certify(name, max_examples=args.max_examples, seed=args.seed,
                             progress=lambda _pid: bar.update(1))
            data["objectives"][name] = result.to_json()
    print(report.summary(data))
    failed = sum(e["status"] == "fails" for o in data["objectives"].values()
                 for e in o["properties"].values())
    print(f"\n{len(names)} objectives x {len(PROPERTIES)} properties; {failed} fail "
          f"(minimal counterexamples in the report).")
    written = []
    if args.json is not None:
        write_text(args.json, json.dumps(data, indent=1, sort_keys=False) + "\n")
        written.append(str(args.json))
    if args.markdown is not None:
        write_text(args.markdown, report.markdown(data))
        written.append(str(args.markdown))
    print("Written: " + ", ".join(written) if written else
          "Nothing written (pass --json PATH and/or --markdown PATH).")
    return 0
