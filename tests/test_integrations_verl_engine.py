"""The verl integration against verl 0.9.1's own code: its registry, an ``ActorConfig`` built
from verl's hydra config, the actor's loss path ``verl.workers.utils.losses.ppo_loss`` with
verl's global batch info, and verl's own policy losses (float64, relative 1e-12).

verl is installed ``--no-deps`` beside the project (README's test command); its declared
requirements pin a transformers older than the project's.
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl.trainer.ppo.core_algos",
                    reason="verl not installed: pip install --no-deps verl==0.9.1 plus "
                           "'fibration-theory[verl]'")

import torch
from docs_examples import run_example
from tensordict import TensorDict
from verl.trainer.ppo import core_algos
from verl.utils import tensordict_utils as tu
from verl.workers.utils.losses import ppo_loss
from verl_peers import CASES, CONFIG_OVERRIDES, actor_config, batch, measure

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import verl as fverl

#: float64 on both sides; the mapped comparisons differ by summation order only
TOL = 1e-12
F32_EPS = torch.finfo(torch.float32).eps
TARGET = "fibration_theory.integrations.verl.FiberPolicyLossConfig"


@pytest.fixture(scope="module")
def peer_config():
    return actor_config(**CONFIG_OVERRIDES)


def test_every_objective_is_in_verls_registry():
    """Property: importing the module registered fibration_<name> for every objective in
    verl's registry, and verl's get_policy_loss_fn returns ours."""
    assert sorted(fverl.REGISTERED) == sorted(f"fibration_{n}" for n in losses.available())
    for name in losses.available():
        fn = core_algos.get_policy_loss_fn(f"fibration_{name}")
        assert fn.fibration_objective == name
    foreign = dict(core_algos.POLICY_LOSS_REGISTRY)
    foreign["fibration_fiberpo"] = core_algos.POLICY_LOSS_REGISTRY["vanilla"]
    with pytest.raises(ValueError, match="fibration_fiberpo"):
        fverl.register(foreign)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_equals_verls_own_loss(case, peer_config):
    """Property: ours equals verl's own policy loss (value and log-prob gradient, relative
    1e-12, float64) on a batch where the clips and the dual clip act, with verl's clip
    settings changed from their defaults, after the documented convention mappings."""
    for seed in (0, 1):
        got = measure(case, peer_config, batch(seed))
        assert got["grad_norm"] > 0, f"{case.id}: zero gradient, the check is vacuous"
        assert got["value"] <= TOL and got["grad"] <= TOL, (case.id, seed, got)


def test_clip_settings_change_the_loss(peer_config):
    """Property: verl's clip_ratio_low/high/c reach the PPO-family losses: other settings give
    another loss, equal to verl's vanilla under those settings."""
    data = batch(0)
    base = actor_config()
    for name in ("ppo_clip", "dapo", "grpo", "dr_grpo"):
        case = next(c for c in CASES if c.objective == name and not c.weighted)
        fn = core_algos.get_policy_loss_fn(f"fibration_{name}")
        values = []
        for config in (base, peer_config):
            assert measure(case, config, data)["value"] <= TOL
            loss, _ = fn(old_log_prob=data["old"], log_prob=data["lp"],
                         advantages=data["adv"], response_mask=data["mask"],
                         loss_agg_mode=case.agg, config=config)
            values.append(float(loss))
        assert abs(values[0] - values[1]) > 1e-3, (name, values)


