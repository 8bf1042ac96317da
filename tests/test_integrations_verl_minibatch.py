"""verl's actor across micro-batches: with ``exact_forward_backward`` the summed micro-batch
gradients of a ``fibration_*`` loss are the whole mini-batch's (float64), through verl 0.9.1's
own ``FSDPEngine.forward_backward_batch`` (its micro-batch split, backward loop and output
post-processing), its ``ppo_loss`` and ``no_padding_2_padding``.

Only the model's forward is replaced (``forward_step``: a tiny float64 policy over the token
ids, returning verl's no-padding log-probs), and verl's device lookups answer ``cpu``. Prompt
groups (``uid``) and domains (``data_source``) are interleaved so that each spans both
micro-batches; the old log-probs differ from the current ones so that the gates act. The
reference is the objective on the whole mini-batch, computed here from the policy directly;
the loss without the wrapper (each micro-batch gated on its own rows) is checked to differ.
"""

from __future__ import annotations

import os
import tempfile
from functools import partial
from types import SimpleNamespace

import pytest

pytest.importorskip("verl.trainer.ppo.core_algos",
                    reason="verl not installed: pip install --no-deps verl==0.9.1 plus "
                           "'fibration-theory[verl]'")

import torch
import torch.distributed as dist
from gloo_ranks import spawn_ranks
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorData, NonTensorStack
from verl.utils import seqlen_balancing
from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.engine.utils import detach_tree
from verl_peers import actor_config

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import verl as fverl
from fibration_theory.integrations.verl_minibatch import exact_forward_backward, install

TOL = 1e-12
DIFFERENT = 1e-3
TARGET = "fibration_theory.integrations.verl.FiberPolicyLossConfig"
B, P, T, V, D = 8, 2, 6, 40, 5
LENGTHS = [6, 3, 5, 0, 4, 6, 2, 5]  # one empty response
UIDS = ["q1", "q2", "q3", "q1", "q2", "q3", "q1", "q2"]
SOURCES = ["math", "code", "math", "math", "code", "math", "math", "code"]
PARAMS = {"c_plus": [0.01, 0.02, 0.04], "c_minus": [0.01, 0.02, 0.03], "eps": 0.05}


class Policy(torch.nn.Module):
    """``log pi(token) = -softplus(emb[token] . theta)``, float64."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("emb", torch.randn(V, D, generator=g, dtype=torch.float64))
        self.theta = torch.nn.Parameter(torch.randn(D, generator=g, dtype=torch.float64))

    def padded(self, responses: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.softplus(self.emb[responses] @ self.theta)

    def forward(self, micro_batch) -> torch.Tensor:
        """verl's no-padding log-probs: per row ``P + len`` values, response token ``k`` at
        position ``P - 1 + k`` (the model output shifted by one), as a jagged tensor."""
        lp = self.padded(micro_batch["responses"])
        lens = micro_batch["response_mask"].sum(-1).tolist()
        rows = [torch.cat([torch.zeros(P - 1, dtype=lp.dtype), lp[j, :n],
                           torch.zeros(1, dtype=lp.dtype)]) for j, n in enumerate(lens)]
        return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


class TinyEngine(transformer_impl.FSDPEngine):
    """verl's FSDP engine with the model's forward replaced; everything else is verl's."""

    def __init__(self, policy: Policy):  # no FSDP module, no device mesh: one CPU rank
        self.module = policy
        self.ulysses_sequence_parallel_size = 1
        self.ulysses_device_mesh = None
        self.engine_config = SimpleNamespace(use_no_sync_for_gradient_accumulation=True)
        self.scaler = None

    def forward_step(self, micro_batch, loss_function, forward_only):
        model_output = {"log_probs": self.module(micro_batch)}
        if loss_function is None:
            loss, metrics = torch.tensor(1.0), {}
        else:
            loss, metrics = loss_function(model_output=model_output, data=micro_batch,
                                          dp_group=self.get_data_parallel_group())
        return loss, {"model_output": detach_tree(model_output), "loss": loss.detach().item(),
                      "metrics": metrics}


