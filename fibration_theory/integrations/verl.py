"""Any registered objective as a verl policy loss (tested against verl 0.9.1's own code).

verl's actor loss (``verl.workers.utils.losses.ppo_loss``) calls the function registered under
``actor.policy_loss.loss_mode`` with keyword arguments ``old_log_prob, log_prob, advantages,
response_mask`` (all ``[B, T]``), ``loss_agg_mode``, ``config`` (the ``ActorConfig``) and
``rollout_is_weights`` (``[B, T]`` or ``None``) and expects ``(loss, metrics)``. Importing this
module registers one such function per objective as ``fibration_<name>`` when verl is
importable.

verl's configuration is honoured, never ignored:

* ``actor.clip_ratio_low/high`` (``clip_ratio`` where ``None``) are ``eps_low/eps_high`` of
  every objective verl also implements (:data:`VERL_PEERS`), and ``actor.clip_ratio_c`` is the
  dual-clip bound of the PPO family, as in verl's ``vanilla``; ``actor.tau_pos/tau_neg`` are
  SAPO's temperatures; ``loss_scale_factor`` (which verl's actor copies into
  ``global_batch_info``) is the ``L`` of ``seq-mean-token-sum-norm`` (Dr.GRPO's
  ``norm_length``; verl's default, the padded width, is ours too). For the
  objectives verl has no counterpart of (FiberPO, FiberPO-Domain, APC) a clip setting other
  than verl's default is refused: they have no clip ratio.
* ``loss_agg_mode`` is the objective's aggregation, every mode of verl 0.9.1 included:
  ``token-sum`` is ``mu_i = 1`` (the ``token-mean`` objective times the token count).
* The objective's own parameters come from ``actor.policy_loss.fibration`` (a mapping, e.g.
  ``{c_plus: 0.1}``). verl 0.9.1's ``PolicyLossConfig`` has no such field; select
  :class:`FiberPolicyLossConfig` (the same config plus ``fibration``) with
  ``actor_rollout_ref.actor.policy_loss._target_=fibration_theory.integrations.verl.FiberPolicyLossConfig``;
  instantiating it also imports this module, and so registers the losses, in every worker.
  A parameter that verl's config already sets (above) is refused there.
* Global normalisation: verl hands each micro-batch ``config.global_batch_info``
  (``dp_size``, ``batch_num_tokens``, ``global_batch_size``, ``loss_scale_factor``), sums
  micro-batch losses and FSDP averages over ranks. The objective is computed on the
  micro-batch and rescaled as verl's ``agg_loss`` rescales: by ``T_micro / batch_num_tokens *
  dp_size`` (``token-mean``), ``T_micro * dp_size`` (``token-sum``) or ``|Tj|_micro /
  global_batch_size * dp_size`` (``seq-mean-*``, which includes Dr.GRPO's ``1/|Tj|`` as
  verl's does). For objectives whose gates see one trajectory at a time this is the
  objective on the whole mini-batch exactly.
* ``rollout_is_weights`` (``>= 0``, detached) weight each token's term as verl's losses
  weight theirs; GMPO's sequence-level term takes the row's geometric mean of the weights,
  as verl's ``geo_mean``.
* Metrics: ``actor/ppo_kl``, and ``actor/pg_clipfrac`` / ``actor/pg_clipfrac_lower`` with the
  definitions of verl's counterpart loss (for PPO-family losses the dual-clipped tokens
  are counted in ``pg_clipfrac_lower`` only); every metric of the objective under
  ``actor/fibration/``.
* Hierarchy: verl's ``ppo_loss`` passes no prompt ids to policy losses. Its hook for another
  actor loss, ``set_loss_fn`` of the actor worker, takes :func:`hierarchical_ppo_loss`:
  verl's ``ppo_loss`` unchanged, with the micro-batch's ``uid`` (prompt groups) and the
  column ``policy_loss.domain_key`` (e.g. ``data_source``) handed to the ``fibration_*``
  loss; the functions also take ``group_ids``/``domain_ids`` keywords. An objective gated by
  groups or domains (``fiberpo_domain``) called by verl without labels is refused: it would
  be plain FiberPO.
* Micro-batches and ranks: an objective whose gates read groups, domains or the batch (its
  declared ``coupling``) on a part of the mini-batch -- a verl micro-batch, or one rank's
  share -- is refused unless the engine is wrapped by
  :func:`fibration_theory.integrations.verl_minibatch.exact_forward_backward` (the whole
  mini-batch's gates, exact) or ``policy_loss.microbatch=local`` opts into each micro-batch's
  own aggregates (approximate; exact when every micro-batch holds whole groups and domains).
  Objectives gated per token or trajectory are exact on any row split.

The translation of verl's config lives in :mod:`~fibration_theory.integrations.verl_config`,
verl's weighting and metric conventions in
:mod:`~fibration_theory.integrations.verl_conventions`.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations.verl_config import (
    PREFIX,
    VERL_AGG_MODES,
    VERL_PEERS,
    check_coupled_call,
    config_get,
    global_scale,
    loss_params,
    micro_scale,
    objective_of,
    verl_params,
)
from fibration_theory.integrations.verl_conventions import clip_metrics, weighted_advantages
from fibration_theory.losses.registry import get
from fibration_theory.validation import as_mask

Tensor = torch.Tensor
PolicyLoss = Callable[..., tuple[Tensor, dict[str, float]]]

__all__ = ["PREFIX", "VERL_AGG_MODES", "VERL_PEERS", "compute_policy_loss", "global_scale",
           "hierarchical_ppo_loss", "loss_params", "make_policy_loss", "objective_of",
           "register", "row_labels", "verl_params", "weighted_advantages"]  # re-exported too

#: ``(group labels, domain labels or None)`` of the micro-batch in the current call of
#: :func:`hierarchical_ppo_loss`, read by the policy loss that verl's ``ppo_loss`` calls
_ROW_IDS: contextvars.ContextVar[tuple[list, list | None] | None] = contextvars.ContextVar(
    "fibration_row_ids", default=None)
#: ``[b]`` indices of the micro-batch's rows in their mini-batch (exact mode), likewise
_ROWS: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar(
    "fibration_rows", default=None)


def compute_policy_loss(objective: str, old_log_prob: Tensor, log_prob: Tensor,
                        advantages: Tensor, response_mask: Tensor,
                        loss_agg_mode: str = "token-mean", config: Any = None,
                        rollout_is_weights: Tensor | None = None, *,
                        group_ids=None, domain_ids=None,
                        params: Mapping[str, Any] | None = None
                        ) -> tuple[Tensor, dict[str, float]]:
    """Objective ``objective`` on one verl micro-batch; returns ``(loss, metrics)``.

    Args:
        objective: a registered objective name.
        old_log_prob, log_prob, advantages: ``[B, T]``; ``log_prob`` differentiable.
        response_mask: ``[B, T]`` bool or 0/1.
        loss_agg_mode: one of :data:`VERL_AGG_MODES` (the weights ``mu``, eq 6).
        config: verl's actor config (clip settings, ``global_batch_info``,
            ``policy_loss.fibration``), or ``None`` for a plain micro-batch loss.
        rollout_is_weights: ``[B, T]`` non-negative per-token weights, or ``None``.
        group_ids, domain_ids: ``[B]`` labels for the upper levels (optional).
        params: hyperparameters bound in Python; the config's ``policy_loss.fibration`` and
            the verl settings of :func:`verl_params` take precedence.

    Inside :func:`~fibration_theory.integrations.verl_minibatch.exact_forward_backward`
    (through :func:`hierarchical_ppo_loss`) the loss is the mini-batch plan's surrogate for
    these rows. The gates run in float64; the loss comes back in ``log_prob``'s dtype.
    """
    from fibration_theory.integrations import verl_minibatch

    entry = get(objective)
    merged, info = loss_params(objective, loss_agg_mode, config, params)
    mask = as_mask(response_mask, "response_mask")
    plan, rows = verl_minibatch.active(), _ROWS.get()
    if plan is not None and rows is None:
        raise ValueError("config: the engine is wrapped by exact_forward_backward but the actor "
                         "loss is not hierarchical_ppo_loss (it hands the policy loss the rows "
                         "of the micro-batch); set it with the worker's set_loss_fn")
    if (plan is None or rows is None) and not bool(mask.any()):
        # a micro-batch of empty responses holds no index of the objective: it adds nothing to
        # the globally normalized loss (a zero that keeps the graph, as verl's agg_loss does)
        return torch.where(mask, log_prob, torch.zeros_like(log_prob)).sum(), {}
    adv = weighted_advantages(objective, advantages, rollout_is_weights, mask)
    lp64, old64 = log_prob.to(torch.float64), old_log_prob.detach().to(torch.float64)
    if plan is not None and rows is not None:  # exact: the whole mini-batch's gates
        loss, fiber_metrics = plan.loss(rows, log_prob), plan.plan.output.metrics
    else:
        if group_ids is None and domain_ids is None and _ROW_IDS.get() is not None:
            group_ids, domain_ids = _ROW_IDS.get()
        check_coupled_call(objective, config, mask, info, group_ids is not None)
        h = Hierarchy.from_padded(mask, group_ids=group_ids, domain_ids=domain_ids)
        out = losses.compute(objective, lp64, old64, adv, mask, hierarchy=h, **merged)
        loss = out.loss
        if "agg" in entry.params:
            loss = loss * micro_scale(loss_agg_mode, h.num_tokens, h.num_traj,
                                      h.mask.shape[1], info, "norm_length" in entry.params,
                                      float(info.get("dp_size") or 1))
        fiber_metrics = out.metrics
    metrics = {"actor/ppo_kl": fiber_metrics["approx_kl/k1"]}
    if objective in VERL_PEERS:
        full = {**entry.params, **merged}
        metrics.update(clip_metrics(objective, (lp64 - old64).detach(),
                                    advantages.detach().to(torch.float64), mask, full))
    elif "clip_frac" in fiber_metrics:
        metrics["actor/pg_clipfrac"] = fiber_metrics["clip_frac"]
    metrics.update({f"actor/fibration/{k}": v for k, v in fiber_metrics.items()})
    return loss.to(log_prob.dtype), metrics


def _column(data: Any, key: str, name: str) -> list:
    """The labels of ``data[key]`` (a verl ``TensorDict`` column) as a list."""
    keys = list(data.keys())  # a TensorDict refuses `key in td`
    if key not in keys:
        raise ValueError(f"{name}: the batch has no column {key!r}; it has "
                         f"{sorted(str(k) for k in keys)}")
    col = data.get(key)
    return col.tolist() if hasattr(col, "tolist") else list(col)


def hierarchical_ppo_loss(config: Any, model_output: Any, data: Any, dp_group: Any = None
                          ) -> tuple[Tensor, dict]:
    """verl's actor loss ``verl.workers.utils.losses.ppo_loss`` with the micro-batch's prompt
    groups and domains handed to the ``fibration_*`` policy loss.

    ``data``: the engine's micro-batch (a ``TensorDict`` with ``len(data)`` rows); the group
    labels are its column ``config.policy_loss.group_key`` (default ``uid``, verl's prompt
    id), the domain labels its column ``config.policy_loss.domain_key`` (default none; e.g.
    ``data_source``). Install it with verl's hook once the workers exist::

        trainer.actor_rollout_wg.set_loss_fn(
            functools.partial(hierarchical_ppo_loss, config=actor_config))
    """
    from verl.workers.utils.losses import ppo_loss

    from fibration_theory.integrations.verl_minibatch import ROW_KEY

    token = _ROW_IDS.set(row_labels(config, data))
    rows = _ROWS.set(data[ROW_KEY] if ROW_KEY in list(data.keys()) else None)
    try:
        return ppo_loss(config, model_output, data, dp_group)
    finally:
        _ROWS.reset(rows)
        _ROW_IDS.reset(token)


def row_labels(config: Any, data: Any) -> tuple[list, list | None]:
    """``(group labels, domain labels or None)`` of the rows of ``data``: its columns
    ``config.policy_loss.group_key`` (default ``uid``) and ``domain_key`` (default none)."""
    policy = config_get(config, "policy_loss")
    groups = _column(data, config_get(policy, "group_key") or "uid", "policy_loss.group_key")
    key = config_get(policy, "domain_key")
    return groups, (_column(data, key, "policy_loss.domain_key") if key else None)


def make_policy_loss(objective: str, **params) -> PolicyLoss:
    """A function with verl's policy-loss signature bound to ``objective`` and ``params``."""
    entry = get(objective)
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of {objective!r}; it takes "
                         f"{sorted(entry.params)}")

    def policy_loss(old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor,
                    response_mask: Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                    rollout_is_weights: Tensor | None = None, *, group_ids=None,
                    domain_ids=None) -> tuple[Tensor, dict[str, float]]:
        return compute_policy_loss(objective, old_log_prob, log_prob, advantages, response_mask,
                                   loss_agg_mode, config, rollout_is_weights,
                                   group_ids=group_ids, domain_ids=domain_ids, params=params)

    policy_loss.__name__ = f"{PREFIX}{objective}"
    policy_loss.__qualname__ = policy_loss.__name__
    policy_loss.__doc__ = f"verl policy loss: {entry.summary}"
    policy_loss.fibration_objective = objective  # type: ignore[attr-defined]
    return policy_loss


