"""Which of FiberPO's gates moves the small-LM result: ``python -m fibration_theory.simulations.lm.ablation
--out DIR`` (after ``fibration lm --quick --out DIR``, whose warm start it reuses).

FiberPO's gated ratio has two parts (eq 7): the base gate ``g_agg`` of the trajectory
aggregates with budgets ``C+``/``C-`` (eq 8) and the fiber residual clipped at ``eps``
(eqs 11-16). Wide open (budgets and ``eps`` of 10, far beyond any drift of a run) both
parts pass everything and FiberPO is the unclipped importance-weighted objective. The
ablations open one part at a time, on the quick plan's warm start, seeds and budget:

* ``default``: the library's FiberPO (C+ 0.12, C- 0.05, eps 0.04);
* ``base_only``: ``eps`` = 10 (no fiber clip), default budgets;
* ``fiber_only``: budgets 10 (no base gate), ``eps`` 0.04;
* ``open``: budgets and ``eps`` 10;
* ``grpo``: GRPO for reference.

Results: ``DIR/runs/lm/<method>/ablation-<name>/``, and ``DIR/ablation.json``, per ablation
the median over seeds of the final held-out reward and of the improvement, with 95% CIs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from fibration_theory.simulations import stats
from fibration_theory.simulations.lm.cli import make_plan, run_spec
from fibration_theory.simulations.runner import atomic_write_text, load_runs, run_all
from fibration_theory.simulations.streams import numpy_rng

WIDE = 10.0
ABLATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "default": ("fiberpo", {}),
    "base_only": ("fiberpo", {"eps": WIDE}),
    "fiber_only": ("fiberpo", {"c_plus": WIDE, "c_minus": WIDE}),
    "open": ("fiberpo", {"c_plus": WIDE, "c_minus": WIDE, "eps": WIDE}),
    "grpo": ("grpo", {}),
}


def jobs(out: Path, seeds: int):
    plan = make_plan(quick=True, device="cpu", model=None, out=out)
    for name, (method, override) in ABLATIONS.items():
        for s in range(seeds):
            yield run_spec(plan, method, 1.0, "eval", s, f"ablation-{name}", override), plan.rl


def render_markdown(table: dict) -> str:
    """The ablation table of ``docs/results-lm.md`` from ``ablation.json``."""
    head = ("| ablation | reward after [95% CI] | improvement [95% CI] | seeds | tv/trajectory "
            "| clipped tokens | rollback trajectories |")
    lines = [head, "|" + "---|" * 7]
    for name, row in table.items():
        a, i = row["reward_after"], row["improvement"]
        rb = row["mean_loss/rollback_frac/trajectory"]
        lines.append(f"| {name} | {a['median']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | "
                     f"{i['median']:+.3f} [{i['ci_low']:+.3f}, {i['ci_high']:+.3f}] | "
                     f"{row['seeds']} | {row['mean_tv/trajectory']:.4f} | "
                     f"{row['mean_loss/clip_frac']:.3f} | {'–' if rb is None else f'{rb:.3f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="a `fibration lm --quick` results folder (its warm start is used)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--table", action="store_true",
                        help="only print the table of an existing DIR/ablation.json")
    args = parser.parse_args(argv)
    if args.table:
        print(render_markdown(json.loads((args.out / "ablation.json").read_text())), end="")
        return 0
    if not (args.out / "warmstart" / "meta.json").exists():
        raise SystemExit(f"--out: {args.out} has no warm start; run `fibration lm --quick "
                         f"--out {args.out}` first")
    run_all(args.out, list(jobs(args.out, args.seeds)), workers=2, desc="ablations")
    runs = load_runs(args.out, "lm", role="eval")
    rng = numpy_rng("ablation/table")
    table = {}
    for name in ABLATIONS:
        rs = [r for r in runs if r["spec"]["variant"] == f"ablation-{name}"]
        row = {}
        for key in ("reward_after", "improvement"):
            est = stats.bootstrap_ci([r["final"][key] for r in rs], "median", rng=rng)
            row[key] = {"median": est.point, "ci_low": est.low, "ci_high": est.high}
        for key in ("mean_tv/trajectory", "mean_loss/clip_frac",
                    "mean_loss/rollback_frac/trajectory"):
            vals = [r["final"][key] for r in rs if key in r["final"]]
            row[key] = float(np.median(vals)) if vals else None
        row["seeds"] = len(rs)
        row["params"] = rs[0]["spec"]["params"] if rs else {}
        table[name] = row
    atomic_write_text(args.out / "ablation.json", json.dumps(table, indent=1))
    print(render_markdown(table), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
