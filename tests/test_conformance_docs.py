"""docs/properties.md is the rendering of the committed docs/results/properties.json, and that
data is re-derived: every counterexample still fails its check, and the deterministic values
(trust-region classes and thresholds, length exponents) are recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fibration_theory import conformance, losses
from fibration_theory.conformance import properties as P
from fibration_theory.conformance import report
from fibration_theory.conformance.coupling import LEVELS, measure
from fibration_theory.conformance.search import Objective, Violation
from fibration_theory.conformance.strategies import Case

ROOT = Path(__file__).resolve().parents[1]
DATA = json.loads((ROOT / "docs/results/properties.json").read_text())
FAILURES = [(name, pid, e["counterexample"]) for name, o in DATA["objectives"].items()
            for pid, e in o["properties"].items() if e["status"] == "fails"]


def test_doc_is_the_rendering_of_the_data():
    """Property: docs/properties.md equals report.markdown of the committed JSON (rerun
    `fibration certify --json docs/results/properties.json --markdown docs/properties.md`
    after changing an objective or a property)."""
    assert (ROOT / "docs/properties.md").read_text() == report.markdown(DATA)


def test_data_covers_every_objective_and_property_in_the_schema():
    """Property: one entry per registered objective, each with every property and exactly
    the keys status, value, counterexample."""
    assert set(DATA) == {"objectives"}
    assert sorted(DATA["objectives"]) == losses.available()
    for o in DATA["objectives"].values():
        assert set(o) == {"properties"}
        assert list(o["properties"]) == list(conformance.PROPERTIES)
        for e in o["properties"].values():
            assert set(e) == {"status", "value", "counterexample"}
            assert e["status"] in ("holds", "fails", "n/a")
            assert (e["counterexample"] is not None) == (e["status"] == "fails") or \
                e["status"] == "n/a"


def _replay(name: str, pid: str, ce: dict) -> None:
    obj = Objective(name)
    case = Case.from_dict(ce["batch"])
    if pid == "coupling":
        level, _ = measure(obj, case)
        if level > LEVELS.index(losses.coupling(name)):
            raise Violation("coupled more coarsely than declared")
        return
    checks = {"on_policy_value": lambda: P.check_on_policy_value(obj, case),
              "on_policy_gradient": lambda: P.check_on_policy_gradient(obj, case),
              "length_bias": lambda: P.check_length_bias(obj, case),
              "advantage_homogeneous": lambda: P.check_homogeneous(obj, (case, ce["c"])),
              "permutation_invariant": lambda: P.check_permutation(obj, (case, ce["permutation"])),
              "finite_extremes": lambda: P.check_finite(
                  obj, (case, getattr(torch, ce["dtype"].removeprefix("torch."))))}
    checks[pid]()


@pytest.mark.parametrize("name, pid, ce", FAILURES, ids=[f"{n}-{p}" for n, p, _ in FAILURES])
def test_committed_counterexamples_still_fail(name, pid, ce):
    """Property: each minimal counterexample of the matrix, replayed, fails its check."""
    with pytest.raises(Violation):
        _replay(name, pid, ce)


@pytest.mark.parametrize("name", sorted(DATA["objectives"]))
def test_deterministic_values_rederived(name):
    """Property: the trust-region sweep and the length exponent, recomputed, equal the data."""
    props = DATA["objectives"][name]["properties"]
    res = conformance.certify(name, properties=["trust_region"]).results["trust_region"]
    assert res.to_json() == props["trust_region"]
    assert P.length_exponent(Objective(name)) == props["length_bias"]["value"]
