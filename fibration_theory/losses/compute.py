"""``losses.compute``: validate once, build the objective's RGF instance, return ``-J``."""

from __future__ import annotations

import dataclasses

import torch

from fibration_theory.hierarchy import Hierarchy
from fibration_theory.losses import precision
from fibration_theory.losses.registry import REGISTRY, Batch, get
from fibration_theory.metrics import ratio_metrics
from fibration_theory.rgf import RGF
from fibration_theory.validation import as_mask, check_float, check_not_text, check_same_dtype

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class LossOutput:
    """``loss``: scalar ``-J`` to minimize; ``metrics``: floats (empty when ``compute`` was
    called with ``metrics=False``); ``rgf``: the RGF triple; ``regimes``: for ``fiberpo`` and
    ``fiberpo_domain`` with metrics, the gate's regime statistics
    (:class:`fibration_theory.fiberpo.Regimes`: per-row labels, drifts, occupancy), else
    ``None``."""

    loss: Tensor
    metrics: dict[str, float]
    rgf: RGF
    regimes: object | None = None

    @property
    def gated_ratio(self) -> Tensor:
        return self.rgf.gated_ratio

    @property
    def weights(self) -> Tensor:
        return self.rgf.weights


def compute(name: str, log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask, *,
            hierarchy: Hierarchy | None = None, state_ids: Tensor | None = None,
            log_ratio_clamp: float | None = None, metrics: bool = True,
            **params) -> LossOutput:
    """Loss of the registered objective ``name`` on a padded batch.

    Args:
        name: a name from :func:`fibration_theory.losses.available`.
        log_prob: ``[B, T]`` log-probabilities of the sampled tokens under ``pi_theta``
            (differentiable).
        old_log_prob: ``[B, T]`` the same under ``pi_old`` (treated as a constant).
        advantages: ``[B, T]`` advantage per token (treated as a constant).
        mask: ``[B, T]`` response mask, bool or 0/1.
        hierarchy: the batch's hierarchy (groups, domains); by default every row is its own
            trajectory and there are no upper levels. Its mask must equal ``mask``.
        state_ids: ``[B, T]`` integer state of each token, for objectives with states
            (``apc``); by default each token is its own state. Refused by the others.
        log_ratio_clamp: opt-in ``c > 0``: clamp ``log_prob - old_log_prob`` to ``[-c, c]``
            before the objective (verl's ``c = 20``); off (``None``) by default, since it
            changes the objective.
        metrics: ``False`` skips every diagnostic (for hot loops): ``metrics`` is then
            ``{}`` and ``regimes`` ``None``; loss, gradient and ``rgf`` are unchanged.
        **params: the objective's hyperparameters (see ``fibration losses``); real numbers,
            never strings.

    Returns:
        :class:`LossOutput`. Values outside ``mask`` are ignored; rows without any token are
        dropped (weight 0) and counted in ``metrics["empty_rows"]``. ``loss`` has the inputs'
        dtype; float16/bfloat16 inputs are computed in float32 (``rgf`` stays float32) and the
        loss cast back (see :mod:`fibration_theory.losses.precision`).

    Raises:
        ValueError: naming the argument, on shape or dtype mismatch, non-finite values
            inside the mask, an unknown objective or hyperparameter, bad hyperparameters, or
            (naming ``log_prob``, its row and token) a log-ratio whose exact objective value
            does not fit the dtype, such as an unclipped ``exp(1e4) * A``.
    """
    entry = get(name)
    if not isinstance(metrics, bool):
        raise ValueError(f"metrics must be True or False, got {metrics!r}")
    m = as_mask(mask)
    shape = tuple(m.shape)
    check_float(log_prob, "log_prob", shape, m)
    check_float(old_log_prob, "old_log_prob", shape, m)
    check_float(advantages, "advantages", shape, m)
    check_same_dtype(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    if hierarchy is None:
        hierarchy = Hierarchy.from_padded(m)
    elif not isinstance(hierarchy, Hierarchy):
        raise ValueError(f"hierarchy must be a Hierarchy, got {type(hierarchy).__name__}")
    elif tuple(hierarchy.mask.shape) != shape or not torch.equal(hierarchy.mask, m.to(
            hierarchy.mask.device)):
        raise ValueError("hierarchy: its mask differs from mask; build it from the same mask")
    accepted = entry.params
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of {name!r}; it takes "
                         f"{', '.join(f'{k}={v!r}' for k, v in accepted.items())}")
    check_not_text(params, accepted)
    if state_ids is not None and not entry.states:
        raise ValueError(f"state_ids: objective {name!r} has no states; only "
                         f"{', '.join(sorted(k for k, e in REGISTRY.items() if e.states))} "
                         f"take state_ids")
    dtype = log_prob.dtype
    work = precision.work_dtype(dtype)  # float32 for half inputs, cast back at the end
    zero = torch.zeros((), dtype=work, device=log_prob.device)
    raw = torch.where(m, log_prob.to(work) - old_log_prob.detach().to(work), zero)
    log_ratio = precision.clamp_log_ratio(raw, log_ratio_clamp)
    adv = torch.where(m, advantages.detach().to(work), zero)
    surrogate = entry.fn(Batch(log_ratio, adv, hierarchy, state_ids, metrics), **params)
    loss = -surrogate.rgf.objective()
    precision.check_fits(name, surrogate.rgf, loss, log_ratio, m, dtype)
    loss = loss.to(dtype)
    if not metrics:
        return LossOutput(loss, {}, surrogate.rgf)
    out = ratio_metrics(raw, hierarchy, masked=True)  # raw is 0 off the mask
    if log_ratio_clamp is not None:
        out["log_ratio/clamped_frac"] = float(((raw != log_ratio) & m).sum()) / max(
            int(m.sum()), 1)
    out.update(surrogate.metrics)
    out["loss"] = float(loss.detach())
    return LossOutput(loss, out, surrogate.rgf, surrogate.regimes)


