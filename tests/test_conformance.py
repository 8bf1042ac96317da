"""Every property of ``fibration_theory.conformance`` fails on an objective built to violate
it and holds on one built to satisfy it. The objectives are registered inside each test only
(and removed afterwards), as a user would register theirs."""

from __future__ import annotations

import math

import pytest
import torch

from fibration_theory import aggregation, conformance, losses
from fibration_theory.conformance import strategies as S
from fibration_theory.losses import Batch, Surrogate
from fibration_theory.rgf import RGF

#: examples per property in these tests: enough for each violation below, which every
#: drawn batch (or one in a few) exhibits
EXAMPLES = 12


@pytest.fixture
def register():
    """``register(fn, coupling=None) -> name``: a temporary objective, removed at teardown."""
    names = []

    def add(fn, coupling=None):
        name = f"test_{fn.__name__}"
        losses.register(name, "an objective of the conformance tests", coupling=coupling)(fn)
        names.append(name)
        return name

    yield add
    for name in names:
        losses.REGISTRY.pop(name)


def certify(name: str, pid: str, examples: int = EXAMPLES) -> conformance.Result:
    return conformance.certify(name, properties=[pid], max_examples=examples).results[pid]


def _weights(batch: Batch, agg: str = "seq-mean-token-mean") -> torch.Tensor:
    return aggregation.weights(batch.hierarchy, agg, batch.dtype)


def ppo_like(batch: Batch) -> Surrogate:
    """Token PPO-clip with seq-mean-token-mean weights, clip decided in log space."""
    x, a = batch.log_ratio, batch.advantages
    clip = ((a >= 0) & (x > math.log1p(0.2))) | ((a < 0) & (x < math.log1p(-0.2)))
    r = torch.where(clip, torch.zeros_like(x), x).exp()
    g = torch.where(clip, torch.where(a >= 0, 1.2, 0.8).to(x.dtype), r)
    return Surrogate(RGF(_weights(batch), g, a))


def vanilla(batch: Batch) -> Surrogate:
    """Unclipped importance sampling, token-mean weights."""
    return Surrogate(RGF(_weights(batch, "token-mean"), batch.log_ratio.exp(), batch.advantages))


def _node_mean_ratio(batch: Batch, level: str) -> torch.Tensor:
    """``[B, T]`` exp of the mean log-ratio of each token's ``level`` (gradients couple there)."""
    h = batch.hierarchy
    row = h.row_mean(batch.log_ratio)
    if level == "trajectory":
        mean = row
    elif level == "batch":
        mean = (h.row_sum(batch.log_ratio).sum() / h.num_tokens).expand_as(row)
    else:
        k = [lv.name for lv in h.levels].index(level)
        mean = h.node_mean(k, row)[h.levels[k].ids]
    return (batch.log_ratio + mean[:, None] - mean[:, None].detach()).exp()


# --------------------------------------------------------------------- on-policy
def test_on_policy_value(register):
    """Property: an objective whose gate is 2 at r = 1 fails on_policy_value (with a
    one-token counterexample) but keeps the right gradient; PPO-like holds both."""
    def offset(batch: Batch) -> Surrogate:
        return Surrogate(RGF(_weights(batch), batch.log_ratio.exp() + 1, batch.advantages))

    bad, good = register(offset), register(ppo_like)
    res = certify(bad, "on_policy_value")
    assert res.status == "fails", res
    assert res.counterexample["batch"]["mask"] == [[1]], res.counterexample
    assert res.counterexample["loss"] == pytest.approx(2 * res.counterexample["expected"])
    assert certify(bad, "on_policy_gradient").status == "holds"
    assert certify(good, "on_policy_value").status == "holds"
    assert certify(good, "on_policy_gradient").status == "holds"


def test_on_policy_gradient(register):
    """Property: G = r^2 has the right on-policy value but twice the gradient: it fails
    on_policy_gradient, and the counterexample's entry is twice the expected one."""
    def squared(batch: Batch) -> Surrogate:
        return Surrogate(RGF(_weights(batch), (2 * batch.log_ratio).exp(), batch.advantages))

    bad = register(squared)
    assert certify(bad, "on_policy_value").status == "holds"
    res = certify(bad, "on_policy_gradient")
    assert res.status == "fails", res
    assert res.counterexample["got"] == pytest.approx(2 * res.counterexample["expected"])
    assert certify(bad, "on_policy_gradient_outcome").status == "fails"


def test_on_policy_gradient_outcome_separates_sequence_objectives():
    """Property: GSPO pairs tokens with their row's mean advantage: it fails the token-level
    check on a row with two different advantages and holds with one advantage per row."""
    res = certify("gspo", "on_policy_gradient")
    assert res.status == "fails"
    assert len(set(res.counterexample["batch"]["advantages"][0])) == 2, res.counterexample
    assert certify("gspo", "on_policy_gradient_outcome").status == "holds"


