"""The plugin-vs-paper gradient comparison: its data and figure on a tiny config."""

from __future__ import annotations

import dataclasses

import pytest
from fibration_theory.simulations import clamp_vs_fiberpo as cvf

TINY = cvf.CompareConfig(drifts=(0.0, 0.05, 0.5), noises=(0.005,), rows=8, batches=1)


def test_on_policy_rows_agree_and_drift_separates_the_gates():
    rows = cvf.measure(TINY)
    at = {(r["mapping"], r["sign"], r["drift"], r["regime"]): r for r in rows}
    for mapping in cvf.MAPPINGS:
        for sign in (1, -1):
            r = at[(mapping, sign, 0.0, "inside")]
            assert r["rel_diff"] < 1e-14 and r["cosine"] == pytest.approx(1.0, abs=1e-12)
    # drift 0.05 down: beyond C- = 0.05 with noise, the paper's gate rolls back (slope -T)
    # where the plugin (delta = C+ + C- = 0.17) passes: gradients differ by more than
    # GRPO's whole gradient
    assert at[("sum", -1, 0.05, "base")]["rel_diff"] > 1.0
    assert sum(r["trajectories"] for r in rows if r["mapping"] == "sum") == 3 * 2 * 8


def test_command_writes_data_and_a_figure_from_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cvf, "CompareConfig", lambda seed=0: dataclasses.replace(TINY,
                                                                               seed=seed))
    assert cvf.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "clamp_vs_fiberpo.png").stat().st_size > 0
    rows = cvf.read_csv(tmp_path / "clamp_vs_fiberpo.csv")
    assert rows == cvf.measure(TINY)
    (tmp_path / "clamp_vs_fiberpo.png").unlink()
    assert cvf.main(["--out", str(tmp_path), "--figure-only"]) == 0
    assert (tmp_path / "clamp_vs_fiberpo.png").exists()
    assert "| noise | delta | regime |" in capsys.readouterr().out


def test_docs_table_is_the_rendering_of_the_committed_data():
    """docs/variants.md shows the sigma = 0.05 rows of summary_lines of the committed CSV
    (rerun the command with --out docs/results/variants and paste them after a change)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = cvf.read_csv(root / "docs/results/variants/clamp_vs_fiberpo.csv")
    lines = cvf.summary_lines(rows)
    want = lines[:2] + [ln for ln in lines[2:] if ln.startswith("| 0.05 |")]
    doc = (root / "docs/variants.md").read_text()
    assert "\n".join(want) in doc
