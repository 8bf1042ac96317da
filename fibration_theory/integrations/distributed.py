"""Data-parallel objectives over ``torch.distributed``: one loss for a batch split across ranks.

FiberPO-Domain's gates read aggregates of a whole prompt group and a whole domain (eq 33), and
every RGF weight ``mu`` divides by batch-wide counts (``|Tj|``, ``T``; eq 6, eq 30). When the
rows of a batch live on several ranks, each rank must see the same aggregates as one process
holding the concatenated batch. This module does that:

* :func:`hierarchy` agrees on one factorization of the group/domain labels across ranks (one
  ``all_gather_object`` of the raw labels), checks nesting on the global batch, and builds a
  :class:`~fibration_theory.Hierarchy` whose ``allreduce`` hook is a differentiable sum over the
  process group. Every cross-row sum of the core (node sums, counts, ``|Tj|``, ``T``) goes
  through that hook, so the gated ratios are exactly the single-process ones.
* :func:`compute` wraps :func:`fibration_theory.losses.compute` on top of it.

Gradient convention
-------------------
Let ``L`` be the loss of the concatenated batch and ``L_r`` rank ``r``'s share
(``sum_r L_r = L``; ``L_r = -sum_{i on r} mu_i G(r)_i A_i``). The all-reduce's backward sums the
incoming gradients over ranks, so ``L_r.backward()`` on every rank leaves, on rank ``r``, the
exact ``dL/d(log_prob_r)``: the cross-rank terms (a group split over ranks) arrive through the
collective. Hosts then combine parameter gradients over ranks:

* ``grad_reduction="mean"`` (DDP, FSDP, DeepSpeed, accelerate: gradients are averaged): the
  returned loss is ``W * L_r`` (``W`` the world size), so the averaged gradient is ``dL/dtheta``;
* ``grad_reduction="sum"``: the returned loss is ``L_r``; summed gradients give ``dL/dtheta``.

``metrics["loss"]`` is the global ``L`` on every rank; the other metrics describe this rank's
rows (their aggregates over levels use the global nodes).

``metrics["loss/rank_share"]`` is ``L_r``.

Restrictions (each checked, raising ``ValueError`` on every rank rather than hanging):
every rank holds at least one response token (the per-rank metrics need one); APC's caller-given
``state_ids`` must not be shared by two ranks (per-state sums are not all-reduced; keep the
tokens of one state on one rank, which holds when states are prefixes of one prompt's rollouts
placed together). Dr.GRPO's default ``norm_length`` becomes the widest padded width over ranks,
the width of the concatenated batch.

Collectives are issued in the same order on every rank as long as every rank calls with the
same objective and parameters, and every rank calls ``backward()`` (the backward all-reduces
too). A dedicated process group (``dist.new_group()``) keeps them apart from the host's own
gradient collectives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from fibration_theory import losses
from fibration_theory.hierarchy import Hierarchy, _check_nesting
from fibration_theory.losses.apc import state_codes
from fibration_theory.losses.compute import LossOutput
from fibration_theory.losses.registry import get
from fibration_theory.validation import as_ids, as_mask, check_float, check_same_dtype

Tensor = torch.Tensor
GradReduction = Literal["mean", "sum"]

__all__ = ["GradReduction", "allreduce_sum", "compute", "hierarchy", "make_allreduce"]


class _AllReduceSum(torch.autograd.Function):
    """``y = sum_r x_r`` over the group; the backward sums the ranks' output gradients, since
    ``dL/dx_r = sum_s dL_s/dy`` when every rank's loss ``L_s`` reads ``y``."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        out = x.detach().clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad.detach().clone().contiguous()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def allreduce_sum(x: Tensor, process_group=None) -> Tensor:
    """Differentiable sum of ``x`` over the ranks of ``process_group`` (any shape)."""
    return _AllReduceSum.apply(x, process_group)


def make_allreduce(process_group=None) -> Callable[[Tensor], Tensor]:
    """The ``allreduce`` hook of :class:`~fibration_theory.Hierarchy` for ``process_group``."""
    return lambda x: allreduce_sum(x, process_group)