def test_metrics_are_named_and_split_as_verls():
    """Property: pg_clipfrac / pg_clipfrac_lower / ppo_kl equal the metrics of verl's
    counterpart loss (the dual-clipped tokens in pg_clipfrac_lower only)."""
    config = actor_config(clip_ratio_c=1.5, clip_ratio_low=0.05, clip_ratio_high=0.05)
    data = batch(0)
    for case in CASES:
        if case.weighted:
            continue
        args = {"old_log_prob": data["old"], "log_prob": data["lp"], "advantages": data["adv"],
                "response_mask": data["mask"], "loss_agg_mode": case.agg, "config": config}
        _, ours = core_algos.get_policy_loss_fn(f"fibration_{case.objective}")(**args)
        _, theirs = core_algos.get_policy_loss_fn(case.mode)(**args)
        for key, value in theirs.items():
            # verl computes these fractions of token counts in float32
            assert abs(ours[key] - value) <= 4 * F32_EPS, (case.id, key, ours[key], value)
    _, m = core_algos.get_policy_loss_fn("fibration_ppo_clip")(**args)
    assert m["actor/pg_clipfrac_lower"] > 0, "no dual-clipped token: the split is untested"


def test_fiberpo_refuses_clip_settings_it_cannot_honour():
    """Property: a clip setting other than verl's default is refused for an objective without
    clip ratio, naming the setting; a parameter verl's config owns is refused in the
    fibration mapping, naming verl's key."""
    data = batch(0)
    args = {"old_log_prob": data["old"], "log_prob": data["lp"], "advantages": data["adv"],
            "response_mask": data["mask"], "loss_agg_mode": "seq-mean-token-mean"}
    with pytest.raises(ValueError, match="clip_ratio_high"):
        core_algos.get_policy_loss_fn("fibration_fiberpo")(
            **args, config=actor_config(clip_ratio_high=0.28))
    config = actor_config(**{"policy_loss._target_": TARGET,
                             "+policy_loss.fibration.eps_low": 0.1})
    with pytest.raises(ValueError, match="clip_ratio_low"):
        core_algos.get_policy_loss_fn("fibration_dapo")(**args, config=config)


def test_command_line_sets_fiberpo_parameters():
    """Property: FiberPO's budgets given on verl's command line through FiberPolicyLossConfig
    reach the objective (the loss is the objective with those parameters, not the
    defaults)."""
    config = actor_config(**{
        "policy_loss._target_": TARGET, "policy_loss.loss_mode": "fibration_fiberpo",
        "+policy_loss.fibration.c_plus": 0.02, "+policy_loss.fibration.c_minus": 0.01,
        "+policy_loss.fibration.eps": 0.01, "loss_agg_mode": "seq-mean-token-mean"})
    assert isinstance(config.policy_loss, fverl.FiberPolicyLossConfig)
    data = batch(1)
    loss, _ = core_algos.get_policy_loss_fn("fibration_fiberpo")(
        old_log_prob=data["old"], log_prob=data["lp"], advantages=data["adv"],
        response_mask=data["mask"], loss_agg_mode=config.loss_agg_mode, config=config)
    params = {"c_plus": 0.02, "c_minus": 0.01, "eps": 0.01}
    ref = losses.compute("fiberpo", data["lp"], data["old"], data["adv"], data["mask"],
                         **params).loss
    default = losses.compute("fiberpo", data["lp"], data["old"], data["adv"],
                             data["mask"]).loss
    assert abs(float(loss - ref)) <= TOL * abs(float(ref))
    assert abs(float(ref - default)) > 1e-6, "the parameters made no difference"


def _micro_batch(rows: slice, data: dict, info: dict):
    """A verl actor micro-batch (``TensorDict`` as the engine hands it to ``ppo_loss``) and
    the model output's flat log-probs (a leaf), prompt length 2."""
    mask = data["mask"][rows]
    b, p = mask.shape[0], 2
    segs = []
    for j in range(b):
        n = int(mask[j].sum())
        segs += [torch.zeros(p - 1, dtype=torch.float64), data["lp"][rows][j, :n],
                 torch.zeros(1, dtype=torch.float64)]
    flat = torch.cat(segs).requires_grad_(True)
    td = TensorDict({"prompts": torch.ones(b, p, dtype=torch.long),
                     "responses": torch.ones(mask.shape, dtype=torch.long),
                     "attention_mask": torch.cat([torch.ones(b, p, dtype=torch.long),
                                                  mask.long()], 1),
                     "response_mask": mask.long(), "old_log_probs": data["old"][rows],
                     "advantages": data["adv"][rows], "rollout_is_weights": data["w"][rows]},
                    batch_size=[b])
    tu.assign_non_tensor(td, **info)
    return td, flat


