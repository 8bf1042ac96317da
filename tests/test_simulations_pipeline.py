"""End to end at toy size: plan -> runs -> summary.json -> figures, and the CLI surface."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
from fibration_theory.simulations import plan as pl
from fibration_theory.simulations import protocol as pr
from fibration_theory.simulations import reproduce as rp
from fibration_theory.simulations.exact_settings import ExactConfig
from fibration_theory.simulations.figures import make_figures
from fibration_theory.simulations.gspo_tv import GspoTvConfig
from fibration_theory.simulations.runner import _jsonable, atomic_write_text, run_all
from fibration_theory.simulations.token_efficiency import SeqConfig

TOY_SEQ = SeqConfig(token_budget=600, epochs=1)
TOY = pl.Plan(eval_seeds=2, tune_seeds=1, exact_seeds=2, gspo_seeds=1, seq=TOY_SEQ,
              exact=ExactConfig(iterations=2, inner_steps=2),
              gspo=GspoTvConfig(seq=TOY_SEQ), tune_configs=4)
METHODS = ["grpo", "fiberpo_domain"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    atomic_write_text(out / "plan.json", json.dumps(_jsonable(dataclasses.asdict(TOY))))
    run_all(out, pl.tuning_jobs(TOY, METHODS), workers=1, progress=False)
    chosen = pr.tuning_record(pl.study(TOY, METHODS), out)
    counts = run_all(out, pl.eval_jobs(TOY, chosen, rp.EXPERIMENTS), workers=1, progress=False)
    assert counts["failed"] == 0, (out / "errors.jsonl").read_text()
    return out, chosen


@pytest.mark.slow  # about 12 s of toy runs
def test_summary_has_the_fixed_schema(results):
    out, chosen = results
    summary = rp.build_summary(out, TOY, chosen)
    json.dumps(_jsonable(summary))  # serialisable
    exps = summary["experiments"]
    for name in ("exact_mdp-g0.999_gap", "sequence_tokens_to_threshold",
                 "sequence_success_at_budget", "gspo_tv_tj", "depth_tokens_to_threshold",
                 "depth_loss_ms"):
        assert name in exps, sorted(exps)
    for name, entry in exps.items():
        assert isinstance(entry["metric"], str) and entry["methods"], name
        for method, e in entry["methods"].items():
            assert e["ci_low"] <= e["median"] <= e["ci_high"], (name, method, e)
            assert e["seeds"] >= 1, (name, method)
    assert set(exps["sequence_success_at_budget"]["methods"]) == set(METHODS)
    assert "paired_vs_grpo" in exps["sequence_success_at_budget"]["methods"]["fiberpo_domain"]


@pytest.mark.slow  # the toy runs plus about 8 s of matplotlib
def test_figures_are_made_from_the_run_files(results):
    out, _ = results
    paths = make_figures(out)
    names = {p.name for p in paths}
    assert {"exact_curves.png", "sequence_success.png", "sequence_regimes.png",
            "gspo_tv.png", "depth.png"} <= names, names
    for p in paths:
        assert p.stat().st_size > 10_000, p  # a real image, not an empty canvas


def test_make_figures_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(ValueError, match="results_dir"):
        make_figures(tmp_path)


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    rp.add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", "x", "--workers", "1", "--only", "exact"])
    assert args.quick and args.workers == 1 and args.only == ["exact"]
    args.workers = 3
    with pytest.raises(SystemExit, match="workers"):
        rp.run(args)
