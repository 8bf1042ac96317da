"""verl's actor configuration read as an objective's parameters and normalisation.

What verl 0.9.1's ``ActorConfig`` sets, and how :mod:`fibration_theory.integrations.verl`
reads it (the rules of that module's note, in one place):

* ``clip_ratio_low/high`` (``clip_ratio`` where ``None``) and ``clip_ratio_c`` are the clip
  and dual-clip bounds of every objective verl also implements (:data:`VERL_PEERS`);
  ``tau_pos/tau_neg`` SAPO's temperatures. An objective verl has no counterpart of refuses a
  clip setting other than verl's default: it has no clip ratio.
* ``policy_loss.fibration`` (a mapping, :class:`~fibration_theory.integrations.verl.FiberPolicyLossConfig`)
  holds the objective's own parameters; a parameter that verl's config already sets is refused.
* ``loss_agg_mode`` is the aggregation; ``token-sum`` is the ``token-mean`` objective times
  the token count.
* ``global_batch_info`` (``dp_size``, ``batch_num_tokens``, ``global_batch_size``,
  ``loss_scale_factor``) turns an objective on a micro-batch into its share of the global
  batch, as verl's ``agg_loss`` normalises (:func:`global_scale`).
* ``policy_loss.microbatch`` (:data:`MICROBATCH_MODES`) says what to do when an objective
  whose gates read prompt groups, domains or the batch (its declared ``coupling``) sees only
  a part of the mini-batch (:func:`check_coupled_call`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fibration_theory.aggregation import AGG_MODES
from fibration_theory.integrations.microbatch import MICROBATCH_MODES
from fibration_theory.losses.registry import COUPLINGS, get

#: prefix of the names registered with verl (verl's registry overwrites silently; a prefix
#: keeps ours apart from verl's own ``gspo``, ``sapo``, ``cispo``)
PREFIX = "fibration_"
#: verl 0.9.1's aggregation modes: ours plus ``token-sum``
VERL_AGG_MODES: tuple[str, ...] = (*AGG_MODES, "token-sum")
#: our objective -> verl's loss mode implementing the same objective
VERL_PEERS: dict[str, str] = {
    "ppo_clip": "vanilla", "dapo": "vanilla", "grpo": "vanilla", "dr_grpo": "vanilla",
    "gspo": "gspo", "gspo_token": "gspo", "gmpo": "geo_mean", "cispo": "cispo", "sapo": "sapo"}
#: verl's ``ActorConfig`` defaults of the clip settings (what "not set" looks like)
VERL_CLIP_DEFAULTS = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
                      "clip_ratio_c": 3.0}

#: couplings whose gates read only the trajectory's own tokens (a row split is exact)
ROW_LOCAL: tuple[str, ...] = COUPLINGS[:COUPLINGS.index("trajectory") + 1]

__all__ = ["MICROBATCH_MODES", "PREFIX", "ROW_LOCAL", "VERL_AGG_MODES", "VERL_PEERS",
           "check_coupled_call", "config_get", "global_scale", "loss_params", "micro_scale",
           "microbatch_mode", "objective_of", "verl_params"]


def config_get(obj: Any, key: str) -> Any:
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
    found = config_get(config_get(config, "policy_loss"), "fibration")
    if found is None:
        return {}
    if not isinstance(found, Mapping) and not hasattr(found, "items"):
        raise ValueError(f"config.policy_loss.fibration must be a mapping of the objective's "
                         f"parameters, got {type(found).__name__}")
    return {str(k): v for k, v in found.items()}


def verl_params(objective: str, config: Any) -> dict[str, tuple[str, Any]]:
    """The objective's parameters that verl's actor ``config`` sets: ``{param: (verl key,
    value)}`` (module note). Raises ``ValueError`` for a clip setting the objective lacks."""
    low, high = config_get(config, "clip_ratio_low"), config_get(config, "clip_ratio_high")
    ratio = config_get(config, "clip_ratio")
    low = ("clip_ratio_low", low) if low is not None else ("clip_ratio", ratio)
    high = ("clip_ratio_high", high) if high is not None else ("clip_ratio", ratio)
    peer = VERL_PEERS.get(objective)
    found: dict[str, tuple[str, Any]] = {}
    if peer in ("vanilla", "gspo", "geo_mean", "cispo"):
        found.update(eps_low=low, eps_high=high)
    if peer == "vanilla":
        found["dual_clip"] = ("clip_ratio_c", config_get(config, "clip_ratio_c"))
    if peer == "sapo":
        found.update(tau_pos=("tau_pos", config_get(config, "tau_pos")),
                     tau_neg=("tau_neg", config_get(config, "tau_neg")))
    if peer is None:
        for key, default in VERL_CLIP_DEFAULTS.items():
            value = config_get(config, key)
            if value is not None and float(value) != default:
                raise ValueError(f"actor.{key}={value}: {PREFIX}{objective} has no clip ratio "
                                 f"(its budgets are actor.policy_loss.fibration's parameters "
                                 f"{sorted(get(objective).params)}); leave actor.{key} at "
                                 f"verl's default {default}")
    return {k: v for k, v in found.items() if v[1] is not None}


def micro_scale(agg: str, num_tokens: float, num_traj: float, width: int, info: Mapping[str, Any],
           own_norm: bool, dp: float) -> float:
    """Factor turning the objective on a batch of ``num_tokens`` tokens in ``num_traj``
    non-empty rows of padded ``width`` into its share of the global one times ``dp``, as
    verl's ``agg_loss`` normalises (``token-sum`` is computed as ``token-mean``; an objective
    without its own ``norm_length`` divides by the padded width, verl by
    ``loss_scale_factor``)."""
    norm = info.get("loss_scale_factor")
    if agg == "seq-mean-token-sum-norm" and not own_norm and norm is not None:
        dp *= width / float(norm)
    if agg == "token-sum":
        return num_tokens * dp
    if agg == "token-mean":
        total = info.get("batch_num_tokens")
        return 1.0 if total is None else num_tokens / float(total) * dp
    total = info.get("global_batch_size")
    return 1.0 if total is None else num_traj / float(total) * dp


def global_scale(objective: str, loss_agg_mode: str, mask: torch.Tensor, info: Mapping[str, Any],
                 dp_group=None) -> float:
    """:func:`micro_scale` for the objective on the whole mini-batch of every rank (``mask``:
    ``[B, T]``, this rank's rows; counts all-reduced over ``dp_group``), whose
    data-parallel share is already the ``"mean"`` convention of
    :func:`~fibration_theory.integrations.distributed.compute`."""
    if "agg" not in get(objective).params:
        return 1.0
    counts = torch.tensor([float(mask.sum()), float(mask.any(-1).sum()), float(mask.shape[1])],
                          dtype=torch.float64)
    if dp_group is not None and torch.distributed.get_world_size(dp_group) > 1:
        width = counts[2:].clone()
        torch.distributed.all_reduce(counts, group=dp_group)
        torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX, group=dp_group)
        counts[2] = width[0]
    return micro_scale(loss_agg_mode, float(counts[0]), float(counts[1]), int(counts[2]), info,
                  "norm_length" in get(objective).params, 1.0)


def loss_params(objective: str, loss_agg_mode: str, config: Any,
                params: Mapping[str, Any] | None = None,
                info: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
    """``(parameters, global_batch_info)`` of ``objective`` under verl's ``config``: ``params``,
    then ``config.policy_loss.fibration``, then the verl settings of :func:`verl_params`, the
    aggregation from ``loss_agg_mode`` and Dr.GRPO's ``norm_length`` from
    ``loss_scale_factor`` (of ``info``, by default ``config.global_batch_info``). Raises
    ``ValueError`` for a setting that belongs to verl's config
    or disagrees with it."""
    entry = get(objective)
    if loss_agg_mode not in VERL_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {VERL_AGG_MODES}, got {loss_agg_mode!r}")
    merged = dict(params or {})
    from_config = _config_params(config)
    from_verl = verl_params(objective, config) if config is not None else {}
    for key in from_config:
        if key == "agg":
            raise ValueError("config.policy_loss.fibration: 'agg' is set by actor.loss_agg_mode")
        if key in from_verl or key == "norm_length":
            owner = from_verl[key][0] if key in from_verl else "loss_scale_factor"
            raise ValueError(f"config.policy_loss.fibration: {key!r} of {objective!r} is "
                             f"verl's actor.{owner}; set it there")
    merged.update(from_config)
    merged.update({k: v for k, (_, v) in from_verl.items()})
    if "agg" in merged and merged["agg"] != loss_agg_mode:
        raise ValueError(f"loss_agg_mode: {loss_agg_mode!r} disagrees with the objective's "
                         f"agg={merged['agg']!r}; set only actor.loss_agg_mode")
    if "agg" in entry.params:
        merged["agg"] = "token-mean" if loss_agg_mode == "token-sum" else loss_agg_mode
    elif loss_agg_mode == "token-sum":
        raise ValueError(f"loss_agg_mode: {objective!r} has no aggregation mode to set")
    info = dict(config_get(config, "global_batch_info") or {}) if info is None else dict(info)
    if ("norm_length" in entry.params and merged.get("norm_length") is None
            and info.get("loss_scale_factor") is not None):
        merged["norm_length"] = float(info["loss_scale_factor"])
    return merged, info


def objective_of(config: Any) -> str:
    """The registered objective of the actor's ``policy_loss.loss_mode`` (``fibration_<name>``);
    ``ValueError`` for another loss mode."""
    mode = str(config_get(config_get(config, "policy_loss"), "loss_mode"))
    if not mode.startswith(PREFIX):
        raise ValueError(f"policy_loss.loss_mode: {mode!r} is not a fibration_* loss")
    name = mode[len(PREFIX):]
    get(name)  # ValueError listing the names on a miss
    return name


def microbatch_mode(config: Any) -> str:
    """``config.policy_loss.microbatch`` (default ``exact``); ``ValueError`` for another value."""
    mode = config_get(config_get(config, "policy_loss"), "microbatch") or "exact"
    if mode not in MICROBATCH_MODES:
        raise ValueError(f"policy_loss.microbatch must be one of {MICROBATCH_MODES}, "
                         f"got {mode!r}")
    return str(mode)


def check_coupled_call(objective: str, config: Any, mask: torch.Tensor,
                       info: Mapping[str, Any], has_groups: bool) -> None:
    """Refuse (``ValueError``) a call of ``objective`` by verl's actor that would silently
    compute another objective than the configured one.

    ``mask``: ``[b, T]``, the micro-batch's response tokens; ``info``: verl's
    ``global_batch_info``; ``has_groups``: prompt-group labels reached the loss. For an
    objective whose declared coupling is above the trajectory (or undeclared):

    * gated by prompt groups or domains but no labels: verl's ``ppo_loss`` passes none, and
      every row would be its own group (FiberPO-Domain reduced to FiberPO);
    * the micro-batch is a part of the mini-batch (fewer tokens than ``batch_num_tokens``,
      fewer rows than ``global_batch_size``, or ``dp_size > 1``) and
      ``policy_loss.microbatch`` is not ``local``: a group or domain spanning micro-batches or
      ranks would be gated with this part's aggregates only. (``local`` is exact when every
      micro-batch holds whole groups and domains on one rank.)
    """
    coupling = get(objective).coupling
    if coupling in ROW_LOCAL or config is None:
        return
    if coupling in ("group", "domain") and not has_groups:
        raise ValueError(
            f"group_ids: {PREFIX}{objective} gates prompt groups and domains, and verl's "
            f"ppo_loss passes no prompt ids to a policy loss; install "
            f"fibration_theory.integrations.verl.hierarchical_ppo_loss with the actor "
            f"worker's set_loss_fn (it hands over the batch's uid and "
            f"policy_loss.domain_key columns)")
    if microbatch_mode(config) == "local":
        return
    tokens, rows = info.get("batch_num_tokens"), info.get("global_batch_size")
    part = (float(info.get("dp_size") or 1) > 1
            or (tokens is not None and float(mask.sum()) < float(tokens))
            or (rows is not None and mask.shape[0] < int(rows)))
    if part:
        raise ValueError(
            f"policy_loss.microbatch: {PREFIX}{objective} (coupling {coupling or 'undeclared'}) "
            f"got {mask.shape[0]} rows and {int(mask.sum())} tokens of a mini-batch of "
            f"{rows} rows and {tokens} tokens over {info.get('dp_size') or 1} rank(s), so its "
            f"groups and domains may span micro-batches; wrap the engine's "
            f"forward_backward_batch with "
            f"fibration_theory.integrations.verl_minibatch.exact_forward_backward (exact), or "
            f"set policy_loss.microbatch=local to gate each micro-batch on its own rows "
            f"(approximate)")