def _grad_rows(flat_grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The flat gradient back in ``[B, T]`` layout."""
    out = torch.zeros(mask.shape, dtype=flat_grad.dtype)
    pos = 0
    for j in range(mask.shape[0]):
        n = int(mask[j].sum())
        out[j, :n] = flat_grad[pos + 1: pos + 1 + n]
        pos += n + 2
    return out


@pytest.mark.parametrize("objective,agg", [
    ("fiberpo", "seq-mean-token-mean"), ("fiberpo_clamp", "token-mean"),
    ("dapo", "token-sum"), ("dr_grpo", "seq-mean-token-sum-norm"), ("gmpo", "seq-mean-token-mean"),
    ("ppo_clip", "seq-mean-token-sum"), ("apc", "token-mean")])
def test_actor_loss_path_over_micro_batches(objective, agg):
    """Property: through verl's own actor loss (ppo_loss, which fills global_batch_info from
    the engine's batch data) the micro-batch losses of a mini-batch sum to the objective on
    the whole mini-batch, value and gradient (the engine sums micro-batch losses)."""
    data = batch(2)
    data["mask"][3, :2] = True  # no empty row: the row split below is the engine's
    mask = data["mask"]
    config = actor_config(**{"policy_loss.loss_mode": f"fibration_{objective}",
                             "loss_agg_mode": agg, "loss_scale_factor": 9})
    info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()),
            "global_batch_size": mask.shape[0]}
    total = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros_like(data["lp"])
    for rows in (slice(0, 3), slice(3, 6)):
        td, flat = _micro_batch(rows, data, info)
        loss, metrics = ppo_loss(config, {"log_probs": flat}, td)
        (g,) = torch.autograd.grad(loss, flat)
        total += loss.detach()
        grad[rows] = _grad_rows(g, mask[rows])
        assert "actor/pg_loss" in metrics
    lp = data["lp"].clone().requires_grad_(True)
    w = torch.where(mask, data["w"], torch.zeros_like(data["w"]))
    if objective == "gmpo":
        logw = torch.where(mask, torch.log(w), torch.zeros_like(w))
        w = torch.exp(logw.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)).expand_as(w)
    params = {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0} \
        if objective in ("dapo", "dr_grpo", "ppo_clip") else {}
    if objective in ("gmpo",):
        params = {"eps_low": 0.2, "eps_high": 0.2}
    if objective == "dr_grpo":
        params["norm_length"] = 9.0
    base = "token-mean" if agg == "token-sum" else agg
    out = losses.compute(objective, lp, data["old"], data["adv"] * w, mask,
                         hierarchy=Hierarchy.from_padded(mask), agg=base, **params)
    ref = out.loss * (int(mask.sum()) if agg == "token-sum" else 1)
    if agg == "seq-mean-token-sum-norm" and objective != "dr_grpo":
        ref = ref * mask.shape[1] / 9
    (ref_grad,) = torch.autograd.grad(ref, lp)
    scale = float(ref_grad.abs().max())
    assert scale > 0
    ref = ref.detach()
    assert abs(float(total - ref)) <= TOL * max(abs(float(ref)), 1e-300), (float(total), float(ref))
    assert float((grad - ref_grad).abs().max()) <= TOL * scale


def test_docs_example_runs(tmp_path):
    """Property: the verl example of docs/integrations.md runs as written against verl and
    passes its own checks."""
    proc = run_example("integrations.md", "verl", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hierarchical_actor_loss_gates_verls_prompt_groups_and_domains():
    """Property: hierarchical_ppo_loss (verl's ppo_loss, installed through the worker's
    set_loss_fn hook) hands the micro-batch's uid and the named domain column to
    fibration_fiberpo_domain: the loss and gradient are the objective with that hierarchy
    (to 1e-12), not the flat one; with policy_loss.microbatch=local, micro-batches holding
    whole groups and domains sum to the mini-batch, and without it verl's call refuses."""
    from functools import partial

    from tensordict.tensorclass import NonTensorData, NonTensorStack

    data = batch(2)
    data["mask"][3, :2] = True
    mask = data["mask"]
    uids = ["q1", "q1", "q1", "q2", "q2", "q2"]
    sources = ["math", "math", "math", "code", "code", "code"]
    params = {"c_plus": [0.01, 0.02, 0.04], "c_minus": [0.01, 0.02, 0.03], "eps": 0.05}
    config = actor_config(**{"policy_loss._target_": TARGET,
                             "policy_loss.loss_mode": "fibration_fiberpo_domain",
                             "+policy_loss.domain_key": "data_source",
                             "+policy_loss.fibration.c_plus": params["c_plus"],
                             "+policy_loss.fibration.c_minus": params["c_minus"],
                             "+policy_loss.fibration.eps": params["eps"],
                             "+policy_loss.microbatch": "local",
                             "loss_agg_mode": "seq-mean-token-mean"})
    loss_fn = partial(fverl.hierarchical_ppo_loss, config=config)  # what set_loss_fn takes
    info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": 6}
    total = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros_like(data["lp"])
    for rows in (slice(0, 3), slice(3, 6)):
        td, flat = _micro_batch(rows, data, info)
        for key, labels in (("uid", uids), ("data_source", sources)):
            td[key] = NonTensorStack.from_list([NonTensorData(x) for x in labels[rows]])
        loss, _ = loss_fn(model_output={"log_probs": flat}, data=td)
        (g,) = torch.autograd.grad(loss, flat)
        total += loss.detach()
        grad[rows] = _grad_rows(g, mask[rows])
    lp = data["lp"].clone().requires_grad_(True)
    w = torch.where(mask, data["w"], torch.zeros_like(data["w"]))
    h = Hierarchy.from_padded(mask, group_ids=uids, domain_ids=sources)
    ref = losses.compute("fiberpo_domain", lp, data["old"], data["adv"] * w, mask,
                         hierarchy=h, **params).loss
    (ref_grad,) = torch.autograd.grad(ref, lp)
    flat_ref = losses.compute("fiberpo_domain", data["lp"], data["old"], data["adv"] * w, mask,
                              c_plus=0.04, c_minus=0.03, eps=0.05).loss
    ref = ref.detach()
    assert abs(float(total - ref)) <= TOL * abs(float(ref)), (float(total), float(ref))
    assert float((grad - ref_grad).abs().max()) <= TOL * float(ref_grad.abs().max())
    assert abs(float(ref - flat_ref)) > 1e-6, "the hierarchy made no difference"
    exact = actor_config(**{"policy_loss._target_": TARGET,  # the default microbatch mode
                            "policy_loss.loss_mode": "fibration_fiberpo_domain",
                            "+policy_loss.domain_key": "data_source"})
    with pytest.raises(ValueError, match="policy_loss.microbatch.*exact_forward_backward"):
        fverl.hierarchical_ppo_loss(exact, {"log_probs": flat}, td)


def test_hierarchical_actor_loss_names_a_missing_column():
    """Property: a domain column absent from the batch is named in the error."""
    data = batch(2)
    config = actor_config(**{"policy_loss._target_": TARGET,
                             "policy_loss.loss_mode": "fibration_fiberpo_domain",
                             "+policy_loss.domain_key": "topic"})
    td, flat = _micro_batch(slice(0, 3), data, {"dp_size": 1, "batch_num_tokens": None,
                                               "global_batch_size": None})
    from tensordict.tensorclass import NonTensorData, NonTensorStack
    td["uid"] = NonTensorStack.from_list([NonTensorData(x) for x in ["a", "a", "b"]])
    with pytest.raises(ValueError, match="domain_key.*topic"):
        fverl.hierarchical_ppo_loss(config, {"log_probs": flat}, td)