@dataclasses.dataclass(frozen=True)
class _Local:
    """What each rank contributes to the one ``all_gather_object`` of :func:`hierarchy`."""

    error: str | None
    names: tuple[str, ...]
    labels: tuple[list, ...]  # raw labels per level
    all_tensors: bool  # every level given as an integer tensor
    width: int  # padded width T of this rank's batch
    tokens: int


def _named_levels(group_ids, domain_ids, levels) -> list[tuple[str, object]]:
    if levels is not None and (group_ids is not None or domain_ids is not None):
        raise ValueError("levels: give either levels=... or group_ids/domain_ids, not both")
    if levels is None:
        return [(n, ids) for n, ids in (("domain", domain_ids), ("group", group_ids))
                if ids is not None]
    if isinstance(levels, Mapping):
        return list(levels.items())
    return [(f"level{k}", ids) for k, ids in enumerate(levels)]


def _arg_name(name: str) -> str:
    return f"{name}_ids" if name in ("group", "domain") else name


def _as_list(ids) -> list:
    """Raw labels as a picklable list (ints from a tensor, hashables otherwise)."""
    if isinstance(ids, Tensor):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return list(ids)
    return list(np.asarray(ids, dtype=object).reshape(-1))


def _local(mask, named, tensors: Mapping[str, Tensor]) -> _Local:
    """Validate this rank's input; failures travel in ``error`` so that every rank raises."""
    try:
        m = as_mask(mask)
        shape = tuple(m.shape)
        for arg, t in tensors.items():
            check_float(t, arg, shape, m)
        if tensors:
            check_same_dtype(**tensors)
        labels = []
        for name, ids in named:
            as_ids(ids, _arg_name(name), shape[0])  # shape, dtype, sign, missing labels
            labels.append(_as_list(ids))
        return _Local(None, tuple(n for n, _ in named), tuple(labels),
                      all(isinstance(ids, Tensor) for _, ids in named), shape[1],
                      int(m.sum()))
    except ValueError as exc:
        return _Local(str(exc), (), (), False, 0, 0)


def _world(process_group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("process_group: torch.distributed is not initialized; call "
                         "dist.init_process_group first (or use losses.compute on one process)")
    return dist.get_world_size(process_group), dist.get_rank(process_group)


def _build(mask, named, tensors, process_group) -> tuple[Hierarchy, int]:
    world, rank = _world(process_group)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, _local(mask, named, tensors), group=process_group)
    for r, info in enumerate(gathered):
        if info.error is not None:
            raise ValueError(f"rank {r}: {info.error}")
    names = gathered[0].names
    for r, info in enumerate(gathered):
        if info.names != names:
            raise ValueError(f"levels: rank {r} gives levels {list(info.names)}, rank 0 gives "
                             f"{list(names)}; every rank must name the same levels")
        if info.tokens == 0:
            raise ValueError(f"mask: rank {r} holds no response token; give every rank at least "
                             f"one (the per-rank metrics need one)")
    sizes = [len(info.labels[0]) if names else 0 for info in gathered]
    offset = sum(sizes[:rank])
    codes, counts = {}, []
    for k, name in enumerate(names):
        flat = [v for info in gathered for v in info.labels[k]]
        if all(info.all_tensors for info in gathered):
            flat = torch.tensor(flat, dtype=torch.long)
        codes[name] = as_ids(flat, _arg_name(name), len(flat))
        counts.append(int(codes[name].max()) + 1)
    try:
        _check_nesting(list(codes.items()))
    except ValueError as exc:
        raise ValueError(f"{exc} (rows numbered over the concatenated batch, rank by rank: "
                         f"{sizes} rows)") from None
    m = as_mask(mask)
    local = {name: c[offset:offset + m.shape[0]].to(m.device) for name, c in codes.items()}
    h = Hierarchy.from_padded(m, levels=local, allreduce=make_allreduce(process_group),
                              num_nodes=counts)
    return h, max(info.width for info in gathered)


