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
  loss. Otherwise every row is its own trajectory and ``fiberpo_domain`` reduces to
  ``fiberpo``; the functions also take ``group_ids``/``domain_ids`` keywords. A group or
  domain spanning several micro-batches is gated with its micro-batch's aggregates, unless
  the engine is wrapped by
  :func:`fibration_theory.integrations.verl_minibatch.exact_forward_backward` (the whole
  mini-batch's gates).
"""

from __future__ import annotations

import contextvars
import dataclasses
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
#: verl 0.9.1's aggregation modes: ours plus ``token-sum``
VERL_AGG_MODES: tuple[str, ...] = (*AGG_MODES, "token-sum")
#: our objective -> verl's loss mode implementing the same objective
VERL_PEERS: dict[str, str] = {
    "ppo_clip": "vanilla", "dapo": "vanilla", "grpo": "vanilla", "dr_grpo": "vanilla",
    "gspo": "gspo", "gspo_token": "gspo", "gmpo": "geo_mean", "cispo": "cispo", "sapo": "sapo"}
#: verl's ``ActorConfig`` defaults of the clip settings (what "not set" looks like)
VERL_CLIP_DEFAULTS = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
                      "clip_ratio_c": 3.0}

__all__ = ["PREFIX", "VERL_AGG_MODES", "VERL_PEERS", "compute_policy_loss", "global_scale",
           "hierarchical_ppo_loss", "loss_params", "make_policy_loss", "objective_of",
           "register", "row_labels", "verl_params", "weighted_advantages"]

#: ``(group labels, domain labels or None)`` of the micro-batch in the current call of
#: :func:`hierarchical_ppo_loss`, read by the policy loss that verl's ``ppo_loss`` calls
_ROW_IDS: contextvars.ContextVar[tuple[list, list | None] | None] = contextvars.ContextVar(
    "fibration_row_ids", default=None)
#: ``[b]`` indices of the micro-batch's rows in their mini-batch (exact mode), likewise
_ROWS: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar(
    "fibration_rows", default=None)


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


def verl_params(objective: str, config: Any) -> dict[str, tuple[str, Any]]:
    """The objective's parameters that verl's actor ``config`` sets: ``{param: (verl key,
    value)}`` (module note). Raises ``ValueError`` for a clip setting the objective lacks."""
    low, high = _get(config, "clip_ratio_low"), _get(config, "clip_ratio_high")
    ratio = _get(config, "clip_ratio")
    low = ("clip_ratio_low", low) if low is not None else ("clip_ratio", ratio)
    high = ("clip_ratio_high", high) if high is not None else ("clip_ratio", ratio)
    peer = VERL_PEERS.get(objective)
    found: dict[str, tuple[str, Any]] = {}
    if peer in ("vanilla", "gspo", "geo_mean", "cispo"):
        found.update(eps_low=low, eps_high=high)
    if peer == "vanilla":
        found["dual_clip"] = ("clip_ratio_c", _get(config, "clip_ratio_c"))
    if peer == "sapo":
        found.update(tau_pos=("tau_pos", _get(config, "tau_pos")),
                     tau_neg=("tau_neg", _get(config, "tau_neg")))
    if peer is None:
        for key, default in VERL_CLIP_DEFAULTS.items():
            value = _get(config, key)
            if value is not None and float(value) != default:
                raise ValueError(f"actor.{key}={value}: {PREFIX}{objective} has no clip ratio "
                                 f"(its budgets are actor.policy_loss.fibration's parameters "
                                 f"{sorted(get(objective).params)}); leave actor.{key} at "
                                 f"verl's default {default}")
    return {k: v for k, v in found.items() if v[1] is not None}


def _scale(agg: str, num_tokens: float, num_traj: float, width: int, info: Mapping[str, Any],
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


def global_scale(objective: str, loss_agg_mode: str, mask: Tensor, info: Mapping[str, Any],
                 dp_group=None) -> float:
    """:func:`_scale` for the objective on the whole mini-batch of every rank (``mask``:
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
    return _scale(loss_agg_mode, float(counts[0]), float(counts[1]), int(counts[2]), info,
                  "norm_length" in get(objective).params, 1.0)


def _row_geo_mean(w: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]``: each row's geometric mean of ``w`` over its tokens, broadcast (0 when a
    token's weight is 0), as verl's ``geo_mean`` weights a sequence."""
    logw = torch.where(mask, torch.log(w), torch.zeros_like(w))
    n = mask.sum(-1, keepdim=True).clamp_min(1).to(w.dtype)
    return torch.exp(logw.sum(-1, keepdim=True) / n).expand_as(w)


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    return float(torch.where(mask, x.to(torch.float64), torch.zeros_like(x, dtype=torch.float64))
                 .sum() / mask.sum())


def _verl_clip_metrics(objective: str, log_ratio: Tensor, adv: Tensor, mask: Tensor,
                       params: Mapping[str, Any]) -> dict[str, float]:
    """``pg_clipfrac`` / ``pg_clipfrac_lower`` as verl's counterpart of ``objective`` counts
    them (token-level masked means; ``[B, T]`` inputs)."""
    peer = VERL_PEERS[objective]
    zero = torch.zeros_like(adv)
    if peer == "sapo":
        return {"actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0}
    lo, hi = float(params["eps_low"]), float(params["eps_high"])
    if peer == "geo_mean":
        clipped = log_ratio != log_ratio.clamp(-lo, hi)
        return {"actor/pg_clipfrac": _masked_mean((clipped & (adv > 0)).to(adv), mask),
                "actor/pg_clipfrac_lower": _masked_mean((clipped & (adv < 0)).to(adv), mask)}
    if peer == "gspo":
        n = mask.sum(-1, keepdim=True).clamp_min(1)
        seq = torch.where(mask, log_ratio, zero).sum(-1, keepdim=True) / n
        ratio = torch.exp(seq.clamp(max=10.0)).expand_as(adv)
    else:
        ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    clip = ratio.clamp(1 - lo, 1 + hi)
    if peer == "cispo":
        return {"actor/pg_clipfrac": _masked_mean((ratio != clip).to(adv), mask),
                "actor/pg_clipfrac_lower": 0.0}
    loss1, loss2 = -adv * ratio, -adv * clip
    out = {"actor/pg_clipfrac": _masked_mean((loss2 > loss1).to(adv), mask),
           "actor/pg_clipfrac_lower": 0.0}
    c = params.get("dual_clip")
    if peer == "vanilla" and c is not None:
        lower = (torch.maximum(loss1, loss2) > -adv * float(c)) & (adv < 0)
        out["actor/pg_clipfrac_lower"] = _masked_mean(lower.to(adv), mask)
    return out


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
    info = dict(_get(config, "global_batch_info") or {}) if info is None else dict(info)
    if ("norm_length" in entry.params and merged.get("norm_length") is None
            and info.get("loss_scale_factor") is not None):
        merged["norm_length"] = float(info["loss_scale_factor"])
    return merged, info


def weighted_advantages(objective: str, adv: Tensor, rollout_is_weights: Tensor | None,
                        mask: Tensor) -> Tensor:
    """``[B, T]`` float64 advantages times verl's rollout weights (``>= 0``, detached) as
    verl's losses apply them: per token, or the row's geometric mean for GMPO."""
    adv = adv.detach().to(torch.float64)
    if rollout_is_weights is None:
        return adv
    check_float(rollout_is_weights, "rollout_is_weights", tuple(mask.shape), mask)
    w = rollout_is_weights.detach().to(torch.float64)
    if bool((w[mask] < 0).any()):
        raise ValueError("rollout_is_weights must be >= 0 on the response tokens")
    return adv * (_row_geo_mean(w, mask) if objective == "gmpo" else w)


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
        h = Hierarchy.from_padded(mask, group_ids=group_ids, domain_ids=domain_ids)
        out = losses.compute(objective, lp64, old64, adv, mask, hierarchy=h, **merged)
        loss = out.loss
        if "agg" in entry.params:
            loss = loss * _scale(loss_agg_mode, h.num_tokens, h.num_traj, h.mask.shape[1], info,
                                 "norm_length" in entry.params,
                                 float(info.get("dp_size") or 1))
        fiber_metrics = out.metrics
    metrics = {"actor/ppo_kl": fiber_metrics["approx_kl/k1"]}
    if objective in VERL_PEERS:
        full = {**entry.params, **merged}
        metrics.update(_verl_clip_metrics(objective, (lp64 - old64).detach(),
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
    policy = _get(config, "policy_loss")
    groups = _column(data, _get(policy, "group_key") or "uid", "policy_loss.group_key")
    key = _get(policy, "domain_key")
    return groups, (_column(data, key, "policy_loss.domain_key") if key else None)


def objective_of(config: Any) -> str:
    """The registered objective of the actor's ``policy_loss.loss_mode`` (``fibration_<name>``);
    ``ValueError`` for another loss mode."""
    mode = str(_get(_get(config, "policy_loss"), "loss_mode"))
    if not mode.startswith(PREFIX):
        raise ValueError(f"policy_loss.loss_mode: {mode!r} is not a fibration_* loss")
    name = mode[len(PREFIX):]
    get(name)  # ValueError listing the names on a miss
    return name


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
        columns :func:`hierarchical_ppo_loss` reads the group and domain labels from."""

        fibration: dict = dataclasses.field(default_factory=dict)
        group_key: str = "uid"
        domain_key: str | None = None

    __all__.append("FiberPolicyLossConfig")
