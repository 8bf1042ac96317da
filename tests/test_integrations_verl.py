"""The verl policy loss against ``losses.compute`` (these properties need no verl; the tests
against verl's own code are in test_integrations_verl_engine.py).

verl calls a registered policy loss per micro-batch with keyword arguments and sums the
micro-batch losses, while FSDP averages gradients over the ``dp_size`` ranks; with
``config.global_batch_info`` the sum must be the objective on the whole mini-batch.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import verl as fverl
from fibration_theory.integrations import verl_config as fverl_config
from fibration_theory.losses.registry import get

#: float64 throughout; the split sums the same terms in another order (~1e-16 relative),
#: and the rescaling multiplies by ratios of integers
TOL = 1e-12
OBJECTIVES = losses.available()
#: objectives whose gates read one trajectory at a time: any row split is exact
ROW_LOCAL = [n for n in OBJECTIVES if get(n).coupling in fverl_config.ROW_LOCAL]
AGG_MODES = fverl.VERL_AGG_MODES
HYP = settings(deadline=None, derandomize=True, max_examples=25)


@st.composite
def batches(draw, min_rows: int = 2) -> dict:
    """A float64 ``[B, T]`` batch: ragged rows (some may be empty, at least one is not),
    log-ratios up to ~0.5 in size, outcome advantages (one value per row) and per-token
    rollout weights >= 0 with some exact zeros; junk values outside the mask."""
    b = draw(st.integers(min_rows, 8))
    t = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(0, t), min_size=b, max_size=b))
    if max(lengths) == 0:
        lengths[draw(st.integers(0, b - 1))] = draw(st.integers(1, t))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    old = -0.3 - torch.rand(b, t, generator=g, dtype=torch.float64)
    lp = old + 0.5 * (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).clone()
    w = torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    w = torch.where(torch.rand(b, t, generator=g) < 0.2, torch.zeros_like(w), w)
    junk = torch.full_like(lp, -5.0)
    return {"mask": mask, "lp": torch.where(mask, lp, junk), "old": torch.where(mask, old, junk),
            "adv": adv, "w": w, "lengths": lengths}


def _ours(name, batch, agg, config=None, weights=None, rows=None):
    rows = slice(None) if rows is None else rows
    lp = batch["lp"][rows].clone().requires_grad_(True)
    loss, metrics = fverl.make_policy_loss(name)(
        old_log_prob=batch["old"][rows], log_prob=lp, advantages=batch["adv"][rows],
        response_mask=batch["mask"][rows], loss_agg_mode=agg, config=config,
        rollout_is_weights=None if weights is None else weights[rows])
    loss.backward()
    return loss.detach(), lp.grad, metrics


def _reference(name, batch, agg, **params):
    """The objective on the whole batch; ``token-sum`` is ``mu_i = 1``: the token-mean
    objective times the token count."""
    lp = batch["lp"].clone().requires_grad_(True)
    n = int(batch["mask"].sum()) if agg == "token-sum" else 1
    agg = "token-mean" if agg == "token-sum" else agg
    out = losses.compute(name, lp, batch["old"], batch["adv"], batch["mask"], agg=agg, **params)
    (out.loss * n).backward()
    return out.loss.detach() * n, lp.grad, out


@pytest.mark.parametrize("name", OBJECTIVES)
@HYP
@given(batch=batches(), agg=st.sampled_from(AGG_MODES))
def test_plain_call_is_losses_compute(name, batch, agg):
    """Property: without global batch info the verl loss and its gradient are those of
    losses.compute with agg = loss_agg_mode."""
    loss, grad, metrics = _ours(name, batch, agg)
    ref_loss, ref_grad, out = _reference(name, batch, agg)
    assert abs(float(loss - ref_loss)) <= TOL, (name, agg, batch["lengths"], loss, ref_loss)
    assert torch.allclose(grad, ref_grad, rtol=0, atol=TOL), (name, agg, batch["lengths"])
    assert metrics["actor/ppo_kl"] == out.metrics["approx_kl/k1"]
    assert metrics["actor/fibration/loss"] == out.metrics["loss"]
    assert ("actor/pg_clipfrac_lower" in metrics) == (name in fverl.VERL_PEERS)


@st.composite
def splits(draw) -> tuple[dict, list[list[slice]]]:
    """A batch and a partition of its rows: ``dp`` ranks, each with consecutive micro-batches
    (a micro-batch may hold only empty rows, or none at all on a rank)."""
    batch = draw(batches(min_rows=4))
    b = batch["mask"].shape[0]
    cuts = sorted(draw(st.lists(st.integers(0, b), min_size=3, max_size=3)))
    bounds = [0, *cuts, b]
    micro = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    dp = 2
    return batch, [micro[: len(micro) // 2], micro[len(micro) // 2:]][:dp]


@pytest.mark.parametrize("name", ROW_LOCAL)
@HYP
@given(case=splits(), agg=st.sampled_from(AGG_MODES))
def test_micro_batches_over_ranks_give_the_mini_batch_objective(name, case, agg):
    """Property: with verl's global_batch_info, summing micro-batch losses on each rank and
    averaging over the dp ranks (as FSDP does) gives the loss and gradient of the objective
    on the whole mini-batch (every objective here gates one trajectory at a time)."""
    batch, ranks = case
    mask = batch["mask"]
    norm = 11.0  # verl's constant loss_scale_factor for seq-mean-token-sum-norm
    info = {"dp_size": len(ranks), "batch_num_tokens": int(mask.sum()),
            "global_batch_size": int(mask.any(1).sum()), "loss_scale_factor": norm}
    config = SimpleNamespace(global_batch_info=info, policy_loss={"loss_mode": f"fibration_{name}"})
    total = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros_like(batch["lp"])
    for micro in ranks:
        for rows in micro:
            loss, g, _ = _ours(name, batch, agg, config=config, rows=rows)
            total += loss / len(ranks)
            grad[rows] += g / len(ranks)
    extra = {"norm_length": norm} if name == "dr_grpo" else {}
    ref_loss, ref_grad, _ = _reference(name, batch, agg, **extra)
    if agg == "seq-mean-token-sum-norm" and name != "dr_grpo":
        # verl divides by loss_scale_factor; the objective without a norm_length of its own
        # by the padded width
        width = mask.shape[1]
        ref_loss, ref_grad = ref_loss * width / norm, ref_grad * width / norm
    msg = (name, agg, batch["lengths"], ranks)
    assert abs(float(total - ref_loss)) <= TOL, (*msg, float(total), float(ref_loss))
    assert torch.allclose(grad, ref_grad, rtol=0, atol=TOL), msg


def test_only_fiberpo_domain_is_coupled_above_the_trajectory():
    """The registry's declared couplings that the two tests below rely on: FiberPO-Domain is
    the one built-in objective whose gates read groups and domains."""
    assert [n for n in OBJECTIVES if n not in ROW_LOCAL] == ["fiberpo_domain"]


def _fiberpo_domain_on(rows, info, mode=None, groups=True):
    g = torch.Generator().manual_seed(5)
    mask = torch.ones(6, 4, dtype=torch.bool)
    old = -torch.rand(6, 4, generator=g, dtype=torch.float64)
    lp = (old + 0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.linspace(-1, 1, 6, dtype=torch.float64)[:, None].expand(6, 4)
    policy = {"loss_mode": "fibration_fiberpo_domain", **({"microbatch": mode} if mode else {})}
    config = SimpleNamespace(policy_loss=policy, global_batch_info=info)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])[rows] if groups else None
    return fverl.make_policy_loss("fiberpo_domain")(
        old[rows], lp[rows], adv[rows], mask[rows], "token-mean", config,
        group_ids=ids, domain_ids=None if ids is None else ["a"] * len(ids))


def test_a_coupled_objective_on_part_of_the_mini_batch_is_refused_unless_local():
    """Property: fibration_fiberpo_domain called by verl on a part of the mini-batch (a
    micro-batch, or one of several ranks) refuses, naming policy_loss.microbatch, since its
    groups and domains may span the parts; ``local`` opts into the approximate
    micro-batch-local gates and returns the objective on those rows; the whole mini-batch
    on one rank needs no opt-in; without group labels it refuses in any mode."""
    whole = {"dp_size": 1, "batch_num_tokens": 24, "global_batch_size": 6}
    for rows, info in ((slice(0, 3), whole), (slice(None), {**whole, "dp_size": 2}),
                       (slice(None), {**whole, "batch_num_tokens": 30})):
        with pytest.raises(ValueError, match="policy_loss.microbatch.*exact_forward_backward"):
            _fiberpo_domain_on(rows, info)
    with pytest.raises(ValueError, match="policy_loss.microbatch must be one of"):
        _fiberpo_domain_on(slice(0, 3), whole, mode="approximate")
    loss, _ = _fiberpo_domain_on(slice(0, 3), whole, mode="local")
    alone, _ = _fiberpo_domain_on(slice(0, 3), {"dp_size": 1, "batch_num_tokens": 12,
                                                "global_batch_size": 3})
    loss, alone = loss.detach(), alone.detach()
    assert abs(float(loss - alone * 12 / 24)) <= TOL, (float(loss), float(alone))
    full, _ = _fiberpo_domain_on(slice(None), whole)
    assert bool(torch.isfinite(full.detach()))
    for mode in (None, "local"):
        with pytest.raises(ValueError, match="group_ids.*hierarchical_ppo_loss"):
            _fiberpo_domain_on(slice(None), whole, mode=mode, groups=False)


@pytest.mark.parametrize("name", OBJECTIVES)
@HYP
@given(batch=batches(), agg=st.sampled_from(AGG_MODES))
def test_rollout_weights_weight_each_tokens_term(name, batch, agg):
    """Property: rollout_is_weights w give -sum_i mu_i w_i G(r)_i A_i, the unweighted
    objective's RGF triple with each token's term weighted (outcome advantages); for GMPO,
    whose term is a row's, w_i is the row's geometric mean of the weights (verl's geo_mean)."""
    loss, grad, _ = _ours(name, batch, agg, weights=batch["w"])
    lp = batch["lp"].clone().requires_grad_(True)
    n = int(batch["mask"].sum()) if agg == "token-sum" else 1
    base = "token-mean" if agg == "token-sum" else agg
    out = losses.compute(name, lp, batch["old"], batch["adv"], batch["mask"], agg=base)
    mask = batch["mask"]
    w = torch.where(mask, batch["w"], torch.zeros_like(batch["w"]))
    if name == "gmpo":
        logw = torch.where(mask, torch.log(w), torch.zeros_like(w))
        rows = torch.exp(logw.sum(-1) / mask.sum(-1).clamp_min(1))
        w = torch.where(mask, rows[:, None].expand_as(w), torch.zeros_like(w))
    w = w * n
    ref = -(out.weights * w * out.gated_ratio * batch["adv"]).sum()
    ref.backward()
    assert abs(float(loss - ref.detach())) <= TOL, (name, agg, batch["lengths"])
    assert torch.allclose(grad, lp.grad, rtol=0, atol=TOL), (name, agg, batch["lengths"])


def test_config_parameters_and_group_ids_reach_the_objective():
    """Property: config.policy_loss.fibration sets the objective's parameters, and
    group/domain ids passed by keyword build the upper levels."""
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    old = -torch.rand(4, 4, generator=g, dtype=torch.float64)
    lp = (old + 0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]], dtype=torch.float64).expand(4, 4)
    params = {"c_plus": [0.01, 0.02, 0.05], "c_minus": [0.01, 0.02, 0.03], "eps": 0.05}
    config = SimpleNamespace(policy_loss={"loss_mode": "fibration_fiberpo_domain",
                                          "fibration": params}, global_batch_info={})
    fn = fverl.make_policy_loss("fiberpo_domain")
    loss, _ = fn(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                 loss_agg_mode="seq-mean-token-mean", config=config,
                 group_ids=torch.tensor([0, 0, 1, 1]), domain_ids=["a", "a", "a", "a"])
    h = Hierarchy.from_padded(mask, group_ids=torch.tensor([0, 0, 1, 1]), domain_ids=["a"] * 4)
    ref = losses.compute("fiberpo_domain", lp, old, adv, mask, hierarchy=h, **params).loss
    loss, ref = loss.detach(), ref.detach()
    assert abs(float(loss - ref)) <= TOL, (float(loss), float(ref))
    # the same trajectory-level budgets without the upper levels give another loss
    plain = losses.compute("fiberpo_domain", lp, old, adv, mask, c_plus=0.05, c_minus=0.03,
                           eps=0.05).loss.detach()
    assert abs(float(loss - plain)) > 1e-6, "the levels made no difference: the check is vacuous"