def hierarchy(mask, group_ids=None, domain_ids=None, *,
              levels: Mapping[str, object] | Sequence[object] | None = None,
              process_group=None) -> Hierarchy:
    """This rank's :class:`~fibration_theory.Hierarchy`, with global nodes and all-reduced sums.

    Args:
        mask: ``[B_r, T_r]`` this rank's response mask (widths may differ across ranks).
        group_ids, domain_ids, levels: as :meth:`Hierarchy.from_padded`, this rank's rows;
            equal labels on different ranks name the same node.
        process_group: the ``torch.distributed`` group (default: the world).

    A collective: every rank of ``process_group`` must call it. Raises ``ValueError`` (on every
    rank, naming the rank) for bad input on any rank, levels that differ between ranks, levels
    that do not nest on the concatenated batch, or a rank without response tokens.
    """
    h, _ = _build(mask, _named_levels(group_ids, domain_ids, levels), {}, process_group)
    return h


def _check_states(state_ids, mask: Tensor, process_group, world: int) -> None:
    """APC's per-state sums stay on one rank: no state of a response token may appear on two
    ranks (ids at padded positions are ignored, as APC ignores them)."""
    try:
        state_codes(state_ids, mask)  # shape and dtype, checked as APC checks them
        error, mine = None, set(torch.unique(state_ids[mask]).tolist())
    except ValueError as exc:
        error, mine = str(exc), set()
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (error, mine), group=process_group)
    seen: dict = {}
    for r, (err, ids) in enumerate(gathered):
        if err is not None:
            raise ValueError(f"rank {r}: {err}")
        for s in ids:
            if s in seen:
                raise ValueError(f"state_ids: state {s} appears on rank {seen[s]} and rank {r}; "
                                 f"APC's per-state budgets are not all-reduced, so keep each "
                                 f"state's tokens on one rank")
            seen[s] = r


def compute(name: str, log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask, *,
            group_ids=None, domain_ids=None, levels=None, process_group=None,
            grad_reduction: GradReduction = "mean", **params) -> LossOutput:
    """:func:`fibration_theory.losses.compute` for a batch whose rows are split across ranks.

    Args:
        name, log_prob, old_log_prob, advantages, mask, **params: as ``losses.compute``, this
            rank's ``[B_r, T_r]`` rows.
        group_ids, domain_ids, levels: this rank's labels (see :func:`hierarchy`).
        process_group: the ``torch.distributed`` group (default: the world).
        grad_reduction: how the host combines parameter gradients over ranks: ``"mean"``
            (DDP, FSDP, DeepSpeed) or ``"sum"``; see the module note.

    Returns:
        :class:`~fibration_theory.losses.LossOutput`: ``loss`` to call ``backward`` on (this
        rank's share, times the world size under ``"mean"``), ``metrics["loss"]`` the global
        loss, ``rgf`` this rank's rows of the RGF triple.
    """
    entry = get(name)
    if grad_reduction not in ("mean", "sum"):
        raise ValueError(f"grad_reduction must be 'mean' or 'sum', got {grad_reduction!r}")
    world, _ = _world(process_group)
    tensors = {"log_prob": log_prob, "old_log_prob": old_log_prob, "advantages": advantages}
    h, width = _build(mask, _named_levels(group_ids, domain_ids, levels), tensors, process_group)
    if "norm_length" in entry.params and params.get("norm_length") is None:
        params["norm_length"] = float(width)
    if entry.states and params.get("state_ids") is not None:
        _check_states(params["state_ids"], h.mask, process_group, world)
    out = losses.compute(name, log_prob, old_log_prob, advantages, h.mask, hierarchy=h, **params)
    with torch.no_grad():
        total = allreduce_sum(out.loss.detach().reshape(1), process_group)
    metrics = dict(out.metrics)
    metrics["loss"] = float(total[0])
    metrics["loss/rank_share"] = float(out.loss.detach())
    scale = world if grad_reduction == "mean" else 1
    return LossOutput(out.loss * scale, metrics, out.rgf)
