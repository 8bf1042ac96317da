"""What the studies share: the results-folder comparison (``simulations/compare.py``), the
random streams (``simulations/streams.py``) and a layering without cycles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fibration_theory.simulations import compare as cp
from fibration_theory.simulations import runner as rn
from fibration_theory.simulations import streams

SPEC = rn.RunSpec("sequence", "grpo", "x1", "eval", 0, (("eps", 0.2),))


def _folder(root: Path, *, seconds: float, value: float, source: str) -> Path:
    cfg = {"source": source, "lr": 0.3}
    rn.write_run(root, SPEC, cfg, rn.RunResult([{"tokens": 10, "success": 0.5}],
                                               {"auc": value, "sec_per_update": seconds,
                                                "loss_ms": seconds, "nan": math.nan}), seconds)
    (root / "tuning.json").write_text(json.dumps({"grpo": {"factor": 1.0}}))
    return root


def test_compare_ignores_timings_and_folder_paths_and_reports_every_other_field(tmp_path):
    a = _folder(tmp_path / "a", seconds=1.0, value=0.7, source=f"warm:{tmp_path / 'a'}/ws")
    b = _folder(tmp_path / "b", seconds=9.0, value=0.7, source="warm:ws")
    assert cp.compare(a, b) == ([], 2)
    assert cp.main([str(a), str(b)]) == 0
    c = _folder(tmp_path / "c", seconds=1.0, value=0.7000001, source="warm:elsewhere")
    diffs, _ = cp.compare(a, c)
    name = SPEC.relpath().as_posix()
    assert diffs == [f"{name}: line 1: config.source: 'warm:ws' != 'warm:elsewhere'",
                     f"{name}: line 3: auc: 0.7 != 0.7000001"]
    (c / SPEC.relpath()).unlink()
    assert cp.compare(a, c)[0] == [f"{name}: only in A"]
    assert cp.main([str(a), str(c)]) == 1


def test_compare_treats_an_int_and_a_float_as_different(tmp_path):
    diffs: list[str] = []
    cp._diff({"x": 1}, {"x": 1.0}, "", diffs)
    assert diffs == ["x: 1 != 1.0"]


def test_the_stream_table_keeps_the_seeds_of_the_published_results():
    # the seeds every study has used since its first results (changing one changes them)
    assert streams.seed_for("sequence/train", 3) == 10_007 * 3 + 1
    assert streams.seed_for("exact/env", 4) == 7_919 * 4 + 3
    assert streams.seed_for("exact/run", 4) == 104_729 * 4 + 17
    assert streams.seed_for("lm/eval", 2, 40) == 20_040
    assert streams.seed_for("lm/heldout") == 2_027 and streams.seed_for("warm/checks") == 7_919
    assert streams.seed_for("lm/shots", step=2) == 1_002
    assert streams.seed_for("depth/timing", 5) == 104


def test_named_streams_are_fnv1a_and_refuse_a_seed():
    assert streams.fnv1a("") == 2166136261
    assert streams.fnv1a("a") == 0xE40C292C  # the published FNV-1a test vector
    a = streams.numpy_rng("sequence_auc_success").random(3)
    assert np.array_equal(a, np.random.default_rng(streams.fnv1a("sequence_auc_success"))
                          .random(3))
    with pytest.raises(ValueError, match="tag"):
        streams.seed_for("some table", seed=1)


@pytest.mark.parametrize(("module", "never"), [
    ("fibration_theory.simulations.lm.report", "fibration_theory.simulations.figures"),
    ("fibration_theory.simulations.lm.rl", "fibration_theory.simulations.token_efficiency"),
])
def test_the_lm_study_uses_the_shared_modules_not_the_other_study(module, never):
    import subprocess
    import sys

    code = f"import sys, {module}; print({never!r} in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert proc.stdout.strip() == "False"
