"""Exact ``fibration_*`` losses when verl splits a mini-batch into micro-batches.

verl's engine (``forward_backward_batch`` of its FSDP/Megatron engines) cuts each mini-batch
into micro-batches (``ppo_micro_batch_size_per_gpu``, or dynamic batch sizes that also reorder
rows) and runs the actor loss and a backward on each. FiberPO-Domain's gates read aggregates
of whole prompt groups and domains (eq 33), so a group or domain spanning micro-batches is
gated with its micro-batch's part only (the approximate result of
:func:`fibration_theory.integrations.verl.hierarchical_ppo_loss` alone).

:func:`exact_forward_backward` wraps an engine's ``forward_backward_batch``. For a training
mini-batch it

1. tags every row with its index (column :data:`ROW_KEY`, a ``[B]`` tensor the engine's split
   carries along, reordering included);
2. scores the mini-batch once without gradient through the same ``forward_backward_batch``
   (``forward_only=True``, verl's own inference path), unless ``fresh`` (old log-probs known
   to be the current ones, ratio exactly 1);
3. builds the whole mini-batch's :func:`fibration_theory.integrations.microbatch.plan` (the
   objective on every row, with ``uid`` groups and the configured domain column; across
   data-parallel ranks through the ``dp_group``), scaled as verl's ``agg_loss`` normalises
   the global batch;
4. runs the real forward/backward, during which the ``fibration_*`` policy loss of each
   micro-batch (called through ``hierarchical_ppo_loss``) returns the plan's surrogate
   ``<g_rows, l> - <g_rows, sg(l)> + L * B_micro / B``: its gradient carries the whole
   mini-batch's gates, and the summed micro-batch gradients are the mini-batch's.

:func:`install` does both steps on a verl ``TrainingWorker`` (the actor worker's
``.actor``): ``hierarchical_ppo_loss`` through its ``set_loss_fn`` and the wrapped
``forward_backward_batch`` on its engine, which verl's ``train_batch`` then calls.

KL and entropy terms of verl's ``ppo_loss`` are token-local and normalised by verl's global
batch info already, so they need nothing.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from fibration_theory.integrations import microbatch
from fibration_theory.integrations.verl_config import config_get

Tensor = torch.Tensor

__all__ = ["ROW_KEY", "MiniBatchPlan", "active", "exact_forward_backward", "install"]

#: the column that tags each row of a mini-batch with its index
ROW_KEY = "fibration_row"


@dataclasses.dataclass(frozen=True)
class MiniBatchPlan:
    """The whole mini-batch's plan (one "micro-batch": all ``rows`` rows) and the factor
    ``scale`` that turns its objective into verl's normalisation of the global batch."""

    plan: microbatch.StepPlan
    rows: int
    scale: float

    def loss(self, row_ids: Tensor, log_prob: Tensor) -> Tensor:
        """Surrogate loss of the micro-batch holding ``row_ids`` (``[b]``) with current
        log-probs ``log_prob`` (``[b, T]``, with their graph): gradient ``<g_rows, dl>``,
        value ``L * b / B`` (float64)."""
        g = self.plan.grads[0]
        rows = row_ids.to(torch.long).to(g.device)
        width = log_prob.shape[1]
        if width < g.shape[1] and bool(g[rows, width:].ne(0).any()):
            raise ValueError("log_prob: narrower than the mini-batch's response tokens")
        g = torch.nn.functional.pad(g[rows], (0, max(0, width - g.shape[1])))[:, :width]
        g = g * self.scale
        lp = log_prob.to(torch.float64)
        share = self.plan.value * self.scale * rows.numel() / self.rows
        return (g * lp).sum() - (g * lp.detach()).sum() + share


_ACTIVE: contextvars.ContextVar[MiniBatchPlan | None] = contextvars.ContextVar(
    "fibration_minibatch_plan", default=None)


def active() -> MiniBatchPlan | None:
    """The plan of the mini-batch being trained, inside :func:`exact_forward_backward`."""
    return _ACTIVE.get()


def _padded_response(data: Any, key: str) -> Tensor:
    x = data[key]
    return x.to_padded_tensor(0.0) if getattr(x, "is_nested", False) else x