def test_float32_inputs_give_a_float32_loss_with_a_gradient():
    """Property: verl's float32 log-probs get a float32 loss whose gradient reaches them."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    lp = torch.full((2, 3), -1.0, requires_grad=True)
    adv = torch.tensor([[1.0], [-1.0]]).expand(2, 3)
    loss, _ = fverl.make_policy_loss("fiberpo")(lp.detach(), lp, adv, mask, "seq-mean-token-mean")
    loss.backward()
    assert loss.dtype == torch.float32 and lp.grad is not None and float(lp.grad.abs().sum()) > 0


def test_empty_micro_batch_adds_nothing():
    """Property: a micro-batch of empty responses gives a zero loss and a zero gradient."""
    mask = torch.zeros(2, 3, dtype=torch.bool)
    lp = torch.full((2, 3), float("-inf")).requires_grad_(True)  # padding may hold anything
    loss, metrics = fverl.make_policy_loss("fiberpo")(lp.detach(), lp, torch.zeros(2, 3), mask)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(lp.grad.abs().sum()) == 0.0 and metrics == {}


@pytest.mark.parametrize("kwargs,needle", [
    ({"loss_agg_mode": "seq-mean"}, "loss_agg_mode"),
    ({"config": SimpleNamespace(policy_loss={"fibration": {"agg": "token-mean"}})}, "agg"),
    ({"config": SimpleNamespace(policy_loss={"fibration": {"c_plu": 0.1}})}, "c_plu"),
    ({"rollout_is_weights": -torch.ones(2, 3)}, "rollout_is_weights"),
])
def test_bad_input_names_the_argument(kwargs, needle):
    """Property: bad verl input raises ValueError naming what is wrong."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    lp = torch.zeros(2, 3)
    args = {"old_log_prob": lp, "log_prob": lp, "advantages": lp, "response_mask": mask}
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        fverl.make_policy_loss("fiberpo")(**args)


def test_make_policy_loss_rejects_unknown_parameter():
    """Property: binding a parameter the objective does not take is refused."""
    with pytest.raises(ValueError, match="c_plu"):
        fverl.make_policy_loss("fiberpo", c_plu=0.1)


def test_register_fills_a_registry_and_refuses_to_overwrite():
    """Property: register() adds fibration_<name> for every objective, callable as verl calls
    it; a foreign entry under one of those names is an error, not an overwrite."""
    reg: dict = {}
    names = fverl.register(reg)
    assert sorted(names) == sorted(f"fibration_{n}" for n in OBJECTIVES) == sorted(reg)
    assert fverl.register(reg) == names  # our own entries may be registered again
    foreign = {"fibration_fiberpo": lambda **kw: None}
    with pytest.raises(ValueError, match="fibration_fiberpo"):
        fverl.register(foreign)
