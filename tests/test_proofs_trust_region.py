"""Every trust-region certificate (V1-V5, F1, F2, F5, F6) passes on the true objects and fails
on a deliberately broken one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fibration_theory.proofs import cert_findings_tr as cf
from fibration_theory.proofs import cert_trust_region as ct
from fibration_theory.proofs import cert_vanishing as cv
from fibration_theory.proofs.registry import load_all

from fibration_theory import trust_region as tr
from fibration_theory.trust_region._pairs import group_pairs, resolve_state_weights


def run(check, seed: int = 0, **overrides):
    return check.certificate.run(np.random.default_rng(seed), **overrides)


# ------------------------------------------------------------------ broken objects
def halved_step(*args, **kwargs):
    """TV-TRPO closed form with half the step: per-state TVs t*/2 instead of t*."""
    sol = tr.solve_tv_trpo(*args, **kwargs)
    return dataclasses.replace(sol, delta=sol.delta / 2, state_tv=sol.state_tv / 2,
                               t_star=sol.t_star / 2)


def nonzero_at_one(adv, n, states, *, gamma, **kwargs):
    """Returns the gamma = 0.5 step whatever gamma is: no vanishing at gamma = 1."""
    return tr.solve_tv_trpo(adv, n, states, gamma=0.5, **kwargs)


def apc_without_own_term(delta, adv, n, states, *, radius, state_weights=None):
    """APC-Obj whose bound forgets to give back the entry's own deviation |Delta|."""
    pairs = group_pairs(n, states)
    w = resolve_state_weights(state_weights, pairs)
    b = np.maximum((pairs.T_s * (radius - pairs.tv(delta)))[pairs.codes], 0)
    g = np.clip(delta, -b, b)
    return float(np.sum((w / pairs.T_s)[pairs.codes] * n * (g * adv + adv)))


def no_retraction(delta, counts, states, *, radius):
    """The identity: nothing is pulled back into the trust region."""
    return np.asarray(delta, dtype=float)


def proper_tv(delta, counts, states):
    """Eq 39 with the 1/2 of eq 37 restored: the 'bug' of F1 fixed, so F1 must not reproduce."""
    ids, d = tr.tv_per_state(delta, counts, states)
    return ids, d / 2


def clamped_ratios(*args, **kwargs):
    """A TV-TRPO solver that never returns r < 0: F5's counterexample disappears."""
    sol = tr.solve_tv_trpo(*args, **kwargs)
    return dataclasses.replace(sol, delta=np.maximum(sol.delta, -1.0))


def doubled_apc(adv, n, states, *, radius, state_weights=None):
    res = tr.maximize_apc_exact(adv, n, states, radius=radius, state_weights=state_weights)
    return dataclasses.replace(res, delta=2 * res.delta)


# ------------------------------------------------------------------ table of cases
@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    check: object
    fast: dict            # overrides that shrink the run
    broken: dict          # overrides that must make it fail


CASES = [
    Case("V1", cv.check_vanishing, {"n_instances": 3},
         {"delta_trpo_fn": lambda g: (1 - g) / (4 * g)}),
    Case("V1-gamma1", cv.check_vanishing, {"n_instances": 2}, {"closed_form": nonzero_at_one}),
    Case("V2", ct.check_tv_trpo_maximizer, {"n_instances": 4}, {"closed_form": halved_step}),
    Case("V3", ct.check_objective_equivalence, {"n_instances": 10},
         {"apc": apc_without_own_term}),
    Case("V4", ct.check_retraction, {"max_examples": 60}, {"retract": no_retraction}),
    Case("V5", ct.check_apc_equivalence, {"n_instances": 2, "n_samples": 500},
         {"radius_fn": tr.delta_apc_def32}),
    Case("F1", cf.finding_tv_half, {"n_instances": 2}, {"estimator": proper_tv}),
    Case("F2", cf.finding_delta_apc_typesetting, {"n_instances": 2},
         {"delta_def32": tr.delta_apc}),
    Case("F5", cf.finding_negative_ratio, {"n_sweep": 60}, {"closed_form": clamped_ratios}),
    Case("F6", cf.finding_assumptions_in_expectation, {"n_instances": 2},
         {"study": lambda rng, n_instances: cf.f6_study(rng, n_instances=n_instances,
                                                         apc_sample=doubled_apc)}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_certificate_passes_on_true_objects(case):
    rec = run(case.check, **case.fast)
    assert rec.status == "pass", f"{case.name}: {rec.detail}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_certificate_fails_on_broken_object(case):
    rec = run(case.check, **case.fast, **case.broken)
    assert rec.status == "fail", f"{case.name} did not notice the broken object: {rec.detail}"


def uncentered_retraction(delta, counts, states, *, radius):
    """G(u) without Def D.8's centering: it meets both claims of Lemma D.9 (the clip alone
    already lands inside), so only the comparison with Def D.8 as written can catch it."""
    return tr.apc_clip(delta, counts, states, radius=radius)


def test_v4_checks_def_d8_as_written():
    rec = run(ct.check_retraction, max_examples=60, retract=uncentered_retraction)
    assert rec.status == "fail", rec.detail


def test_v1_broken_radius_caught_by_a_lemma():
    """A radius twice too large passes every upper bound, but not the tightness of Lemma D.12:
    the update on A = (1, -1) reaches only half of it."""
    rec = run(cv.check_vanishing, n_instances=2, delta_trpo_fn=lambda g: (1 - g) / (4 * g))
    assert rec.status == "fail" and "tightness of Lemma D.12" in rec.detail, rec.detail


def test_registered_ids_and_refs():
    mine = {c.id: c for c in load_all().values()
            if c.name.split(".")[0] in ("cert_trust_region", "cert_vanishing", "cert_findings_tr")}
    assert set(mine) == {"V1", "V2", "V3", "V4", "V5", "F1", "F2", "F5", "F6"}
    assert all(c.paper_ref for c in mine.values())


def test_new_seed_draws_new_instances():
    a = ct.draw_instance(np.random.default_rng(0))
    b = ct.draw_instance(np.random.default_rng(1))
    assert repr(a) != repr(b)
    r0 = run(ct.check_tv_trpo_maximizer, seed=0, n_instances=2)
    r1 = run(ct.check_tv_trpo_maximizer, seed=1, n_instances=2)
    assert r0.detail != r1.detail


def test_f6_exact_scenario_agrees_and_others_report():
    res = cf.f6_study(np.random.default_rng(7), n_instances=2)
    assert set(res) == set(cf.SCENARIOS)
    assert res["exact"]["n_differ"] == 0, res["exact"]
    assert all(np.isfinite(v) for r in res.values() for v in r.values())
