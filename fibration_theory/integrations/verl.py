"""Any registered objective as a verl policy loss.

verl's actor calls the loss registered under ``actor.policy_loss.loss_mode`` with keyword
arguments ``old_log_prob, log_prob, advantages, response_mask`` (all ``[B, T]``),
``loss_agg_mode``, ``config`` (the actor config) and ``rollout_is_weights`` (``[B, T]`` or
``None``), and expects ``(loss, metrics)`` back, ``metrics`` a dict of floats. This module
builds such functions and registers one per objective as ``fibration_<name>`` (for example
``actor_rollout_ref.actor.policy_loss.loss_mode=fibration_fiberpo``) when verl is importable.

Conventions:

* Aggregation. ``loss_agg_mode`` is the objective's ``agg`` (the RGF weights ``mu``); set
  ``actor.loss_agg_mode=seq-mean-token-mean`` for FiberPO as the paper defines it (eq 6).
* Hyperparameters: those given to :func:`make_policy_loss`, updated by the mapping
  ``actor.policy_loss.fibration`` when the config has one (e.g. ``{c_plus: 0.1}``).
* Global normalization. verl hands each micro-batch ``config.global_batch_info`` (``dp_size``,
  ``batch_num_tokens``, ``global_batch_size``, ``loss_scale_factor``) and sums micro-batch
  losses while FSDP averages over ranks. The objective is computed on the micro-batch and
  rescaled so its ``mu`` divide by the global counts: by ``T_micro / batch_num_tokens * dp_size``
  for ``token-mean`` and ``|Tj|_micro / global_batch_size * dp_size`` for the ``seq-mean-*``
  modes. For objectives whose gates see one trajectory at a time (all but the group/domain
  levels of ``fiberpo_domain`` and APC with shared ``state_ids``) this reproduces the objective
  on the whole mini-batch exactly. ``seq-mean-token-sum-norm`` keeps Dr.GRPO's ``1/|Tj|``
  (verl's own ``agg_loss`` omits it) and takes ``loss_scale_factor`` as ``norm_length``.
* ``rollout_is_weights`` (non-negative, detached) multiply the advantages. Every objective is
  linear in each token's advantage and reads only its sign, so this equals weighting each
  token's term, as verl's own losses do.
* Hierarchy. verl does not pass prompt ids to policy losses; the function takes optional
  ``group_ids``/``domain_ids`` keywords (e.g. from ``data["uid"]`` in a patched actor).
  Without them every row is its own trajectory and ``fiberpo_domain`` reduces to ``fiberpo``.
* KL and entropy terms stay with verl (``use_kl_loss``, ``entropy_coeff``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from fibration_theory import Hierarchy, losses
from fibration_theory.aggregation import AGG_MODES
from fibration_theory.losses.registry import get
from fibration_theory.validation import as_mask, check_float

Tensor = torch.Tensor
PolicyLoss = Callable[..., tuple[Tensor, dict[str, float]]]

#: prefix of the names registered with verl (verl's registry overwrites silently; a prefix
#: keeps ours apart from verl's own ``gspo``, ``sapo``, ``cispo``)
PREFIX = "fibration_"

__all__ = ["PREFIX", "compute_policy_loss", "make_policy_loss", "register"]


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` / ``obj.key`` for verl's dataclass configs, OmegaConf and dicts."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    getter = getattr(obj, "get", None)
    if callable(getter):
        try:
            return getter(key)
        except (KeyError, AttributeError, TypeError):
            pass
    return getattr(obj, key, None)


def _config_params(config: Any) -> dict[str, Any]:
    found = _get(_get(config, "policy_loss"), "fibration")
    if found is None:
        return {}
    if not isinstance(found, Mapping) and not hasattr(found, "items"):
        raise ValueError(f"config.policy_loss.fibration must be a mapping of the objective's "
                         f"parameters, got {type(found).__name__}")
    return {str(k): v for k, v in found.items()}


def _scale(agg: str, h: Hierarchy, info: Mapping[str, Any]) -> float:
    """Factor turning micro-batch weights ``mu`` into the global batch's (module note)."""
    dp = float(info.get("dp_size") or 1)
    if agg == "token-mean":
        total = info.get("batch_num_tokens")
        return 1.0 if total is None else h.num_tokens / float(total) * dp
    total = info.get("global_batch_size")
    return 1.0 if total is None else h.num_traj / float(total) * dp


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
        loss_agg_mode: verl's aggregation mode, used as the objective's ``agg``.
        config: verl's actor config (``global_batch_info``, ``policy_loss.fibration``), or
            ``None`` for a plain micro-batch loss.
        rollout_is_weights: ``[B, T]`` non-negative per-token weights, or ``None``.
        group_ids, domain_ids: ``[B]`` labels for the upper levels (optional).
        params: hyperparameters, updated by the config's ``policy_loss.fibration``.

    The gates run in float64; the loss comes back in ``log_prob``'s dtype. Metrics:
    ``actor/ppo_kl`` (mean ``-log r``), ``actor/pg_clipfrac`` (the objective's ``clip_frac``)
    and every metric of the objective under ``actor/fibration/``.
    """
    entry = get(objective)
    merged = dict(params or {})
    merged.update(_config_params(config))
    if "agg" in entry.params:
        if loss_agg_mode not in AGG_MODES:
            raise ValueError(f"loss_agg_mode must be one of {AGG_MODES}, got {loss_agg_mode!r}")
        if merged.get("agg", loss_agg_mode) != loss_agg_mode:
            raise ValueError(f"loss_agg_mode: {loss_agg_mode!r} disagrees with the objective's "
                             f"agg={merged['agg']!r}; set only actor.loss_agg_mode")
        merged["agg"] = loss_agg_mode
    info = dict(_get(config, "global_batch_info") or {})
    if ("norm_length" in entry.params and merged.get("norm_length") is None
            and info.get("loss_scale_factor") is not None):
        merged["norm_length"] = float(info["loss_scale_factor"])
    mask = as_mask(response_mask, "response_mask")
    if not bool(mask.any()):
        # a micro-batch of empty responses holds no index of the objective: it adds nothing to
        # the globally normalized loss (a zero that keeps the graph, as verl's agg_loss does)
        return torch.where(mask, log_prob, torch.zeros_like(log_prob)).sum(), {}
    adv = advantages.detach().to(torch.float64)
    if rollout_is_weights is not None:
        check_float(rollout_is_weights, "rollout_is_weights", tuple(mask.shape), mask)
        w = rollout_is_weights.detach().to(torch.float64)
        if bool((w[mask] < 0).any()):
            raise ValueError("rollout_is_weights must be >= 0 on the response tokens")
        adv = adv * w
    h = Hierarchy.from_padded(mask, group_ids=group_ids, domain_ids=domain_ids)
    out = losses.compute(objective, log_prob.to(torch.float64),
                         old_log_prob.detach().to(torch.float64), adv, mask, hierarchy=h,
                         **merged)
    agg = merged.get("agg", entry.params.get("agg"))
    loss = out.loss * _scale(str(agg), h, info) if agg is not None else out.loss
    metrics = {"actor/ppo_kl": out.metrics["approx_kl/k1"]}
    if "clip_frac" in out.metrics:
        metrics["actor/pg_clipfrac"] = out.metrics["clip_frac"]
    metrics.update({f"actor/fibration/{k}": v for k, v in out.metrics.items()})
    return loss.to(log_prob.dtype), metrics


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
    REGISTERED: list[str] = register()
except ImportError:
    REGISTERED = []
