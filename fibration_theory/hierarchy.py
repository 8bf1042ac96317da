"""The sampling hierarchy of a batch: domain ⊇ prompt group ⊇ trajectory ⊇ token.

FiberPO (Def 5.1) needs the trajectory level only; FiberPO-Domain (Def 6.4) adds the prompt
group and the domain; the toolkit accepts any chain of nested levels (Def 6.1, a uniform
fibration hierarchy, with one stratum per level). The counts are the paper's:

* ``T_tau``  tokens of trajectory tau (``lengths``),
* ``|Tj|``   trajectories with at least one token (``num_traj``),
* ``|Tj(g)|``, ``|Tj(D)|`` trajectories per node (``Level.num_traj``),
* ``T_g``, ``T_D`` tokens per node (``Level.num_tokens``).

Every aggregate of a level is one segmented reduction (``index_add``) over per-row values;
all cross-row sums go through :meth:`Hierarchy.allreduce`, the single place where a
data-parallel run adds the other ranks' contributions.

Rows without response tokens are kept in the tensors but dropped from every count and
aggregate (they get zero weight); ``empty_rows`` reports how many there were. A batch whose
rows are all empty is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from fibration_theory.validation import as_ids, as_mask

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class Level:
    """One stratum above the trajectories (e.g. ``domain`` or ``group``).

    ``ids``: ``[B]`` long in ``0..n-1``; ``num_traj``: ``[n]`` trajectories with tokens per node
    (``|Tj(node)|``); ``num_tokens``: ``[n]`` tokens per node (``T_node``), both float64.
    """

    name: str
    ids: Tensor
    n: int
    num_traj: Tensor
    num_tokens: Tensor


def _identity(t: Tensor) -> Tensor:
    return t


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """Nested index structure of a padded ``[B, T]`` batch.

    Build it with :meth:`from_padded` or :meth:`from_ragged`; the dataclass fields are derived.
    """

    mask: Tensor  # [B, T] bool
    lengths: Tensor  # [B] float64, T_tau
    levels: tuple[Level, ...]  # coarse -> fine, trajectory level excluded
    allreduce: Callable[[Tensor], Tensor] = _identity

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_padded(
        cls,
        mask,
        group_ids=None,
        domain_ids=None,
        *,
        levels: Mapping[str, object] | Sequence[object] | None = None,
        allreduce: Callable[[Tensor], Tensor] | None = None,
        num_nodes: Sequence[int] | None = None,
    ) -> Hierarchy:
        """From a ``[B, T]`` response mask (verl / TRL layout) and optional per-row ids.

        Args:
            mask: ``[B, T]`` bool or 0/1; True marks response tokens.
            group_ids: ``[B]`` prompt-group label per row, optional: integers or labels such as
                strings (floats, bools and nested sequences are refused).
            domain_ids: ``[B]`` domain label per row, optional.
            levels: instead of the two shortcuts, any chain of nested levels ordered coarse
                to fine, as ``{name: ids}`` or a list of ids (named ``level0``, ...).
            allreduce: sum-reduction over data-parallel ranks applied to every cross-row
                aggregate (identity on one process; see ``integrations.distributed``).
            num_nodes: one node count per level (coarse to fine) when the ids are already
                codes ``0..n-1`` agreed by every data-parallel rank; they are then used as
                given instead of being factorized per process (whose codes would differ
                between ranks). ``integrations.distributed.hierarchy`` builds them.

        Raises:
            ValueError: naming the argument, for shape errors, negative ids, a level that
                does not nest in the one above it (with the offending row), or a batch
                without any response token.
        """
        mask = as_mask(mask)
        batch = mask.shape[0]
        if levels is not None and (group_ids is not None or domain_ids is not None):
            raise ValueError("levels: give either levels=... or group_ids/domain_ids, not both")
        named: list[tuple[str, object]] = []
        if levels is None:
            if domain_ids is not None:
                named.append(("domain", domain_ids))
            if group_ids is not None:
                named.append(("group", group_ids))
        elif isinstance(levels, Mapping):
            named = list(levels.items())
        else:
            named = [(f"level{k}", ids) for k, ids in enumerate(levels)]
        lengths = mask.sum(dim=1).to(torch.float64)
        reduce = allreduce or _identity
        if float(reduce(lengths.sum().reshape(1))[0]) == 0:
            raise ValueError("mask: the batch has no response token (every row is empty)")
        valid = (lengths > 0).to(torch.float64)
        if num_nodes is None:
            codes = [(name, as_ids(ids, f"{name}_ids" if name in ("group", "domain") else name,
                                   batch)) for name, ids in named]
            sizes = [int(ids.max()) + 1 if batch else 0 for _, ids in codes]
        else:
            codes, sizes = _given_codes(named, num_nodes, batch)
        _check_nesting([(name, ids.cpu()) for name, ids in codes])
        built = []
        dev = mask.device  # counts live beside the mask (CUDA batches included)
        for (name, ids), n in zip(codes, sizes):
            ids = ids.to(dev)
            num_traj = reduce(torch.zeros(n, dtype=torch.float64, device=dev).index_add(
                0, ids, valid))
            num_tokens = reduce(torch.zeros(n, dtype=torch.float64, device=dev).index_add(
                0, ids, lengths))
            built.append(Level(name, ids, n, num_traj, num_tokens))
        return cls(mask=mask, lengths=lengths, levels=tuple(built), allreduce=reduce)

    @classmethod
    def from_ragged(cls, lengths: Sequence[int] | Tensor, group_ids=None, domain_ids=None, *,
                    levels=None, max_len: int | None = None) -> Hierarchy:
        """From per-row response lengths (ragged input); the mask is left-aligned padding.

        ``lengths``: ``[B]`` non-negative ints. Use :func:`pad_ragged` to pad the values.
        """
        lengths_t = torch.as_tensor(lengths)
        if lengths_t.dim() != 1 or lengths_t.is_floating_point():
            raise ValueError(f"lengths must be a 1-D integer sequence, got {lengths_t}")
        if bool((lengths_t < 0).any()):
            raise ValueError(f"lengths must be >= 0, got {lengths_t.tolist()}")
        width = int(lengths_t.max()) if max_len is None else max_len
        if width < int(lengths_t.max()):
            raise ValueError(f"max_len={max_len} is shorter than the longest row")
        mask = torch.arange(width)[None, :] < lengths_t[:, None]
        return cls.from_padded(mask, group_ids, domain_ids, levels=levels)

    # ------------------------------------------------------------------ derived counts
    @property
    def valid(self) -> Tensor:
        """``[B]`` bool: rows with at least one response token."""
        return self.lengths > 0

    @property
    def num_traj(self) -> int:
        """``|Tj|``: trajectories with at least one token (over all ranks)."""
        return int(self.allreduce(self.valid.to(torch.float64).sum().reshape(1))[0])

    @property
    def num_tokens(self) -> int:
        """``T``: response tokens in the batch (over all ranks)."""
        return int(self.allreduce(self.lengths.sum().reshape(1))[0])

    @property
    def empty_rows(self) -> int:
        return int((~self.valid).sum())

    @property
    def depth(self) -> int:
        """Number of levels above the trajectories (0 for FiberPO, 2 for FiberPO-Domain)."""
        return len(self.levels)

    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise ValueError(f"level {name!r} is not in this hierarchy "
                         f"(levels: {[lv.name for lv in self.levels]})")

    # ------------------------------------------------------------------ reductions
    def row_sum(self, x: Tensor) -> Tensor:
        """``[B, T] -> [B]``: masked sum over each row's tokens."""
        return torch.where(self.mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)

    def row_mean(self, x: Tensor) -> Tensor:
        """``[B, T] -> [B]``: masked mean over each row's tokens (0 for an empty row)."""
        return self.row_sum(x) / self.lengths.clamp_min(1).to(x.dtype)

    def node_mean(self, k: int, row_values: Tensor) -> Tensor:
        """``[B] -> [n_k]``: mean over the valid trajectories of each node of level ``k``.

        This is eq 33's tower property: the group aggregate is the mean of its trajectories'
        aggregates, and the domain aggregate the group-size-weighted mean of its groups', which
        equals the mean of its trajectories'. Nodes without trajectories get 0.
        """
        lv = self.levels[k]
        vals = torch.where(self.valid, row_values, torch.zeros_like(row_values))
        total = torch.zeros(lv.n, dtype=row_values.dtype, device=row_values.device)
        total = self.allreduce(total.index_add(0, lv.ids, vals))
        return total / lv.num_traj.clamp_min(1).to(row_values.dtype)

    def total(self, x: Tensor) -> Tensor:
        """Sum of a tensor over the whole (data-parallel) batch, differentiable."""
        return self.allreduce(x.sum().reshape(1))[0]


