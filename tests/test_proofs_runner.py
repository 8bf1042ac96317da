"""`fibration verify`'s runner: streams derived from each certificate's name, --thorough,
findings read as verdicts with their detail."""

from __future__ import annotations

import numpy as np
import pytest
from fibration_theory.proofs import runner
from fibration_theory.proofs.registry import Certificate, Outcome, Record, certificate, load_all


def test_stream_depends_on_the_name_only():
    a = runner.certificate_rng(0, "cert_fbg.check_closed_forms").standard_normal(4)
    b = runner.certificate_rng(0, "cert_fbg.check_closed_forms").standard_normal(4)
    c = runner.certificate_rng(0, "cert_fbg.check_reflecting_exact").standard_normal(4)
    d = runner.certificate_rng(1, "cert_fbg.check_closed_forms").standard_normal(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_filtered_run_draws_the_full_runs_instance():
    """V3 alone and V3 among every certificate of its module get the same instances, hence
    bit-identical residuals (the old stream was seeded by the position in the filtered list)."""
    alone = runner.run_all(0, "V3", progress=False)
    module = runner.run_all(0, "cert_trust_region", progress=False)
    assert [r.id for r in alone] == ["V3"]
    same = [r for r in module if r.name == alone[0].name]
    assert len(module) > 1 and same[0].residual == alone[0].residual


def _record(id_, status, verdict="", method="numeric", detail="d"):
    return Record(id=id_, paper_ref="p", statement="s", method=method, status=status,
                  residual=0.0, tol=1.0, seconds=0.1, detail=detail, name="m.f", verdict=verdict)


def test_markdown_reads_findings_as_verdicts_with_detail():
    records = [_record("F1", "pass", "confirmed", detail="eq 39 / TV = 2"),
               _record("F3", "pass", "harmless", detail="differentiable at r = 1"),
               _record("V4", "pass", method="smt", detail="all 4 claims proved")]
    md = runner.format_markdown(records, 0, 1.0)
    assert "| F1 | p | s | numeric | 0.00e+00 | 1e+00 | confirmed |" in md
    assert "| F3 | p | s | numeric | 0.00e+00 | 1e+00 | harmless |" in md
    assert "- **F1 confirmed** (p): s. eq 39 / TV = 2" in md
    assert "- **F3 harmless** (p): s. differentiable at r = 1" in md
    assert "## SMT proofs" in md and "all 4 claims proved" in md
    assert "| pass |" in md  # a certificate that is not a finding keeps its status


def test_finding_that_fails_is_not_reproduced():
    cert = Certificate("F9", "p", "s", "numeric",
                       lambda rng: Outcome(residual=1.0, tol=0.0), "confirmed")
    assert cert.run(np.random.default_rng(0)).verdict == "not reproduced (fail)"


def test_every_finding_has_a_verdict_and_only_findings():
    for cert in load_all().values():
        assert (cert.finding is not None) == cert.id.startswith("F"), cert.name
    with pytest.raises(ValueError, match="verdict"):
        certificate("F99", "p", "s", "numeric")(lambda rng: Outcome(0.0, 0.0))
    with pytest.raises(ValueError, match="verdict"):
        certificate("V99", "p", "s", "numeric", finding="confirmed")(
            lambda rng: Outcome(0.0, 0.0))


def test_thorough_reaches_only_checks_that_take_it():
    seen = {}

    def plain(rng):
        return Outcome(0.0, 0.0)

    def sized(rng, *, thorough=False):
        seen["thorough"] = thorough
        return Outcome(0.0, 0.0)

    assert Certificate("V98", "p", "s", "numeric", plain).run(
        np.random.default_rng(0), thorough=True).status == "pass"
    Certificate("V97", "p", "s", "numeric", sized).run(np.random.default_rng(0), thorough=True)
    assert seen == {"thorough": True}
