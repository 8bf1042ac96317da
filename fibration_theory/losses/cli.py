"""``fibration losses``: the registry, one line each."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", action="store_true", help="also list each one's defaults")


def run(args: argparse.Namespace) -> int:
    from fibration_theory import losses
    from fibration_theory.losses.registry import get

    width = max(map(len, losses.available()))
    for name in losses.available():
        print(f"{name.ljust(width)}  {losses.describe(name)}")
        if args.params:
            entry = get(name)
            params = ", ".join(f"{k}={v!r}" for k, v in entry.params.items())
            data = "; batch data: state_ids (compute(..., state_ids=))" if entry.states else ""
            print(f"{' ' * width}    {params}{data}")
    return 0
