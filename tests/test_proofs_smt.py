"""The SMT certificates: every claim proved (unsat), every false variant refuted (sat) with a
counterexample, a timeout reported as a failure, and the registry entries passing."""

from __future__ import annotations

import numpy as np
import pytest
import z3
from fibration_theory.proofs import cert_smt_gates as gates
from fibration_theory.proofs import cert_smt_trust_region as trm
from fibration_theory.proofs import smt
from fibration_theory.proofs.registry import load_all

PAIRS = {
    "D.9 n=(1,2)": trm.lemma_d9_pairs((1, 2), "k=2"),
    "D.9 n=(1,1,2)": trm.lemma_d9_pairs((1, 1, 2), "k=3"),
    "D.9 symbolic counts": trm.lemma_d9_pairs([z3.Real("n0"), z3.Real("n1")], "symbolic"),
    "D.3 n=(1,2)": trm.unit_tv_pairs((1, 2), "k=2"),
    "D.3 n=(1,1,2)": trm.unit_tv_pairs((1, 1, 2), "k=3"),
    "D.10 n=(1,2)": trm.apc_core_pairs((1, 2), "k=2"),
    "D.10 n=(1,1,1)": trm.apc_core_pairs((1, 1, 1), "k=3"),
    "D.2/D.11/D.12": trm.radius_pairs(2, 2),
    "D.2 steps": trm.lemma_d2_steps(3, 3),
    "g_agg": gates.g_agg_pairs(),
    "eq 20 T=2": gates.eq20_pairs(2, 1) + gates.eq20_pairs(2, -1),
    "Props 5.3-5.5 T=2": gates.property_pairs(2),
    "range T=2": gates.range_pairs(2),
    "Thm 4.5 identity": gates.identity_pairs(),
    "R o G o F near r = 1": gates.near_on_policy_pairs(2),
    "p.19 level decoupling": gates.level_decoupling_pairs(),
    "Remark C.4 T=3": gates.regime_lift_pairs(3),
}
CASES = [(name, i) for name, pairs in PAIRS.items() for i in range(len(pairs))]


@pytest.mark.parametrize(("group", "index"), CASES, ids=[f"{g}-{i}" for g, i in CASES])
def test_claim_proved_and_false_variant_refuted(group, index):
    pair = PAIRS[group][index]
    proof = smt.decide(pair.proof)
    assert proof.answer == "unsat", smt.describe(proof, "unsat")
    false = smt.decide(pair.false)
    assert false.answer == "sat", smt.describe(false, "sat")
    assert "=" in false.note  # the counterexample is printed
    assert "counterexample" in smt.describe(false, "sat")


def test_counterexample_really_violates_the_false_claim():
    """The printed model is a real counterexample: substituted back, the claim is false."""
    pair = trm.lemma_d9_pairs((1, 1), "k=2")[0]
    solver = z3.Solver()
    solver.add(*pair.false.hypotheses, z3.Not(pair.false.conclusion))
    assert solver.check() == z3.sat
    model = solver.model()
    assert z3.is_false(model.eval(pair.false.conclusion, model_completion=True))
    assert all(z3.is_true(model.eval(h, model_completion=True)) for h in pair.false.hypotheses)


def test_timeout_is_a_failure_never_a_pass():
    """A claim z3 cannot decide within a tiny resource limit is reported as TIMEOUT/unknown and
    fails the outcome."""
    x = [z3.Real(f"x{i}") for i in range(6)]
    hard = smt.claim("hard polynomial", "6 reals", [sum(v * v for v in x) <= 1],
                     z3.Product(*x) * 1000 <= 1)
    verdict = smt.decide(hard, rlimit=1000)
    assert verdict.answer == "unknown" and "resource limit" in verdict.note
    assert "TIMEOUT" in smt.describe(verdict, "unsat")
    old = smt.RLIMIT
    smt.RLIMIT = 1000
    try:
        out = smt.check_pairs([smt.Pair(hard, hard)])
    finally:
        smt.RLIMIT = old
    assert out.status == "fail" and "TIMEOUT" in out.detail


def test_a_false_claim_in_proof_position_fails():
    pair = trm.lemma_d9_pairs((1, 2), "k=2")[0]
    swapped = smt.Pair(pair.false, pair.proof)
    out = smt.check_pairs([swapped])
    assert out.status == "fail" and out.residual == 2


def test_float_constants_would_break_the_maximizer_claim():
    """Exact rationals matter: T_s/(2 n) = 4/6 as a float is not 2/3, and z3 then finds the
    closed-form maximizer infeasible. The certificate builds it from z3 rationals."""
    assert z3.simplify(z3.RealVal(4 / 6) * 3 == 2).eq(z3.BoolVal(False))
    pairs = trm.unit_tv_pairs((1, 3), "k=2")
    assert smt.decide(pairs[2].proof).answer == "unsat"


SMT_CERTS = [c for c in load_all().values() if c.method == "smt"]


@pytest.mark.parametrize("cert", SMT_CERTS, ids=[c.name for c in SMT_CERTS])
def test_registered_smt_certificates_pass(cert):
    record = cert.run(np.random.default_rng(0))
    assert record.status == "pass", record.detail
    assert "proved" in record.detail.lower() and "refuted" in record.detail.lower()


def test_every_paper_statement_family_has_an_smt_certificate():
    ids = {c.id for c in SMT_CERTS}
    assert {"V1", "V2", "V4", "V5", "V8", "V11", "V12", "V15"} <= ids


@pytest.mark.slow
@pytest.mark.parametrize("cert", SMT_CERTS, ids=[c.name for c in SMT_CERTS])
def test_registered_smt_certificates_pass_thorough(cert):
    record = cert.run(np.random.default_rng(0), thorough=True)
    assert record.status == "pass", record.detail
