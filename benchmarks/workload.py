"""Synthetic padded batches for the benchmarks (verl / TRL layout).

A batch of ``N`` padded tokens is ``B = N / width`` rows of ``width`` slots; row lengths are
uniform in ``[width/4, width]`` (so about 5/8 of the slots are response tokens), rows come
in prompt groups of ``group_size`` and groups in ``num_domains`` domains. Log-ratios are
small (``0.05 * N(0, 1)``, the size of a few epochs of reuse), advantages are per row (an
outcome reward broadcast over the row), both in the requested dtype.
"""

from __future__ import annotations

import dataclasses

import torch

from fibration_theory import Hierarchy

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class Workload:
    """``log_prob``, ``old_log_prob``, ``advantages``: ``[B, T]``; ``mask``: ``[B, T]`` bool;
    ``group_ids`` / ``domain_ids``: ``[B]`` long."""

    log_prob: Tensor
    old_log_prob: Tensor
    advantages: Tensor
    mask: Tensor
    group_ids: Tensor
    domain_ids: Tensor

    @property
    def slots(self) -> int:
        return self.mask.numel()

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())

    def hierarchy(self, kind: str = "trajectory") -> Hierarchy:
        """``trajectory`` (no upper level), ``domain`` (domain, group) or ``fgh<n>``."""
        if kind == "trajectory":
            return Hierarchy.from_padded(self.mask)
        if kind == "domain":
            return Hierarchy.from_padded(self.mask, self.group_ids, self.domain_ids)
        if kind.startswith("fgh"):
            return Hierarchy.from_padded(self.mask, levels=fgh_levels(self.group_ids,
                                                                      int(kind[3:])))
        raise ValueError(f"kind must be trajectory, domain or fgh<n>, got {kind!r}")


def fgh_levels(group_ids: Tensor, depth: int) -> list[Tensor]:
    """Ids of the ``depth - 1`` levels above the trajectories of an FGH of depth ``depth``
    (Def 6.1: depth 1 is FiberPO's single base, 3 is FiberPO-Domain), coarse to fine: the
    finest is the prompt group, each coarser level pairs up the nodes below it."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return [group_ids // (2 ** j) for j in range(depth - 2, -1, -1)]


def make_workload(slots: int, *, width: int = 1000, group_size: int = 8, num_domains: int = 4,
                  dtype: torch.dtype = torch.float32, device: str = "cpu",
                  seed: int = 0) -> Workload:
    """A padded batch of ``slots`` ``[B, T]`` entries (``width`` divides ``slots``)."""
    if slots % width:
        raise ValueError(f"slots ({slots}) must be a multiple of width ({width})")
    gen = torch.Generator().manual_seed(seed)
    rows = slots // width
    lengths = torch.randint(width // 4, width + 1, (rows,), generator=gen)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    old = -3.0 * torch.rand(rows, width, generator=gen, dtype=torch.float64)
    new = old + 0.05 * torch.randn(rows, width, generator=gen, dtype=torch.float64)
    adv = torch.randn(rows, 1, generator=gen, dtype=torch.float64).expand(rows, width)
    groups = torch.arange(rows) // group_size
    domains = groups % num_domains
    def to(t: Tensor) -> Tensor:
        return t.to(dtype=dtype, device=device)

    return Workload(to(new), to(old), to(adv.contiguous()), mask.to(device),
                    groups.to(device), domains.to(device))
