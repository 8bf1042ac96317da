"""The verdict table (``simulations/verdict.py``) and the settings flags / config files
(``simulations/settings.py``) of both study commands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from fibration_theory.simulations import plan as pl
from fibration_theory.simulations import reproduce as rp
from fibration_theory.simulations import settings as st
from fibration_theory.simulations import verdict as vd
from fibration_theory.simulations.lm import cli as lm_cli


def _runs(offsets: dict[str, np.ndarray]) -> list[dict]:
    base = np.linspace(0.2, 0.8, 8)
    out = [{"spec": {"method": "grpo", "seed": s}, "final": {"v": float(base[s])}}
           for s in range(8)]
    for m, off in offsets.items():
        out += [{"spec": {"method": m, "seed": s}, "final": {"v": float(base[s] + off[s])}}
                for s in range(8)]
    return out


def test_the_verdict_says_better_worse_or_not_resolved_from_the_paired_interval(tmp_path):
    runs = _runs({"up": np.full(8, 0.1), "down": np.full(8, -0.05),
                  "mixed": np.array([0.1, -0.1] * 4)})
    v = vd.verdict(runs, [vd.Score("v", "test"), vd.Score("v", "as a cost", True)],
                   study="toy", note="Quick plan: not the full verdict")
    rows = {r["method"]: r for r in v["scores"][0]["rows"]}
    assert rows["up"]["verdict"] == "better" and rows["down"]["verdict"] == "worse"
    assert rows["mixed"]["verdict"].startswith("not resolved")
    assert rows["up"]["paired_diff"]["median"] == pytest.approx(0.1)
    assert rows["up"]["paired_diff"]["ci_low"] == pytest.approx(0.1)  # the same on every seed
    # PoI over all 8 x 8 run pairs (the definition, computed directly)
    gaps = np.linspace(0.2, 0.8, 8)
    expected = np.mean([(a + 0.1 > b) + 0.5 * (a + 0.1 == b) for a in gaps for b in gaps])
    assert rows["up"]["poi"]["point"] == pytest.approx(expected)
    assert rows["up"]["seeds"] == 8 and "grpo" not in rows
    cost = {r["method"]: r["verdict"] for r in v["scores"][1]["rows"]}
    assert cost["up"] == "worse" and cost["down"] == "better"  # lower is better there
    text = vd.write(tmp_path, v, ["figures/a.png"])
    assert "Quick plan: not the full verdict" in text and "| up | 0.1 [0.1, 0.1]" in text
    assert f"- {tmp_path / 'figures/a.png'}" in text  # printed: where the figure is
    saved = (tmp_path / "verdict.md").read_text()  # saved: relative to the folder
    assert "- figures/a.png" in saved and str(tmp_path) not in saved
    assert saved.replace("- figures/a.png", f"- {tmp_path / 'figures/a.png'}") == text
    assert json.loads((tmp_path / "verdict.json").read_text())["scores"][0]["rows"]
    paths = vd.make_figures(tmp_path, runs, v, vd.Score("v", "test"))
    assert [p.name for p in paths] == ["verdict_poi.png", "verdict_profiles.png"]


def test_fewer_than_five_shared_seeds_are_never_a_verdict():
    for n in (1, 4):  # a method far above GRPO on every shared seed
        runs = [{"spec": {"method": m, "seed": s}, "final": {"v": 9.0 if m == "x" else 0.0}}
                for m in ("grpo", "x") for s in range(n)]
        row = vd.verdict(runs, [vd.Score("v", "t")], study="toy")["scores"][0]["rows"][0]
        assert row["verdict"] == "not resolved (fewer than 5 shared seeds)", n
    runs = [{"spec": {"method": m, "seed": s}, "final": {"v": 9.0 if m == "x" else 0.0}}
            for m in ("grpo", "x") for s in range(5)]
    row = vd.verdict(runs, [vd.Score("v", "t")], study="toy")["scores"][0]["rows"][0]
    assert row["verdict"] == "better"


def _args(argv: list[str], add) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_settings_come_from_a_config_file_and_flags_win(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.1, "epochs": 1, "tune_seeds": 2}))
    (tmp_path / "c.yaml").write_text("lr: 0.05\ngroup_size: 4\n")
    args = _args(["--out", "x", "--config", str(tmp_path / "c.json"), "--epochs", "3"],
                 rp.add_arguments)
    values = st.collect(args, pl.SETTINGS)
    assert values == {"lr": 0.1, "epochs": 3, "tune_seeds": 2}
    plan = pl.with_settings(pl.Plan.quick(), values)
    assert (plan.seq.lr, plan.seq.epochs, plan.tune_seeds, plan.tag) == (0.1, 3, 2, "-lr0.1-e3")
    spec = pl.tuning_jobs(plan, ["grpo"])[0][0]
    assert spec.variant == "x1_x1-lr0.1-e3"  # kept apart from the plan's own runs
    args = _args(["--out", "x", "--config", str(tmp_path / "c.yaml")], rp.add_arguments)
    assert st.collect(args, pl.SETTINGS) == {"lr": 0.05, "group_size": 4}


@pytest.mark.parametrize(("argv", "match"), [
    (["--lr", "0"], "--lr"), (["--group-size", "1"], "--group-size"),
    (["--tune-configs", "8"], "^n:"), (["--token-budget", "-5"], "--token-budget")])
def test_a_bad_setting_is_refused_naming_its_flag(argv, match):
    args = _args(["--out", "x", *argv], rp.add_arguments)
    with pytest.raises(ValueError, match=match):
        pl.with_settings(pl.Plan.quick(), st.collect(args, pl.SETTINGS))


def test_a_bad_config_file_is_refused_naming_config(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rate": 0.1}))
    (tmp_path / "broken.json").write_text("{")
    for name in ("bad.json", "broken.json", "missing.json"):
        args = _args(["--out", "x", "--config", str(tmp_path / name)], rp.add_arguments)
        with pytest.raises(ValueError, match="^--config"):
            st.collect(args, pl.SETTINGS)


def test_lm_settings_change_the_plan_and_its_name():
    args = _args(["--out", "x", "--lr", "0.001", "--n-layer", "3", "--epochs", "1",
                  "--minibatches", "1", "--tune-configs", "4"], lm_cli.add_arguments)
    values = st.collect(args, lm_cli.SETTINGS)
    plan = lm_cli.make_plan(quick=True, device="cpu", model=None, out="x",
                            epochs=values.pop("epochs"), minibatches=values.pop("minibatches"),
                            settings=values)
    assert plan.name == "quick-e1m1-L3-lr0.001" and plan.rl.lr == 0.001
    assert plan.warm.model.n_layer == 3 and plan.tune_configs == 4
    with pytest.raises(ValueError, match="--n-layer"):
        lm_cli.make_plan(quick=True, device="cpu", model="smollm2", out="x",
                         settings={"n_layer": 3})