def _check_nesting(codes: list[tuple[str, Tensor]]) -> None:
    """Each node of a finer level must lie inside one node of every coarser level."""
    for (coarse_name, coarse), (fine_name, fine) in zip(codes, codes[1:]):
        if fine.numel() == 0:
            continue
        n_fine = int(fine.max()) + 1
        # the coarse id of each fine node's first row; every other row must agree (codes may be
        # sparse when they are global ids, so only the first rows of present nodes are read)
        first_row = torch.full((n_fine,), fine.numel(), dtype=torch.long)
        first_row = first_row.scatter_reduce(0, fine, torch.arange(fine.numel()), "amin")
        expected = coarse[first_row[fine]]
        bad = (expected != coarse).nonzero()
        if bad.numel():
            row = int(bad[0])
            other = int(first_row[fine[row]])
            raise ValueError(
                f"{fine_name}_ids are not nested in {coarse_name}_ids: row {row} and row {other} "
                f"share a {fine_name} but lie in different {coarse_name}s "
                f"(codes {int(coarse[row])} and {int(coarse[other])})")


def _given_codes(named: list[tuple[str, object]], num_nodes: Sequence[int], batch: int
                 ) -> tuple[list[tuple[str, Tensor]], list[int]]:
    """Check caller-given global codes: one ``[B]`` integer tensor in ``0..n-1`` per level."""
    sizes = [int(n) for n in num_nodes]
    if len(sizes) != len(named):
        raise ValueError(f"num_nodes has {len(sizes)} entries for {len(named)} levels")
    codes = []
    for (name, ids), n in zip(named, sizes):
        if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.shape[0] != batch or \
                ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"{name}: with num_nodes the ids must be a [{batch}] integer tensor "
                             f"of codes, got {getattr(ids, 'shape', type(ids).__name__)}")
        if batch and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"{name}: codes must lie in 0..{n - 1} (num_nodes), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        codes.append((name, ids.to(torch.long)))
    return codes, sizes


def pad_ragged(rows: Sequence[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Left-align a list of 1-D tensors into ``([B, T] values, [B, T] bool mask)``."""
    if not rows:
        raise ValueError("rows must hold at least one row")
    lengths = torch.tensor([int(r.numel()) for r in rows])
    out = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=fill)
    mask = torch.arange(out.shape[1])[None, :] < lengths[:, None]
    return out, mask
