"""Markdown tables of a ``summary.json``: ``python -m fibration_theory.simulations.report DIR [--only PREFIX]``.

The tables of ``docs/results.md`` are this module's output for ``docs/results/summary.json``
(pasted, not retyped), so the numbers in the docs are the numbers in the data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fibration_theory.simulations import tuning as tu
from fibration_theory.simulations.summary import markdown_table

#: extra columns shown per table (a table not listed gets none)
EXTRA: dict[str, tuple[str, ...]] = {
    "gap": ("final_gap", "early_improvement", "adherence", "max_true_tv", "delta_trpo"),
    "tv_over_budget": ("adherence",),
    "sequence_tokens_to_threshold": ("reached_frac",),
    "depth_tokens_to_threshold": ("reached_frac",),
    "sequence_success_at_budget": ("mean_regime/G-I", "mean_regime/G-II,r", "mean_regime/G-II",
                                   "mean_regime/L-I", "mean_regime/L-III", "mean_tv/tj"),
    "gspo_tv_tj": ("bound", "max_tv_tj", "frac_within_tv_tj", "mean_tv_tj_exact",
                   "mean_kl_tj"),
    "rollback": ("fired_per_update",),
}


def extras_for(name: str) -> tuple[str, ...]:
    for key, cols in EXTRA.items():
        if name == key or name.endswith("_" + key) or (key == "rollback" and "rollback" in name):
            return cols
    return ()


def render(summary: dict, only: str | None = None) -> str:
    parts = []
    for name, entry in summary["experiments"].items():
        if only and not name.startswith(only):
            continue
        parts.append(f"#### `{name}`\n\n{entry['metric']} "
                     f"({'lower' if entry['lower_is_better'] else 'higher'} is better)\n\n"
                     + markdown_table(entry, extra=extras_for(name)))
    tuning = summary.get("tuning") or {}
    if not only and tuning and all("configs" in rec for rec in tuning.values()):
        parts.append("#### tuning\n\nmean tuning score (success AUC) over the tuning seeds; "
                     "every configuration's score is in tuning.json\n\n"
                     + tu.markdown(tuning).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder or its summary.json")
    parser.add_argument("--only", default=None, help="tables whose name starts with this")
    args = parser.parse_args(argv)
    path = args.results / "summary.json" if args.results.is_dir() else args.results
    print(render(json.loads(path.read_text()), args.only), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
