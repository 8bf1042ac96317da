"""Figure conventions of both studies: one colour per method, token axes in the runs' own
scale, intervals on every bar, legends outside the data, the tuning sensitivity figures."""

from __future__ import annotations

import json

import matplotlib.colors as mcolors
import numpy as np
import pytest
from fibration_theory.simulations import figures as fg
from fibration_theory.simulations import plots
from fibration_theory.simulations.lm import report as lr
from fibration_theory.simulations.sensitivity import level_means, make_sensitivity_figures


def _lm_run(method: str, seed: int, top: int) -> dict:
    curve = [{"tokens": t, "reward": 0.1 + seed * 0.01 + t / (10 * top),
              "reward/add": 0.2} for t in (0, top // 2, top)]
    final = {f"mean_tv/{lv}": 0.01 * (seed + 1) for lv in ("token", "trajectory", "group",
                                                             "domain")}
    return {"spec": {"method": method, "seed": seed}, "curve": curve, "final": final}


def test_colours_follow_the_method_never_its_rank():
    assert plots.method_color("grpo") == plots.COLORS["grpo"]
    assert plots.method_color("a_new_method") == plots.method_color("a_new_method")
    names = ["depth0", "depth1", "depth2", "depth3", "depth4"]
    runs = [{"spec": {"method": m, "seed": s}, "final": {
        "tokens_to_threshold": 1000.0 * (5 - k) + s, "final_success": 0.5}}
        for k, m in enumerate(names) for s in range(3)]
    _, axes = fg.plot_token_efficiency(runs, 40_000)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    bars = axes[0].patches
    assert labels == names[::-1]  # sorted by tokens: the rank differs from the name order
    for lab, bar in zip(labels, bars):
        assert mcolors.to_hex(bar.get_facecolor()) == plots.method_color(lab)


def test_the_lm_reward_axis_counts_tokens_when_a_run_has_a_few_hundred():
    small = [_lm_run(m, s, 279) for m in ("grpo", "fiberpo") for s in range(2)]
    _, axes = lr.plot_reward_curves(small, ["add"])
    assert axes[0].get_xlabel() == "sampled tokens  [tokens]"
    assert axes[0].get_xlim()[1] >= 279 * 0.99
    big = [_lm_run(m, s, 60_000) for m in ("grpo",) for s in range(2)]
    assert lr.plot_reward_curves(big, ["add"])[1][0].get_xlabel().endswith("[thousands]")
    legend = axes[-1].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > axes[-1].bbox.x1 - 1


def test_the_lm_level_tv_bars_carry_intervals():
    runs = [_lm_run(m, s, 100) for m in ("grpo", "fiberpo") for s in range(4)]
    _, ax = lr.plot_level_tv(runs)
    errs = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    assert len(errs) == 2  # one per method
    segs = errs[0].errorbar.lines[2][0].get_segments()
    assert any(abs(s[1][1] - s[0][1]) > 0 for s in segs)  # seeds differ: a real interval


def test_sensitivity_figures_are_made_from_tuning_json(tmp_path):
    rec = {"design": "2x2 full factorial", "parameters": ["a", "b"], "tune_seeds": [1000],
           "defaults": {"a": 1.0, "b": 2.0}, "metric": "score",
           "configs": [{"values": {"a": a, "b": b}, "score": a + b / 10}
                       for a in (1.0, 3.0) for b in (2.0, 6.0)],
           "edge": [{"parameter": "a", "values": {"a": 9.0, "b": 6.0}, "score": 3.0}]}
    rec["chosen"] = {"values": {"a": 3.0, "b": 6.0}, "score": 3.6}
    xs, means = level_means(rec, "a")
    assert xs.tolist() == [1.0, 3.0] and means == pytest.approx([1.4, 3.4])
    (tmp_path / "tuning.json").write_text(json.dumps({"toy": rec}))
    paths = make_sensitivity_figures(tmp_path)
    assert [p.name for p in paths] == ["tuning_toy.png"] and paths[0].stat().st_size > 5000
    assert np.isfinite(means).all()