def _cpu_devices() -> None:
    """verl looks up its device by name; on a CPU-only torch its lookups answer ``cuda``."""
    transformer_impl.get_device_id = lambda: "cpu"
    seqlen_balancing.get_device_name = lambda: "cpu"


@pytest.fixture(scope="module", autouse=True)
def one_rank():
    """A one-rank gloo group (verl's engine all-reduces the token count) and verl's device
    lookup answering ``cpu``."""
    saved = transformer_impl.get_device_id, seqlen_balancing.get_device_name
    _cpu_devices()
    with tempfile.TemporaryDirectory() as tmp:
        owned = not dist.is_initialized()
        if owned:
            dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 's')}",
                                    rank=0, world_size=1)
        yield
        if owned:
            dist.destroy_process_group()
    transformer_impl.get_device_id, seqlen_balancing.get_device_name = saved


def mini_batch(policy: Policy, seed: int) -> TensorDict:
    """A mini-batch in verl's actor format (padded prompts/responses), off-policy."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]
    responses = torch.randint(3, V, (B, T), generator=g)
    with torch.no_grad():
        current = policy.padded(responses)
    old = current + 0.4 * (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous()
    w = 0.5 + torch.rand(B, T, generator=g, dtype=torch.float64)
    td = TensorDict({"prompts": torch.ones(B, P, dtype=torch.long), "responses": responses,
                     "input_ids": torch.cat([torch.ones(B, P, dtype=torch.long), responses], 1),
                     "attention_mask": torch.cat([torch.ones(B, P, dtype=torch.long),
                                                  mask.long()], 1),
                     "response_mask": mask.long(), "loss_mask": mask.long(),
                     "old_log_probs": old, "advantages": adv, "rollout_is_weights": w},
                    batch_size=[B])
    td["uid"] = NonTensorStack.from_list([NonTensorData(x) for x in UIDS])
    td["data_source"] = NonTensorStack.from_list([NonTensorData(x) for x in SOURCES])
    tu.assign_non_tensor(td, use_dynamic_bsz=False, micro_batch_size_per_gpu=B // 2,
                         global_batch_size=B)
    return td


def config(agg: str, microbatch: str = "exact"):
    return actor_config(**{"policy_loss._target_": TARGET,
                           "+policy_loss.microbatch": microbatch,
                           "policy_loss.loss_mode": "fibration_fiberpo_domain",
                           "+policy_loss.domain_key": "data_source",
                           "+policy_loss.fibration.c_plus": PARAMS["c_plus"],
                           "+policy_loss.fibration.c_minus": PARAMS["c_minus"],
                           "+policy_loss.fibration.eps": PARAMS["eps"],
                           "loss_agg_mode": agg})


def whole(policy: Policy, td: TensorDict, agg: str) -> torch.Tensor:
    """dL/dtheta of the objective on the whole mini-batch, normalised as verl's agg_loss."""
    mask = td["response_mask"].bool()
    lp = policy.padded(td["responses"])
    h = Hierarchy.from_padded(mask, group_ids=UIDS, domain_ids=SOURCES)
    base = "token-mean" if agg == "token-sum" else agg
    out = losses.compute("fiberpo_domain", lp, td["old_log_probs"],
                         td["advantages"] * td["rollout_is_weights"], mask, hierarchy=h,
                         agg=base, **PARAMS)
    scale = {"token-mean": 1.0, "token-sum": float(mask.sum())}.get(agg, h.num_traj / B)
    (grad,) = torch.autograd.grad(out.loss * scale, policy.theta)
    return grad


