"""``python -m fibration_theory.simulations.compare A B``: are two results folders the same?

Compares every run file (``runs/**/*.jsonl``, line by line, field by field) and the JSON
records next to them (``plan.json``, ``tuning.json``, ``warmstart/meta.json``,
``summary.json``) of two folders of ``fibration reproduce`` or ``fibration lm``, and prints
each difference as ``FILE: LINE: FIELD: A-value != B-value`` (exit status 1), or one line
saying they are identical (exit status 0). Values are compared exactly, as written.

Ignored, and nothing else:

* timing fields (:data:`TIMING`: wall-clock seconds of a run, per update, of a loss call,
  of the invocation, and the summary tables made of them);
* the ``run`` record of ``summary.json`` (machine, Python version, worker count);
* where a path lies: paths inside each folder are compared relative to it
  (:func:`fibration_theory.outputs.relative_to`), so ``warm:/x/A/warmstart`` in ``A``
  equals ``warm:warmstart`` in ``B``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from fibration_theory.outputs import relative_to

#: a key is a timing field when it matches this (``seconds``, ``sec_per_update``,
#: ``loss_ms``, ``seconds_this_invocation``, ``mean_sec_per_update``, ``depth_loss_ms``, ...)
TIMING = re.compile(r"(^|_)(seconds|sec_per_update|loss_ms)$|^seconds_this_invocation$")

#: JSON records compared besides the run files (when present in either folder)
RECORDS = ("plan.json", "tuning.json", "warmstart/meta.json", "summary.json")


def _strip(obj: Any, top: bool = False) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if not TIMING.search(k) and not (top and k == "run")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}{k}: only in {'B' if k not in a else 'A'}")
            else:
                _diff(a[k], b[k], f"{where}{k}.", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}].", out)
    elif a != b or type(a) is not type(b):
        out.append(f"{where.rstrip('.')}: {a!r} != {b!r}")


def _records(path: Path, root: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        recs = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        recs = [json.loads(text)]
    return [_strip(relative_to(r, root), top=path.name == "summary.json") for r in recs]


def compare(a: str | Path, b: str | Path) -> tuple[list[str], int]:
    """``(differences, files compared)`` of results folders ``a`` and ``b``."""
    a, b = Path(a), Path(b)
    names = {p.relative_to(root).as_posix() for root in (a, b)
             for p in root.glob("runs/*/*/*/*.jsonl")}
    names |= {r for r in RECORDS if (a / r).exists() or (b / r).exists()}
    diffs: list[str] = []
    for name in sorted(names):
        pa, pb = a / name, b / name
        if not (pa.exists() and pb.exists()):
            diffs.append(f"{name}: only in {'A' if pa.exists() else 'B'}")
            continue
        ra, rb = _records(pa, a), _records(pb, b)
        if len(ra) != len(rb):
            diffs.append(f"{name}: {len(ra)} lines != {len(rb)} lines")
        for k, (x, y) in enumerate(zip(ra, rb), 1):
            _diff(x, y, f"{name}: line {k}: ", diffs)
    return diffs, len(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="a results folder")
    parser.add_argument("b", type=Path, help="another results folder")
    parser.add_argument("--max", type=int, default=50, help="differences printed (default 50)")
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not folder.is_dir():
            print(f"compare: {folder}: no such folder", file=sys.stderr)
            return 2
    diffs, n = compare(args.a, args.b)
    runs = len(list(args.a.glob("runs/*/*/*/*.jsonl")))
    if not diffs:
        print(f"identical: {n} files ({runs} run files), timing fields aside")
        return 0
    for line in diffs[: args.max]:
        print(line)
    print(f"{len(diffs)} differences in {n} files ({runs} run files in A), timing fields aside")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
