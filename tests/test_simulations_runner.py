"""Resumable runs (``fibration_theory.simulations.runner``) and the summary tables (the
protocol's tests are in ``test_simulations_tuning.py``).

This module doubles as a fake experiment: ``run_one`` below is what the runner calls for
the experiment name ``fake`` (patched into ``EXPERIMENT_MODULES``).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from fibration_theory.simulations import runner as rn
from fibration_theory.simulations import summary as sm

CALLS: list[int] = []
FAIL_SEEDS: set[int] = set()
INTERRUPT_AT: list[int] = []  # raise KeyboardInterrupt when this many runs were made


def run_one(config, spec):
    if INTERRUPT_AT and len(CALLS) >= INTERRUPT_AT[0]:
        raise KeyboardInterrupt  # a killed job: nothing of this run may be written
    CALLS.append(spec.seed)
    if spec.seed in FAIL_SEEDS:
        raise RuntimeError(f"boom {spec.seed}")
    return rn.RunResult([{"x": spec.seed, "y": math.inf}],
                        {"value": float(config["scale"] * spec.seed), "nan": math.nan})


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(rn.EXPERIMENT_MODULES, "fake", __name__)
    CALLS.clear()
    FAIL_SEEDS.clear()
    INTERRUPT_AT.clear()
    yield


def jobs(n: int, method: str = "m"):
    return [(rn.RunSpec("fake", method, "v", "eval", s, (("p", 1),)), {"scale": 2})
            for s in range(n)]


def test_each_run_is_written_once_and_skipped_on_rerun(tmp_path, fake):
    counts = rn.run_all(tmp_path, jobs(4), workers=1, progress=False)
    assert counts == {"done": 4, "skipped": 0, "failed": 0}
    assert sorted(CALLS) == [0, 1, 2, 3]
    runs = rn.load_runs(tmp_path, "fake")
    assert sorted(r["final"]["value"] for r in runs) == [0.0, 2.0, 4.0, 6.0]
    CALLS.clear()
    counts = rn.run_all(tmp_path, jobs(6), workers=1, progress=False)
    assert counts == {"done": 2, "skipped": 4, "failed": 0}
    assert sorted(CALLS) == [4, 5], "finished runs must not be recomputed"


def test_run_file_roundtrip_keeps_spec_config_and_non_finite_values(tmp_path, fake):
    rn.run_all(tmp_path, jobs(1), workers=1, progress=False)
    run = rn.read_run(tmp_path / jobs(1)[0][0].relpath())
    assert run["spec"]["params"] == {"p": 1}
    assert run["spec"]["config"] == {"scale": 2}
    assert run["curve"] == [{"x": 0, "y": math.inf}]
    assert math.isnan(run["final"]["nan"])
    # every line is valid JSON (no bare NaN/Infinity tokens)
    def refuse(token):
        pytest.fail(f"bare {token} in a run file")

    for line in (tmp_path / jobs(1)[0][0].relpath()).read_text().splitlines():
        json.loads(line, parse_constant=refuse)


def test_a_failed_run_is_logged_and_retried(tmp_path, fake):
    FAIL_SEEDS.add(2)
    counts = rn.run_all(tmp_path, jobs(4), workers=1, progress=False)
    assert counts == {"done": 3, "skipped": 0, "failed": 1}
    assert not (tmp_path / jobs(4)[2][0].relpath()).exists()
    err = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert err[0]["spec"]["seed"] == 2 and "boom 2" in err[0]["error"]
    FAIL_SEEDS.clear()
    CALLS.clear()
    counts = rn.run_all(tmp_path, jobs(4), workers=1, progress=False)
    assert counts == {"done": 1, "skipped": 3, "failed": 0} and CALLS == [2]


def test_a_killed_job_loses_only_the_run_in_flight(tmp_path, fake):
    INTERRUPT_AT.append(3)
    with pytest.raises(KeyboardInterrupt):
        rn.run_all(tmp_path, jobs(5), workers=1, progress=False)
    done = sorted(r["spec"]["seed"] for r in rn.load_runs(tmp_path, "fake"))
    assert len(done) == 3, done
    INTERRUPT_AT.clear()
    CALLS.clear()
    counts = rn.run_all(tmp_path, jobs(5), workers=1, progress=False)
    assert counts["done"] == 2 and counts["skipped"] == 3
    assert sorted(done + CALLS) == [0, 1, 2, 3, 4]


def test_an_interrupted_write_leaves_no_run_file(tmp_path, fake, monkeypatch):
    """The write goes to a temporary name first; if the move never happens the run is
    not done (and the temporary file is not mistaken for a result)."""
    def dead_replace(src, dst):
        raise OSError("killed before os.replace")

    monkeypatch.setattr(os, "replace", dead_replace)
    spec, cfg = jobs(1)[0]
    with pytest.raises(OSError):
        rn.write_run(tmp_path, spec, cfg, rn.RunResult([], {"value": 1.0}), 0.1)
    monkeypatch.undo()
    assert not rn.is_done(tmp_path, spec)
    assert rn.load_runs(tmp_path, "fake") == []
    monkeypatch.setitem(rn.EXPERIMENT_MODULES, "fake", __name__)
    counts = rn.run_all(tmp_path, jobs(1), workers=1, progress=False)
    assert counts["done"] == 1


def test_bad_jobs_are_refused(tmp_path, fake):
    with pytest.raises(ValueError, match="duplicate"):
        rn.run_all(tmp_path, jobs(2) + jobs(1), workers=1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        rn.run_all(tmp_path, jobs(1), workers=0, progress=False)
    with pytest.raises(ValueError, match="method"):
        rn.RunSpec("fake", "a/b", "v", "eval", 0)


def _run(method, seed, value):
    return {"spec": {"method": method, "seed": seed}, "final": {"v": value}}


def test_summary_table_pairs_by_seed():
    runs = [_run("grpo", s, 10.0 + s) for s in range(6)]
    runs += [_run("new", s, 8.0 + s) for s in range(6)]  # exactly 2 better on every seed
    t = sm.table(runs, "v", "test", lower_is_better=True, paired=True)
    assert t["methods"]["grpo"]["median"] == pytest.approx(12.5)
    p = t["methods"]["new"]["paired_vs_grpo"]
    assert p["median"] == pytest.approx(-2.0) and p["ci_high"] == pytest.approx(-2.0)
    pairs = [(8 + a, 10 + b) for a in range(6) for b in range(6)]
    expected = (sum(x < y for x, y in pairs) + 0.5 * sum(x == y for x, y in pairs)) / 36
    assert p["prob_better"] == pytest.approx(expected)
    assert "paired_vs_grpo" not in t["methods"]["grpo"]


def test_a_run_with_changed_parameters_or_config_is_redone(tmp_path, fake):
    rn.run_all(tmp_path, jobs(2), workers=1, progress=False)
    CALLS.clear()
    changed = [(rn.RunSpec("fake", "m", "v", "eval", 0, (("p", 2),)), {"scale": 2}),
               (rn.RunSpec("fake", "m", "v", "eval", 1, (("p", 1),)), {"scale": 3})]
    counts = rn.run_all(tmp_path, changed, workers=1, progress=False)
    assert counts == {"done": 2, "skipped": 0, "failed": 0} and sorted(CALLS) == [0, 1]
    assert rn.read_run(tmp_path / changed[1][0].relpath())["final"]["value"] == 3.0


def test_every_run_file_has_its_curve_as_csv_beside_it(tmp_path, fake):
    import csv

    rn.run_all(tmp_path, jobs(2), workers=1, progress=False)
    spec = jobs(2)[1][0]
    path = (tmp_path / spec.relpath()).with_suffix(".csv")
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows == [["x", "y"], ["1", "inf"]]  # the curve of run_one, inf kept as text
    assert rn.curve_csv([{"a": 1.5}, {"b": [1, 2]}]) == 'a,b\n1.5,\n,"[1, 2]"\n'
    assert rn.count_runs(tmp_path) == 2  # the CSV files are not run files


def test_a_finished_run_without_its_csv_gets_it_when_skipped(tmp_path, fake):
    rn.run_all(tmp_path, jobs(2), workers=1, progress=False)
    path = (tmp_path / jobs(2)[1][0].relpath()).with_suffix(".csv")
    expected = path.read_text()
    path.unlink()  # a run file made before the CSV logs existed
    CALLS.clear()
    counts = rn.run_all(tmp_path, jobs(2), workers=1, progress=False)
    assert counts["skipped"] == 2 and not CALLS  # nothing recomputed
    assert path.read_text() == expected


def test_tensorboard_logs_each_curve_against_tokens(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = rn.RunSpec("fake", "m", "v", "eval", 3)
    result = rn.RunResult([{"tokens": 0, "success": 0.25}, {"tokens": 96, "success": 0.5,
                                                             "note": "text", "bad": math.nan}],
                          {"auc": 0.4, "flag": True})
    folder = rn.log_tensorboard(tmp_path, spec, result)
    assert folder == tmp_path / "tensorboard" / "fake" / "m" / "v" / "eval-seed3"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["final/auc", "success", "tokens"]
    assert [(e.step, e.value) for e in acc.Scalars("success")] == [(0, 0.25), (96, 0.5)]
    assert acc.Scalars("final/auc")[0].value == pytest.approx(0.4)


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from fibration_theory import cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r"fibration-theory\[tensorboard\]"):
        rn.require_tensorboard()
    with pytest.raises(SystemExit, match="--tensorboard needs"):
        cli.main(["reproduce", "--quick", "--tensorboard", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