def micro_batched(engine: TinyEngine, td: TensorDict, agg: str, exact: bool,
                  dynamic: bool = False):
    """verl's engine over the mini-batch's micro-batches (two of 4 rows, or with ``dynamic``
    verl's dynamic batch sizes: rows regrouped by length, at most 16 tokens per micro-batch):
    ``(theta.grad, output)``."""
    cfg = config(agg, "exact" if exact else "local")
    td = td.clone()
    if dynamic:
        tu.assign_non_tensor(td, use_dynamic_bsz=True, max_token_len_per_gpu=16)
    loss_fn = partial(fverl.hierarchical_ppo_loss, config=cfg)  # what set_loss_fn takes
    run = engine.forward_backward_batch
    if exact:
        run = exact_forward_backward(run, cfg)
    engine.module.zero_grad(set_to_none=True)
    out = run(td, loss_fn, forward_only=False)
    return engine.module.theta.grad.clone(), out


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("agg,dynamic", [("seq-mean-token-mean", False), ("token-mean", False),
                                         ("token-sum", False), ("seq-mean-token-mean", True)])
def test_summed_micro_batch_gradients_are_the_whole_mini_batchs(agg, dynamic):
    """Property: through verl's engine, with groups and domains spanning its micro-batches
    (fixed sizes, or verl's dynamic batch sizes, which also reorder the rows), the wrapped
    engine's accumulated gradient equals the whole mini-batch's to float64 rounding; the
    plain engine (each micro-batch gated on its own rows) differs."""
    policy = Policy()
    engine = TinyEngine(policy)
    td = mini_batch(policy, 0)
    ref = whole(policy, td, agg)
    grad, out = micro_batched(engine, td, agg, exact=True, dynamic=dynamic)
    assert len(out["loss"]) >= 2, "verl did not split the mini-batch"
    assert _rel(grad, ref) <= TOL, (agg, _rel(grad, ref))
    local, _ = micro_batched(engine, td, agg, exact=False, dynamic=dynamic)
    assert _rel(local, ref) > DIFFERENT, (agg, _rel(local, ref))


def test_fresh_mini_batch_runs_no_pass_and_is_exact():
    """Property: with ``fresh=True`` (old log-probs = current, ratio 1) no forward-only pass
    runs and the gradient is still the whole mini-batch's."""
    policy = Policy()
    engine = TinyEngine(policy)
    td = mini_batch(policy, 1)
    with torch.no_grad():
        td["old_log_probs"] = policy.padded(td["responses"])
    ref = whole(policy, td, "seq-mean-token-mean")
    calls = []
    inner = engine.forward_backward_batch

    def counting(data, loss_function, forward_only=False):
        calls.append(forward_only)
        return inner(data, loss_function, forward_only=forward_only)

    cfg = config("seq-mean-token-mean")
    run = exact_forward_backward(counting, cfg, fresh=True)
    run(td.clone(), partial(fverl.hierarchical_ppo_loss, config=cfg), forward_only=False)
    assert calls == [False]
    assert _rel(policy.theta.grad, ref) <= TOL


def test_wrapped_engine_refuses_the_plain_actor_loss():
    """Property: the wrapper with verl's own ``ppo_loss`` (which hands the policy loss no row
    tags) raises a ValueError instead of silently gating per micro-batch."""
    from verl.workers.utils.losses import ppo_loss

    policy = Policy()
    engine = TinyEngine(policy)
    cfg = config("seq-mean-token-mean")
    run = exact_forward_backward(engine.forward_backward_batch, cfg)
    with pytest.raises(ValueError, match="hierarchical_ppo_loss"):
        run(mini_batch(policy, 0), partial(ppo_loss, config=cfg), forward_only=False)