# --------------------------------------------------------------------- advantages
def test_advantage_homogeneous(register):
    """Property: normalizing the advantages by their largest size makes loss(cA) = loss(A):
    fails; the PPO-like gate (it reads only the sign of A) holds."""
    def normalized(batch: Batch) -> Surrogate:
        a = batch.advantages
        return Surrogate(RGF(_weights(batch), batch.log_ratio.exp(),
                             a / a.abs().max().clamp_min(1e-12)))

    res = certify(register(normalized), "advantage_homogeneous")
    assert res.status == "fails", res
    assert res.counterexample["c"] != 1.0
    assert certify(register(ppo_like), "advantage_homogeneous").status == "holds"


# --------------------------------------------------------------------- coupling
@pytest.mark.parametrize("level", ["trajectory", "group", "domain", "batch"])
def test_coupling_measures_the_level(register, level):
    """Property: a gate whose gradient reads the mean log-ratio of a token's ``level`` is
    measured at that level: it holds when declared there and fails, naming the measured
    level, when declared one level finer."""
    def coupled(batch: Batch) -> Surrogate:
        return Surrogate(RGF(_weights(batch), _node_mean_ratio(batch, level), batch.advantages))

    finer = losses.COUPLINGS[losses.COUPLINGS.index(level) - 1]
    coupled.__name__ = f"coupled_{level}"
    exact = register(coupled, coupling=level)
    res = certify(exact, "coupling")
    assert (res.status, res.value) == ("holds", level), res
    coupled.__name__ = f"coupled_{level}_declared_{finer}"
    res = certify(register(coupled, coupling=finer), "coupling")
    assert (res.status, res.value) == ("fails", level), res
    assert res.counterexample["declared"] == finer


def test_coupling_undeclared_is_measured_not_judged(register):
    """Property: an objective that declares nothing gets n/a with the measured level."""
    res = certify(register(ppo_like), "coupling")
    assert (res.status, res.value) == ("n/a", "token")


def test_coupling_sees_a_regime_switch(register):
    """Property: a dependence through a jump (a token clipped when its row's mean log-ratio
    exceeds 0.1), invisible to second derivatives, is a trajectory coupling."""
    def switched(batch: Batch) -> Surrogate:
        x = batch.log_ratio
        off = (batch.hierarchy.row_mean(x) > 0.1)[:, None].detach()
        g = torch.where(off, torch.ones_like(x), x.exp())
        return Surrogate(RGF(_weights(batch), g, batch.advantages))

    res = certify(register(switched, coupling="token"), "coupling", examples=40)
    assert (res.status, res.value) == ("fails", "trajectory"), res


# --------------------------------------------------------------------- trust region
def test_trust_region_classes(register):
    """Property: unclipped IS has no trust region (fails, class none); the PPO-like clip is
    hard at exactly 1.2 / 0.8; SAPO is soft; FiberPO restores at its budgets
    (e^C+ = e^0.12, e^-C- = e^-0.05 for the whole trajectory, Sec 5.1)."""
    res = certify(register(vanilla), "trust_region")
    assert (res.status, res.value["class"]) == ("fails", "none"), res
    res = certify(register(ppo_like), "trust_region")
    assert (res.status, res.value["class"]) == ("holds", "hard")
    assert res.value["sweeps"]["trajectory, A>0"]["zero_from_ratio"] == pytest.approx(1.2, 1e-6)
    assert res.value["sweeps"]["token, A<0"]["zero_from_ratio"] == pytest.approx(0.8, 1e-6)
    assert certify("sapo", "trust_region").value["class"] == "soft"
    fib = certify("fiberpo", "trust_region").value
    assert fib["class"] == "restorative"
    up, down = fib["sweeps"]["trajectory, A>0"], fib["sweeps"]["trajectory, A<0"]
    assert up["restore_from_ratio"] == pytest.approx(math.exp(0.12), 1e-6)
    assert down["restore_from_ratio"] == pytest.approx(math.exp(-0.05), 1e-6)
    # zeroed beyond C* = (1 + 1/T) C with T = 4 (eq 10)
    assert up["zero_from_ratio"] == pytest.approx(math.exp(1.25 * 0.12), 1e-6)