def _build(data: Any, config: Any, log_probs: Tensor | None, dp_group) -> MiniBatchPlan:
    """The plan of the mini-batch ``data`` (verl's engine format)."""
    from verl.utils import tensordict_utils as tu

    from fibration_theory.integrations import verl as fverl

    objective = fverl.objective_of(config)
    mask = _padded_response(data, "response_mask").to(torch.bool)
    old = _padded_response(data, "old_log_probs").to(torch.float64)
    adv = _padded_response(data, "advantages").to(torch.float64)
    keys = list(data.keys())
    w = _padded_response(data, "rollout_is_weights") if "rollout_is_weights" in keys else None
    world = 1 if dp_group is None else torch.distributed.get_world_size(dp_group)
    # verl's global batch info as its engine and ppo_loss will fill it for this mini-batch
    tokens = data["loss_mask"].sum().to(torch.float64) if "loss_mask" in keys else mask.sum()
    if world > 1:
        tokens = tokens.clone()
        torch.distributed.all_reduce(tokens, group=dp_group)
    info = {"dp_size": world, "batch_num_tokens": float(tokens),
            "global_batch_size": tu.get_non_tensor_data(data, key="global_batch_size",
                                                        default=None),
            "loss_scale_factor": config_get(config, "loss_scale_factor")}
    params, info = fverl.loss_params(objective, config.loss_agg_mode, config, info=info)
    adv = fverl.weighted_advantages(objective, adv, w, mask)
    groups, domains = fverl.row_labels(config, data)
    cur = None if log_probs is None else [log_probs.to(torch.float64)]
    plan = microbatch.plan(objective, [old], [adv], [mask], log_probs=cur,
                           group_ids=[groups], domain_ids=None if domains is None else [domains],
                           process_group=dp_group if world > 1 else None,
                           grad_reduction="mean", **params)
    scale = fverl.global_scale(objective, config.loss_agg_mode, mask, info, dp_group)
    return MiniBatchPlan(plan, int(mask.shape[0]), scale)


def exact_forward_backward(forward_backward_batch: Callable, config: Any, *,
                           fresh: bool = False, dp_group=None) -> Callable:
    """``forward_backward_batch`` (an engine's bound method) made exact for the
    ``fibration_*`` losses across micro-batches; see the module note.

    ``config``: the actor config (``policy_loss.loss_mode`` a ``fibration_*`` loss, the
    ``FiberPolicyLossConfig`` keys ``group_key``/``domain_key``). ``fresh=True`` skips the
    no-grad pass (valid only when the old log-probs are the current policy's, ratio 1).
    ``dp_group``: the data-parallel group (``engine.get_data_parallel_group()``) when
    ``dp_size > 1``. Install it on a worker's engine and set ``hierarchical_ppo_loss`` as the
    loss::

        engine.forward_backward_batch = exact_forward_backward(
            engine.forward_backward_batch, actor_config,
            dp_group=engine.get_data_parallel_group())
    """
    from verl.workers.utils.padding import no_padding_2_padding

    def run(data, loss_function, forward_only: bool = False):
        if forward_only:
            return forward_backward_batch(data, loss_function, forward_only=True)
        data[ROW_KEY] = torch.arange(len(data))
        current = None
        if not fresh:  # verl's inference path; forward-only keeps the model output
            with torch.no_grad():
                out = forward_backward_batch(data, None, forward_only=True)
            current = no_padding_2_padding(out["model_output"]["log_probs"], data).detach()
        token = _ACTIVE.set(_build(data, config, current, dp_group))
        try:
            return forward_backward_batch(data, loss_function, forward_only=False)
        finally:
            _ACTIVE.reset(token)

    run.fibration_exact = True  # type: ignore[attr-defined]
    return run


def install(worker: Any, config: Any, *, fresh: bool = False) -> None:
    """Make a verl ``TrainingWorker`` train ``fibration_*`` losses exactly across its
    micro-batches and data-parallel ranks, in the worker's own process (e.g. in a
    ``TrainingWorker`` subclass after ``init_model``; for verl's ``ActorRolloutRefWorker`` its
    ``.actor``).

    Sets :func:`~fibration_theory.integrations.verl.hierarchical_ppo_loss` bound to
    ``config`` (the actor config) with verl's ``worker.set_loss_fn``, and replaces
    ``worker.engine.forward_backward_batch`` by :func:`exact_forward_backward` of it (the
    engine's data-parallel group when it has more than one rank). ``fresh``: see
    :func:`exact_forward_backward`. A worker already installed is refused (``ValueError``):
    a second wrapper would score every mini-batch twice.
    """
    from functools import partial

    from fibration_theory.integrations.verl import hierarchical_ppo_loss

    engine = getattr(worker, "engine", None)
    if engine is None or not callable(getattr(worker, "set_loss_fn", None)):
        raise ValueError(f"worker: expected verl's TrainingWorker (an .engine and set_loss_fn), "
                         f"got {type(worker).__name__}; for ActorRolloutRefWorker pass .actor")
    if getattr(engine.forward_backward_batch, "fibration_exact", False):
        raise ValueError("worker: its engine is already wrapped by exact_forward_backward")
    group = engine.get_data_parallel_group()
    dp_group = group if torch.distributed.get_world_size(group) > 1 else None
    engine.forward_backward_batch = exact_forward_backward(
        engine.forward_backward_batch, config, fresh=fresh, dp_group=dp_group)
    worker.set_loss_fn(partial(hierarchical_ppo_loss, config=config))