def test_install_on_verls_training_worker_steps_with_the_whole_mini_batchs_gradient():
    """Property: ``install`` on verl's own ``TrainingWorker`` (its ``set_loss_fn``), then
    verl's ``BaseEngine.train_batch`` (zero_grad, forward_backward_batch, FSDPEngine's
    optimizer_step with its grad clipping): one SGD step moves the parameters by the whole
    mini-batch's gradient, to float64 rounding; a second install is refused."""
    from verl.workers.engine_workers import TrainingWorker

    policy = Policy()
    engine = TinyEngine(policy)
    engine.optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    engine.optimizer_config = SimpleNamespace(clip_grad=1e6)
    engine._qat_enabled = False
    worker = TrainingWorker.__new__(TrainingWorker)  # verl's class; its model is the policy
    worker.engine, worker.loss_fn = engine, None
    td = mini_batch(policy, 0)
    agg = "seq-mean-token-mean"
    ref = whole(policy, td, agg)
    before = policy.theta.detach().clone()
    install(worker, config(agg))
    out = engine.train_batch(td, loss_function=worker.loss_fn)
    assert len(out["loss"]) >= 2, "verl did not split the mini-batch"
    step = (before - policy.theta.detach()) / 0.1
    assert _rel(step, ref) <= TOL, _rel(step, ref)
    with pytest.raises(ValueError, match="already wrapped"):
        install(worker, config(agg))


WORLD = 2


def _dp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One of ``world`` gloo ranks holding half of the mini-batch; verl's engine on each,
    gradients then averaged over the ranks as FSDP averages them."""
    _cpu_devices()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    res = {}
    for agg in ("seq-mean-token-mean", "token-mean"):
        for exact in (True, False):
            policy = Policy()
            full = mini_batch(policy, 0)
            half = B // world
            td = full[rank * half:(rank + 1) * half]
            tu.assign_non_tensor(td, use_dynamic_bsz=False, micro_batch_size_per_gpu=half // 2,
                                 global_batch_size=B)
            cfg = config(agg, "exact" if exact else "local")
            run = TinyEngine(policy).forward_backward_batch
            if exact:
                run = exact_forward_backward(run, cfg, dp_group=dist.group.WORLD)
            out = run(td, partial(fverl.hierarchical_ppo_loss, config=cfg), forward_only=False)
            grad = policy.theta.grad.clone()
            dist.all_reduce(grad)
            res[(agg, exact)] = {"grad": grad / world, "micro_batches": len(out["loss"]),
                                 "whole": whole(policy, full, agg)}
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def two_ranks() -> dict:
    """Spawn the pair; ``{(agg, exact): relative gradient difference to one rank}`` after
    checking that both ranks hold the same averaged gradient."""
    with tempfile.TemporaryDirectory() as tmp:
        ranks = spawn_ranks(_dp_worker, WORLD, tmp)
    errs = {}
    for key, got in ranks[0].items():
        assert got["micro_batches"] == 2
        assert torch.equal(got["grad"], ranks[1][key]["grad"])
        errs[key] = _rel(got["grad"], got["whole"])
    return errs


def test_two_ranks_equal_one():
    """Property: the mini-batch split over 2 gloo ranks (groups and domains on both, each
    rank's half in 2 micro-batches), verl's engine on each rank, gradients averaged as FSDP
    averages them: with ``exact_forward_backward(dp_group=...)`` the gradient is the whole
    mini-batch's on one rank, to float64 rounding; without it, it is not."""
    for (agg, exact), err in two_ranks().items():
        if exact:
            assert err <= TOL, (agg, err)
        else:
            assert err > DIFFERENT, (agg, err)


if __name__ == "__main__":  # prints the figures of docs/integrations.md
    import contextlib

    with contextlib.contextmanager(one_rank.__wrapped__)():
        for a, dyn in (("seq-mean-token-mean", False), ("token-mean", False),
                       ("token-sum", False), ("seq-mean-token-mean", True)):
            pol = Policy()
            eng = TinyEngine(pol)
            batch = mini_batch(pol, 0)
            r = whole(pol, batch, a)
            ex, o = micro_batched(eng, batch, a, exact=True, dynamic=dyn)
            lo, _ = micro_batched(eng, batch, a, exact=False, dynamic=dyn)
            split = f"{len(o['loss'])} dynamic" if dyn else str(len(o["loss"]))
            print(f"| `fiberpo_domain` | `{a}` | {split} | {_rel(ex, r):.1e} | "
                  f"{_rel(lo, r):.1e} |")
    for (a, ex), err in two_ranks().items():
        print(f"2 gloo ranks, {a}, {'exact' if ex else 'per micro-batch'}: {err:.1e}")
