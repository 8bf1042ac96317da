"""``fibration verify``: run every certificate, print a table, write JSON and Markdown."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from fibration_theory.atomic import write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the random instances")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown table")
    parser.add_argument("-k", "--only", default=None,
                        help="run only certificates whose id or name contains this text")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--coverage", action="store_true",
                        help="print the table of the paper's numbered statements and their "
                             "certificates (docs/theory.md) and exit")
    parser.add_argument("--thorough", action="store_true",
                        help="bigger sizes and more instances (minutes instead of seconds)")


def certificate_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one certificate, derived from the seed and its (unique) name only:
    ``-k`` and the full run draw the same instances, and adding a certificate changes no
    other's."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def run_all(seed: int = 0, only: str | None = None, progress: bool = True,
            thorough: bool = False):
    from fibration_theory.proofs.registry import load_all
    from tqdm import tqdm

    certs = [c for c in load_all().values()
             if only is None or only in c.id or only in c.name]
    records = []
    bar = tqdm(certs, desc="verify", unit="cert", disable=not progress, file=sys.stderr)
    for cert in bar:
        bar.set_postfix_str(f"{cert.id} {cert.name}")
        records.append(cert.run(certificate_rng(seed, cert.name), thorough=thorough))
    return records


def format_table(records) -> str:
    head = ("id", "paper", "statement", "method", "residual", "status", "time")
    rows = [(r.id, r.paper_ref, _short(r.statement, 58), r.method, f"{r.residual:.2e}",
             (r.verdict or r.status).upper(), f"{r.seconds:.2f}s") for r in records]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(head, widths)), line("-" * w for w in widths)]
    out += [line(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def format_markdown(records, seed: int, seconds: float, thorough: bool = False) -> str:
    """The report: one table of every certificate (a finding's status column reads its
    verdict: confirmed, harmless or refuted), then every finding and SMT proof with its
    ``detail``."""
    mode = " --thorough" if thorough else ""
    counts = (f"{sum(r.status == 'pass' for r in records)} pass, "
              f"{sum(r.status == 'fail' for r in records)} fail, "
              f"{sum(r.status == 'skip' for r in records)} skip; {seconds:.1f} s in all.")
    lines = [f"# `fibration verify --seed {seed}{mode}`", "", counts, "",
             "| id | paper | statement | method | residual | tol | status | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        status = r.verdict or r.status
        lines.append(f"| {r.id} | {r.paper_ref} | {_cell(r.statement)} | {r.method} | "
                     f"{r.residual:.2e} | {r.tol:.0e} | {status} | {r.seconds:.2f} |")
    findings = [r for r in records if r.verdict]
    if findings:
        lines += ["", "## Findings", ""]
        lines += [f"- **{r.id} {r.verdict}** ({r.paper_ref}): {r.statement}. {r.detail}"
                  for r in findings]
    proofs = [r for r in records if r.method == "smt"]
    if proofs:
        lines += ["", "## SMT proofs (z3, all real inputs at the stated sizes)", ""]
        lines += [f"- **{r.id}** ({r.paper_ref}, {r.status}, {r.seconds:.1f} s): {r.detail}"
                  for r in proofs]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` (as in ``||A||``) would split the cell."""
    return text.replace("|", "\\|")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def run(args: argparse.Namespace) -> int:
    if args.coverage:
        from fibration_theory.proofs.coverage import coverage_markdown

        print(coverage_markdown(), end="")
        return 0
    start = time.perf_counter()
    records = run_all(args.seed, args.only, progress=not args.no_progress,
                      thorough=args.thorough)
    seconds = time.perf_counter() - start
    print(format_table(records))
    n_fail = sum(r.status == "fail" for r in records)
    print(f"\n{len(records)} certificates: {len(records) - n_fail} without failure, "
          f"{n_fail} failed ({seconds:.1f} s, seed {args.seed})")
    for r in records:
        if r.status != "pass":
            print(f"  {r.status.upper()} {r.id} {r.name}: {r.detail}")
    for r in records:
        if r.verdict:
            print(f"  {r.id} {r.verdict}: {_short(r.detail, 160)}")
    if args.json:
        write_text(args.json, json.dumps([dataclasses.asdict(r) for r in records], indent=1))
    if args.markdown:
        write_text(args.markdown, format_markdown(records, args.seed, seconds, args.thorough))
    if not records:
        print("no certificate ran", file=sys.stderr)
        return 1
    return 1 if n_fail else 0
