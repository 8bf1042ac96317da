"""Exact objectives when one optimizer step's batch is split into micro-batches in time.

Gradient accumulation (TRL's micro-batches, verl's ``ppo_micro_batch_size``) runs the forward
and backward of an optimizer step's batch in pieces. FiberPO-Domain's gates read aggregates of
whole prompt groups and domains (eq 33) and the RGF weights divide by batch-wide counts (eq 6,
eq 30), so a group or domain spanning several micro-batches is gated wrongly when each
micro-batch computes the objective on its own rows (the *approximate, micro-batch-local*
result). This module gives the exact one.

Method. The objective ``L`` of the step depends on the policy only through the per-token
log-probabilities ``l = (l_1, ..., l_J)`` of the ``J`` micro-batches, so

    dL/dtheta = sum_j  <dL/dl_j, dl_j/dtheta>.

:func:`plan` runs the objective once on the step's whole (padded, concatenated) batch of
*detached* log-probs -- every node aggregate, count and per-node scalar of the gates is then
the whole batch's -- and keeps ``g_j = dL/dl_j`` (``[B_j, T_j]``, float64), the per-token
adjoint that carries every aggregate's contribution back to its tokens.
:meth:`StepPlan.loss` then gives micro-batch ``j`` the surrogate

    L_j = <g_j, l_j> - <g_j, stop_grad(l_j)> + L / J,

whose gradient is ``<g_j, dl_j/dtheta>``: the summed micro-batch gradients are the whole
batch's gradient, and the summed values are ``L``.

The no-grad pass. ``g`` must be taken at the log-probs the backward will see. Off-policy
(reused samples, ``old != current``) this needs the current log-probs of every micro-batch
before the first backward: one no-grad forward of the step's micro-batches, the extra cost.
On fresh samples the ratio is exactly 1 on every token, the log-ratios are 0, and ``g``
depends on the advantages, mask and hierarchy only: call :func:`plan` without
``log_probs`` and no model pass is run.

Data parallelism. With ``process_group`` the whole-step objective is
:func:`fibration_theory.integrations.distributed.compute` over the ranks' concatenated
micro-batches (the same all-reduced aggregates), so ``g`` is exact across ranks and time;
``grad_reduction`` has the meaning it has there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import distributed
from fibration_theory.losses.compute import LossOutput
from fibration_theory.validation import as_mask

Tensor = torch.Tensor

__all__ = ["MICROBATCH_MODES", "StepPlan", "plan"]

#: how a trainer computes an objective over the micro-batches of one optimizer step:
#: ``exact`` (this module's plan; the default of the TRL and verl integrations) or
#: ``local`` (each micro-batch on its own rows: approximate for objectives coupled above the
#: trajectory)
MICROBATCH_MODES: tuple[str, ...] = ("exact", "local")


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """The whole step's objective and its per-token gradients, micro-batch by micro-batch.

    ``output``: the :class:`~fibration_theory.losses.LossOutput` of the whole step (its
    ``rgf`` rows are the concatenated micro-batches, padded to the widest); ``grads[j]``:
    ``[B_j, T_j]`` float64 ``dL/dl_j`` (zero at padding).
    """

    output: LossOutput
    grads: tuple[Tensor, ...]

    def weights(self, j: int) -> Tensor:
        """``[B_j, T_j]``: the whole step's RGF weights ``mu`` (eq 6) on micro-batch ``j``'s
        tokens, e.g. to weight a per-token penalty (a KL estimate) as the step's objective
        weights its terms."""
        self._check(j)
        start = sum(g.shape[0] for g in self.grads[:j])
        rows, width = self.grads[j].shape
        return self.output.weights.detach()[start:start + rows, :width]

    def _check(self, j: int) -> None:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < len(self.grads):
            raise ValueError(f"j: micro-batch index must be in [0, {len(self.grads)}), got {j!r}")

    @property
    def value(self) -> float:
        """The step's loss ``L`` (for ``process_group``: the rank's returned loss)."""
        return float(self.output.loss.detach())

    def loss(self, j: int, log_prob: Tensor) -> Tensor:
        """Micro-batch ``j``'s surrogate loss (scalar, float64): gradient ``<g_j, dl_j>``,
        value ``L / J``. ``log_prob``: ``[B_j, T_j]``, the micro-batch's current
        log-probabilities with their graph."""
        self._check(j)
        g = self.grads[j]
        if tuple(log_prob.shape) != tuple(g.shape):
            raise ValueError(f"log_prob: shape {tuple(log_prob.shape)} differs from micro-batch "
                             f"{j}'s planned shape {tuple(g.shape)}")
        lp = log_prob.to(torch.float64)
        g = g.to(lp.device)
        surrogate = (g * lp).sum() - (g * lp.detach()).sum()
        return surrogate + self.value / len(self.grads)


def _pad(parts: Sequence[Tensor], width: int, fill) -> Tensor:
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=fill)
                      for p in parts])


def _join(labels) -> object:
    """Concatenate per-micro-batch labels (tensors, or sequences of hashables)."""
    if labels is None:
        return None
    if all(isinstance(x, Tensor) for x in labels):
        return torch.cat(list(labels))
    return [v for x in labels for v in (x.tolist() if isinstance(x, Tensor) else list(x))]


def plan(name: str, old_log_probs: Sequence[Tensor], advantages: Sequence[Tensor],
         masks: Sequence, *, log_probs: Sequence[Tensor] | None = None,
         group_ids: Sequence | None = None, domain_ids: Sequence | None = None,
         process_group=None, grad_reduction: distributed.GradReduction = "mean",
         **params) -> StepPlan:
    """Gather the step's aggregates: the objective on all micro-batches at once, no model pass.

    Args:
        name, **params: the registered objective and its parameters (as ``losses.compute``).
        old_log_probs, advantages, masks: one ``[B_j, T_j]`` tensor per micro-batch.
        log_probs: the current policy's detached log-probs per micro-batch (the no-grad
            pass); ``None`` on fresh samples, where the ratio is 1 on every token.
        group_ids, domain_ids: per micro-batch ``[B_j]`` labels, equal labels naming one node
            across micro-batches (and ranks).
        process_group: exact across data-parallel ranks too (see the module note).

    Returns:
        :class:`StepPlan`. Raises ``ValueError`` for mismatched micro-batch lists.
    """
    n = len(masks)
    if n == 0:
        raise ValueError("masks: give at least one micro-batch")
    for arg, seq in (("old_log_probs", old_log_probs), ("advantages", advantages),
                     ("log_probs", log_probs), ("group_ids", group_ids),
                     ("domain_ids", domain_ids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{arg}: {len(seq)} micro-batches, masks has {n}")
    ms = [as_mask(m) for m in masks]
    width = max(m.shape[1] for m in ms)
    old = _pad([t.detach().to(torch.float64) for t in old_log_probs], width, 0.0)
    adv = _pad([t.detach().to(torch.float64) for t in advantages], width, 0.0)
    cur = old if log_probs is None else _pad(
        [t.detach().to(torch.float64) for t in log_probs], width, 0.0)
    mask = _pad(ms, width, False)
    lp = cur.clone().requires_grad_(True)
    groups, domains = _join(group_ids), _join(domain_ids)
    if process_group is not None:
        out = distributed.compute(name, lp, old, adv, mask, group_ids=groups,
                                  domain_ids=domains, process_group=process_group,
                                  grad_reduction=grad_reduction, **params)
    else:
        h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
        out = losses.compute(name, lp, old, adv, mask, hierarchy=h, **params)
    (g,) = torch.autograd.grad(out.loss, lp, allow_unused=True)
    g = torch.zeros_like(lp) if g is None else torch.where(mask, g, torch.zeros_like(g))
    rows = [m.shape[0] for m in ms]
    grads = tuple(part[:, :m.shape[1]].contiguous()
                  for part, m in zip(torch.split(g, rows), ms, strict=True))
    return StepPlan(LossOutput(out.loss.detach(), out.metrics, out.rgf, out.regimes), grads)
