"""The tuning design (``simulations/tuning.py``) and the protocol's stages on a fake study.

This module doubles as a fake experiment ``toy`` (patched into the runner's
``EXPERIMENT_MODULES``): a run's score is a known function of its parameters, so the best
configuration of every design is known in advance.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from fibration_theory.simulations import methods as mt
from fibration_theory.simulations import plan as pl
from fibration_theory.simulations import protocol as pr
from fibration_theory.simulations import runner as rn
from fibration_theory.simulations import tuning as tu
from fibration_theory.simulations.lm import cli as lm_cli
from fibration_theory.simulations.lm.rl import LM_METHODS


@pytest.mark.parametrize("L", [2, 3, 4, 5, 7])
def test_the_orthogonal_array_holds_every_pair_of_levels_once_in_any_two_columns(L):
    oa = tu.orthogonal_array(L)
    assert oa.shape == (L * L, L + 1) and not oa[0].any()
    for i, j in itertools.combinations(range(L + 1), 2):
        pairs = sorted(zip(oa[:, i].tolist(), oa[:, j].tolist()))
        assert pairs == sorted(itertools.product(range(L), range(L))), (L, i, j)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_a_design_has_n_distinct_configurations_the_defaults_first(k):
    params = [f"p{i}" for i in range(k)]
    d = tu.design(params, 16)
    assert len(d.configs) == 16 and len({c.name for c in d.configs}) == 16
    assert d.configs[0].as_dict == {p: 1.0 for p in params}
    assert d.shared == ()
    if k == 1:
        fs = sorted(c.as_dict["p0"] for c in d.configs)
        ratios = np.diff(np.log(fs))
        assert np.allclose(ratios, math.log(3) / 5)  # log-spaced: 3**(1/(L+1)) apart
        assert {1 / 3, 1.0, 3.0, 9.0} <= set(fs) and (fs[0], fs[-1]) == (1 / 3, 9.0)
    else:
        for p in params:  # each level of each parameter appears equally often
            counts = {f: sum(c.as_dict[p] == f for c in d.configs) for f in tu.levels(4)}
            assert counts == {1 / 3: 4, 1.0: 4, 3.0: 4, 9.0: 4}, (p, counts)
    if k == 2:
        assert d.kind == "4x4 full factorial"
        assert {tuple(c.as_dict.values()) for c in d.configs} == set(
            itertools.product(tu.levels(4), repeat=2))
    if k >= 3:
        assert d.kind == "L16(4^5) orthogonal array"


def test_a_design_too_small_for_its_parameters_says_which_share_a_column():
    d = tu.design(list("abcde"), 9)
    assert d.shared == (("d", "e"),) and "sharing" in d.kind
    assert all(c.as_dict["d"] == c.as_dict["e"] for c in d.configs)
    assert len(d.configs) == 9 and d.configs[0].as_dict == dict.fromkeys("abcde", 1.0)


@pytest.mark.parametrize("n", [0, 8, 36, 2.0, True])
def test_the_number_of_configurations_must_be_a_square_of_a_prime_or_4(n):
    with pytest.raises(ValueError, match="^n:"):
        tu.design(["a", "b"], n)


def test_edge_configurations_move_one_parameter_beyond_its_range():
    d = tu.design(["a", "b"], 9)
    chosen = tu.Config((("a", 3.0), ("b", 1.0)))
    edges = d.edge_configs(chosen)
    assert [(p, w, c.as_dict) for p, w, c in edges] == [
        ("a", "high", {"a": 9.0, "b": 1.0}), ("a", "high", {"a": 27.0, "b": 1.0})]
    low = d.edge_configs(tu.Config((("a", 1 / 3), ("b", 1 / 3))))
    assert {(p, w) for p, w, _ in low} == {("a", "low"), ("b", "low")}
    assert sorted(c.as_dict["a"] for p, _, c in low if p == "a") == [1 / 27, 1 / 9]
    assert d.edge_configs(tu.Config((("a", 1.0), ("b", 1.0)))) == []


def test_choose_takes_the_best_mean_and_breaks_ties_towards_the_defaults():
    d = tu.design(["a"], 9)
    names = [c.name for c in d.configs]  # 3**(-1 + j/4), the default first
    assert names == ["x1", "x0.333", "x0.439", "x0.577", "x0.76", "x1.32", "x1.73", "x2.28",
                     "x3"]
    assert tu.choose(d, {"x1": [0.5, 0.5], "x0.333": [0.8, 0.2], "x1.73": [0.55]}).name == "x1.73"
    assert tu.choose(d, {"x1": [0.5], "x0.333": [0.5], "x0.577": [0.5]}).name == "x1"
    assert tu.choose(d, {"x0.333": [0.5], "x0.577": [0.5]}).name == "x0.577"
    with pytest.raises(ValueError, match="scores"):
        tu.choose(d, {"other": [1.0]})


def test_level_scales_are_tuned_parameters_of_their_own():
    m = mt.all_methods()["fiberpo_domain_levels"]
    assert m.tuned == ("c_plus", "c_minus", "eps", "domain_scale", "group_scale")
    assert m.params(1.0, 2) == {"c_plus": [0.06, 0.09, 0.12], "c_minus": [0.025, 0.0375, 0.05],
                                "eps": 0.04}
    p = m.params(1.0, 2, {"domain_scale": 3.0, "c_plus": 3.0})
    assert p["c_plus"] == [pytest.approx(0.36 * 1.5), pytest.approx(0.36 * 0.75), 0.36]
    assert p["c_minus"] == [pytest.approx(0.075), 0.0375, 0.05]
    assert m.params(1.0, 3, {"domain_scale": 3.0})["c_plus"][:2] == [0.18, 0.18]
    with pytest.raises(ValueError, match="factors"):
        m.params(1.0, 2, {"eps_low": 2.0})
    # a joint factor scales the loss parameters only, as before the level scales existed
    assert m.params(3.0, 2)["c_plus"] == [0.18, 0.27, 0.36]


def test_every_registered_method_tunes_parameters_it_has_on_every_plan():
    """Every method (whoever registers it) gets its design from its ``tuned`` names, with
    the same number of configurations, in both studies."""
    for plan in (pl.Plan.quick(), pl.Plan.full()):
        study = pl.study(plan)
        sizes = {m: len(study.design(m).configs) for m in study.methods}
        assert set(sizes.values()) == {plan.tune_configs}, sizes
        for m in study.methods:
            method = mt.all_methods()[m]
            params = dict(method.defaults) | mt.LEVEL_SCALES
            assert method.tuned and all(p in params for p in method.tuned), m
    for quick in (True, False):
        lp = lm_cli.make_plan(quick=quick, device="cpu", model=None, out="x")
        st = lm_cli.study(lp)
        assert {len(st.design(m).configs) for m in lp.methods} == {lp.tune_configs}
        assert set(lp.methods) == set(LM_METHODS) - {"fiberpo_slope", "fiberpo_hard"}
        variants = lm_cli.make_plan(quick=quick, device="cpu", model=None, out="x",
                                    methods=("grpo", "fiberpo_slope", "fiberpo_hard"))
        vst = lm_cli.study(variants)
        assert {len(vst.design(m).configs) for m in variants.methods} == {lp.tune_configs}


# ------------------------------------------------------------------ the protocol, fake study
#: the factor (log3) each toy parameter scores best at
TARGET = {"a": 1.0, "b": -1.0, "c": 0.0}


def run_one(config, spec):
    """Score: minus the squared log3 distance of each factor to ``TARGET`` (plus the seed's
    offset, the same for every configuration, so the choice does not depend on it)."""
    f = dict(spec.params)
    score = -sum((math.log(f[p], 3) - TARGET[p]) ** 2 for p in f) + 0.01 * (spec.seed % 7)
    return rn.RunResult([], {"score": score})


class _Method:
    def __init__(self, tuned):
        self.tuned = tuned

    def tuned_defaults(self):
        return dict.fromkeys(self.tuned, 1.0)


def _study(n: int, seeds=(1000, 1001)) -> pr.Study:
    methods = {"two": _Method(("a", "b")), "three": _Method(("a", "b", "c")),
               "one": _Method(("c",))}

    def job(m, config, role, seed):
        return rn.RunSpec("toy", m, config.name, role, seed, tuple(config.factors)), {"n": 1}

    return pr.Study(metric="score", methods=tuple(methods), n_configs=n, tune_seeds=seeds,
                    method_of=methods.__getitem__, job=job, variant=lambda c: c.name,
                    runs=lambda out, role: rn.load_runs(out, "toy", role=role))


def test_the_protocol_tunes_chooses_checks_edges_and_evaluates_at_the_choice(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setitem(rn.EXPERIMENT_MODULES, "toy", __name__)
    study = _study(9)
    evaluated = {}

    def eval_jobs(tuning):
        evaluated.update({m: rec["factors"] for m, rec in tuning.items()})
        return [study.job(m, tu.Config(tuple(rec["factors"].items())), "eval", 0)
                for m, rec in tuning.items()]

    tuning, failed = pr.run_protocol(tmp_path, study, eval_jobs, workers=1, progress=False)
    assert failed == 0
    on_disk = json.loads((tmp_path / "tuning.json").read_text())
    assert on_disk == json.loads(json.dumps(tuning))
    for rec in tuning.values():
        assert rec["n_configs"] == 9 and len(rec["configs"]) == 9
        best = max(rec["configs"], key=lambda e: e["score"])
        assert rec["chosen"]["variant"] == best["variant"] == rec["variant"]
        assert all(len(e["seed_scores"]) == 2 for e in rec["configs"])
    # the levels are 1/3, 1, 3: a to 3 (its upper edge), b to 1/3 (lower edge), c to 1
    assert tuning["three"]["factors"] == {"a": 3.0, "b": 1 / 3, "c": 1.0}
    assert tuning["two"]["factors"] == {"a": 3.0, "b": 1 / 3}
    assert tuning["one"]["factors"] == {"c": 1.0}  # 9 log-spaced values, 1 among them
    edge = {(e["parameter"], e["side"], e["variant"]) for e in tuning["three"]["edge"]}
    assert edge == {("a", "high", "x9_x0.333_x1"), ("a", "high", "x27_x0.333_x1"),
                    ("b", "low", "x3_x0.111_x1"), ("b", "low", "x3_x0.037_x1")}
    for e in tuning["three"]["edge"]:  # scored on the tuning seeds, never chosen
        assert len(e["seed_scores"]) == 2 and e["score"] < tuning["three"]["score"]
    assert tuning["one"]["edge"] == []
    assert evaluated == {m: rec["factors"] for m, rec in tuning.items()}
    assert len(rn.load_runs(tmp_path, "toy", role="eval")) == 3
    assert pr.edge_table(tuning)["two"] == {e["variant"]: e["score"]
                                            for e in tuning["two"]["edge"]}


def test_tuning_and_evaluation_seeds_are_disjoint_and_every_method_gets_the_same_count():
    plan = pl.Plan.full()
    tune = pl.tuning_jobs(plan)
    counts = {}
    for spec, _ in tune:
        counts[spec.method] = counts.get(spec.method, 0) + 1
    assert set(counts.values()) == {plan.tune_configs * plan.tune_seeds}, counts
    tuning = {"grpo": {"variant": "x1_x1", "factors": {"eps_low": 1.0, "eps_high": 1.0}}}
    ev = {s.seed for s, _ in pl.eval_jobs(plan, tuning, ["sequence"])}
    assert not {s.seed for s, _ in tune} & ev and len(ev) == plan.eval_seeds >= 10


def test_eval_and_depth_runs_use_the_chosen_configuration():
    plan = pl.Plan.quick()
    tuning = {"fiberpo_domain": {"variant": "x3_x1_x0.333",
                                 "factors": {"c_plus": 3.0, "c_minus": 1.0, "eps": 1 / 3}}}
    jobs = pl.eval_jobs(plan, tuning, ["sequence", "depth"])
    seq = [s for s, _ in jobs if s.experiment == "sequence"]
    depth = [s for s, _ in jobs if s.experiment == "depth"]
    assert {s.variant for s in seq + depth} == {"x3_x1_x0.333"}
    p = seq[0].param_dict
    assert p["c_plus"] == pytest.approx(0.36) and p["eps"] == pytest.approx(0.04 / 3)
    assert p["c_minus"] == 0.05