def register(registry: dict | None = None, objectives: list[str] | None = None
             ) -> list[str]:
    """Add ``fibration_<name>`` for each objective to verl's policy-loss registry.

    ``registry``: the dict to fill (default: ``verl.trainer.ppo.core_algos``'s
    ``POLICY_LOSS_REGISTRY`` through its ``register_policy_loss``; ``ImportError`` when verl is
    missing). An existing entry that is not one of ours is an error, never an overwrite.
    Returns the registered names.
    """
    if registry is None:
        from verl.trainer.ppo import core_algos  # optional dependency, imported on use

        registry = core_algos.POLICY_LOSS_REGISTRY
        add = core_algos.register_policy_loss
    else:
        def add(name):
            def deco(fn):
                registry[name] = fn
                return fn
            return deco
    names = []
    for objective in objectives or losses.available():
        name = f"{PREFIX}{objective}"
        old = registry.get(name)
        if old is not None and getattr(old, "fibration_objective", None) != objective:
            raise ValueError(f"verl already has a policy loss {name!r} ({old!r}); not replacing it")
        add(name)(make_policy_loss(objective))
        names.append(name)
    return names


try:  # register with verl when it is installed; the functions above work without it
    from verl.workers.config import PolicyLossConfig as _PolicyLossConfig

    REGISTERED: list[str] = register()
except ImportError:
    REGISTERED = []
else:
    @dataclasses.dataclass
    class FiberPolicyLossConfig(_PolicyLossConfig):
        """verl's ``PolicyLossConfig`` plus ``fibration``: the objective's parameters (e.g.
        ``{"c_plus": 0.1, "eps": 0.04}``), settable from verl's command line; and the batch
        columns :func:`hierarchical_ppo_loss` reads the group and domain labels from; and
        ``microbatch`` (``exact`` or ``local``, approximate; :func:`check_coupled_call`)."""

        fibration: dict = dataclasses.field(default_factory=dict)
        group_key: str = "uid"
        domain_key: str | None = None
        microbatch: str = "exact"

    __all__.append("FiberPolicyLossConfig")
