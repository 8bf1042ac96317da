"""Public Hypothesis strategies for certifying surrogate objectives.

Every strategy draws its values element by element (no hidden seed), so Hypothesis shrinks a
failing example to a minimal one: fewer domains, groups, rows and tokens, values nearer 0.
Each docstring states what the drawn values are guaranteed to satisfy.

>>> from hypothesis import given
>>> @given(batches())
... def check(case):
...     assert case.mask.any(dim=1).all()      # every row has a token
>>> check()
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor

#: the dtypes an objective must survive (half precision is computed in >= float32)
DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

#: the largest |log r| drawn by :func:`extreme_log_ratio_values`
EXTREME_LOG_RATIO = 1e4

#: log-ratios at which something overflows: exp overflows float16 beyond 11.09, float32 and
#: bfloat16 beyond 88.72, float64 beyond 709.78
OVERFLOW_EDGES = (11.0, 11.1, 88.7, 88.8, 709.7, 709.8, 1e3, EXTREME_LOG_RATIO)

#: fill of padded positions: finite junk an objective must ignore
PAD_LOG_RATIO = 5.0
PAD_ADVANTAGE = 3.0


@dataclasses.dataclass(frozen=True)
class Case:
    """One drawn batch in the verl/TRL layout, float64.

    ``log_ratio``, ``advantages``: ``[B, T]`` (``PAD_*`` junk outside ``mask``);
    ``mask``: ``[B, T]`` bool, left-aligned, every row with at least one token and ``T`` the
    longest row; ``group_ids``, ``domain_ids``: ``[B]`` codes, every group inside one domain.
    """

    log_ratio: Tensor
    advantages: Tensor
    mask: Tensor
    group_ids: Tensor
    domain_ids: Tensor

    def hierarchy(self) -> Hierarchy:
        """Domain > prompt group > trajectory > token."""
        return Hierarchy.from_padded(self.mask, self.group_ids, self.domain_ids)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def replace(self, **fields: Tensor) -> Case:
        return dataclasses.replace(self, **fields)

    def take_rows(self, index: list[int] | Tensor, trim: bool = False) -> Case:
        """The rows ``index`` in that order; ``trim`` drops padding columns left empty."""
        idx = torch.as_tensor(index, dtype=torch.long)
        mask = self.mask[idx]
        width = int(mask.sum(1).max()) if trim else mask.shape[1]
        return Case(self.log_ratio[idx, :width], self.advantages[idx, :width], mask[:, :width],
                    self.group_ids[idx], self.domain_ids[idx])

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> Case:
        """Inverse of :meth:`to_dict` (padding refilled with the ``PAD_*`` values)."""
        mask = torch.tensor(data["mask"], dtype=torch.bool)
        x = torch.full(mask.shape, PAD_LOG_RATIO, dtype=torch.float64)
        a = torch.full(mask.shape, PAD_ADVANTAGE, dtype=torch.float64)
        for b, (xs, adv) in enumerate(zip(data["log_ratio"], data["advantages"])):
            x[b, :len(xs)] = torch.tensor(xs, dtype=torch.float64)
            a[b, :len(adv)] = torch.tensor(adv, dtype=torch.float64)
        return cls(x, a, mask, torch.tensor(data["group_ids"]), torch.tensor(data["domain_ids"]))

    def to_dict(self) -> dict[str, list]:
        """JSON-ready, exact (floats as Python floats)."""
        return {"mask": self.mask.int().tolist(), "log_ratio": _masked(self.log_ratio, self.mask),
                "advantages": _masked(self.advantages, self.mask),
                "group_ids": self.group_ids.tolist(), "domain_ids": self.domain_ids.tolist()}


def _masked(x: Tensor, mask: Tensor) -> list[list[float]]:
    """Rows of ``x`` with the padding left out (ragged lists)."""
    return [[float(v) for v in row[m]] for row, m in zip(x, mask)]


def log_ratio_values(scale: float = 1.0) -> st.SearchStrategy[float]:
    """Finite floats in ``[-scale, scale]``: exact 0 (on-policy tokens), values of the size of
    the usual budgets (1e-4 .. 0.3) and anything in between, no subnormals."""
    small = st.sampled_from([1e-4, 5e-4, 0.01, 0.05, 0.1, 0.2, 0.3])
    return st.one_of(st.just(0.0), small.map(lambda v: min(v, scale)),
                     small.map(lambda v: -min(v, scale)),
                     st.floats(-scale, scale, allow_subnormal=False))


def extreme_log_ratio_values(limit: float = EXTREME_LOG_RATIO) -> st.SearchStrategy[float]:
    """Finite floats with ``|x| <= limit``: those of :func:`log_ratio_values`, the overflow
    edges of every dtype (``OVERFLOW_EDGES``, both signs) and anything up to ``limit``."""
    edges = [e for e in OVERFLOW_EDGES if e <= limit]
    return st.one_of(log_ratio_values(), st.sampled_from(edges + [-e for e in edges]),
                     st.floats(-limit, limit, allow_subnormal=False))


def advantage_values() -> st.SearchStrategy[float]:
    """Finite advantages in ``[-2, 2]``: exact 0, +-1 and anything in between (no
    subnormals, so every nonzero advantage is resolvable in float16)."""
    return st.one_of(st.sampled_from([1.0, -1.0, 0.0]),
                     st.floats(-2.0, 2.0, allow_subnormal=False).filter(
                         lambda a: a == 0 or abs(a) > 1e-4))


def positive_scales() -> st.SearchStrategy[float]:
    """Scalars ``c > 0`` from 1e-3 to 1e3, log-uniform, with 1/2 and 2 drawn often."""
    return st.one_of(st.sampled_from([0.5, 2.0]),
                     st.floats(-3.0, 3.0).map(lambda e: float(10.0 ** e)))


def dtypes() -> st.SearchStrategy[torch.dtype]:
    """One of float64, float32, float16, bfloat16."""
    return st.sampled_from(DTYPES)


@st.composite
def batches(draw, *, max_domains: int = 2, max_groups: int = 2, max_rows: int = 2,
            max_len: int = 4, min_rows: int = 1, log_ratios: st.SearchStrategy[float] | None = None,
            advantages: st.SearchStrategy[float] | None = None, outcome: bool = False,
            same_advantage: bool = False) -> Case:
    """A :class:`Case` with a nested hierarchy.

    Guarantees: 1..``max_domains`` domains, each with 1..``max_groups`` prompt groups, each
    with 1..``max_rows`` rows, each row with 1..``max_len`` tokens (so every group lies in
    one domain and every row has a token); at least ``min_rows`` rows (by adding rows to the
    last group); ``T`` is the longest row. Log-ratios from ``log_ratios`` (default
    :func:`log_ratio_values`), advantages from ``advantages`` (default
    :func:`advantage_values`), one per row when ``outcome`` (outcome rewards), one for the
    whole batch when ``same_advantage``.
    """
    log_ratios = log_ratio_values() if log_ratios is None else log_ratios
    advantages = advantage_values() if advantages is None else advantages
    shared = draw(advantages) if same_advantage else None
    lengths, groups, domains = [], [], []
    g = 0
    for d in range(draw(st.integers(1, max_domains))):
        for _ in range(draw(st.integers(1, max_groups))):
            for _ in range(draw(st.integers(1, max_rows))):
                lengths.append(draw(st.integers(1, max_len)))
                groups.append(g)
                domains.append(d)
            g += 1
    while len(lengths) < min_rows:
        lengths.append(draw(st.integers(1, max_len)))
        groups.append(groups[-1])
        domains.append(domains[-1])
    width = max(lengths)
    x_rows, a_rows = [], []
    for n in lengths:
        x_rows.append([draw(log_ratios) for _ in range(n)] + [PAD_LOG_RATIO] * (width - n))
        if shared is not None or outcome:
            a = shared if shared is not None else draw(advantages)
            row = [a] * n
        else:
            row = [draw(advantages) for _ in range(n)]
        a_rows.append(row + [PAD_ADVANTAGE] * (width - n))
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return Case(torch.tensor(x_rows, dtype=torch.float64),
                torch.tensor(a_rows, dtype=torch.float64), mask,
                torch.tensor(groups), torch.tensor(domains))


def on_policy(case: Case) -> Case:
    """The same batch at ``log_prob == old_log_prob`` (every log-ratio 0)."""
    return case.replace(log_ratio=torch.where(case.mask, torch.zeros_like(case.log_ratio),
                                              case.log_ratio))