# --------------------------------------------------------------------- extremes
def test_finite_extremes(register):
    """Property: torch.where over an overflowing exp gives a NaN gradient at large log-ratios
    (0 * inf in the backward): fails, with a dtype and a counterexample; a gate that never
    forms the clipped ratio holds; an unclipped exp(1e4) raises a ValueError naming
    log_prob, which is allowed."""
    def nan_grad(batch: Batch) -> Surrogate:
        x = batch.log_ratio
        g = torch.where(x < 50, x.exp(), torch.ones_like(x))
        return Surrogate(RGF(_weights(batch), g, batch.advantages))

    res = certify(register(nan_grad), "finite_extremes", examples=30)
    assert res.status == "fails", res
    assert "non-finite" in res.counterexample["message"]
    assert res.counterexample["dtype"].startswith("torch.")
    assert certify(register(ppo_like), "finite_extremes").status == "holds"
    res = certify(register(vanilla), "finite_extremes", examples=30)
    assert res.status == "holds" and res.value["log_prob_error"] > 0, res


def test_finite_extremes_other_errors_fail(register):
    """Property: an objective raising anything but a ValueError naming log_prob fails."""
    def shouting(batch: Batch) -> Surrogate:
        if float(batch.log_ratio.detach().abs().max()) > 100:
            raise ValueError("ratio too large")
        return ppo_like(batch)

    res = certify(register(shouting), "finite_extremes", examples=30)
    assert res.status == "fails" and "does not name log_prob" in res.counterexample["message"]


# --------------------------------------------------------------------- permutation
def test_permutation_invariant(register):
    """Property: weights that grow with the row index make row order matter: fails, with
    the permutation in the counterexample; the PPO-like objective holds."""
    def positional(batch: Batch) -> Surrogate:
        m = batch.mask.to(batch.dtype)
        rank = torch.arange(1, m.shape[0] + 1, dtype=batch.dtype)[:, None]
        mu = m * rank / (m * rank).sum()
        return Surrogate(RGF(mu, batch.log_ratio.exp(), batch.advantages))

    res = certify(register(positional), "permutation_invariant")
    assert res.status == "fails", res
    assert sorted(res.counterexample["permutation"]) == list(range(
        len(res.counterexample["batch"]["mask"])))
    assert certify(register(ppo_like), "permutation_invariant").status == "holds"


# --------------------------------------------------------------------- data parallel
def test_data_parallel_exact(register):
    """Property: weights normalized by the local token count (not the all-reduced one)
    differ between one process and two ranks: fails; batch-wide counts through the
    hierarchy (as every objective should use) hold."""
    def local(batch: Batch) -> Surrogate:
        m = batch.mask.to(batch.dtype)
        return Surrogate(RGF(m / m.sum(), batch.log_ratio.exp(), batch.advantages))

    res = certify(register(local), "data_parallel_exact", examples=8)
    assert res.status == "fails", res
    assert res.counterexample["rows_on_rank0"] >= 1
    assert certify(register(ppo_like), "data_parallel_exact", examples=8).status == "holds"


# --------------------------------------------------------------------- length bias
def test_length_bias(register):
    """Property: token-mean weights give a trajectory of length T the weight T/N: fails with
    two rows of lengths 1 and 2 (minimal) and exponent 1; seq-mean-token-mean holds, 0."""
    res = certify(register(vanilla), "length_bias")
    assert (res.status, res.value) == ("fails", 1.0), res
    assert sorted(res.counterexample["lengths"]) == [1, 2]
    res = certify(register(ppo_like), "length_bias")
    assert (res.status, res.value) == ("holds", 0.0), res


# --------------------------------------------------------------------- api
def test_certify_is_deterministic_and_validates():
    """Property: the same seed gives the same report; bad arguments raise ValueError naming
    them."""
    a = conformance.certify("gspo", properties=["on_policy_gradient"], max_examples=6)
    b = conformance.certify("gspo", properties=["on_policy_gradient"], max_examples=6)
    assert a.to_json() == b.to_json()
    assert a.to_json()["properties"]["on_policy_gradient"]["status"] == "fails"
    with pytest.raises(ValueError, match="name"):
        conformance.certify("no_such_objective")
    with pytest.raises(ValueError, match="properties"):
        conformance.certify("gspo", properties=["nope"])
    with pytest.raises(ValueError, match="max_examples"):
        conformance.certify("gspo", max_examples=0)


def test_strategy_guarantees():
    """Property: batches() keeps its docstring's promises (checked on drawn examples)."""
    from hypothesis import given, settings

    @settings(max_examples=30, deadline=None, database=None)
    @given(S.batches(min_rows=3, outcome=True))
    def check(case):
        assert case.rows >= 3
        assert bool(case.mask.any(1).all())
        assert case.mask.shape[1] == int(case.mask.sum(1).max())
        h = case.hierarchy()  # nesting checked by Hierarchy
        assert h.depth == 2
        for row, m in zip(case.advantages, case.mask):
            assert len(set(row[m].tolist())) == 1  # outcome: one advantage per row

    check()
