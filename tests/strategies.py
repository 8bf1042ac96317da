"""Hypothesis strategies shared by the core tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from hypothesis import strategies as st

from fibration_theory import Hierarchy


@dataclasses.dataclass
class DrawnBatch:
    mask: torch.Tensor  # [B, T] bool
    log_ratio: torch.Tensor  # [B, T] float64
    advantages: torch.Tensor  # [B, T] float64
    group_ids: torch.Tensor  # [B]
    domain_ids: torch.Tensor  # [B]

    def hierarchy(self, levels: bool = True) -> Hierarchy:
        if not levels:
            return Hierarchy.from_padded(self.mask)
        return Hierarchy.from_padded(self.mask, self.group_ids, self.domain_ids)

    def __repr__(self) -> str:  # echoed by assertion messages
        return (f"DrawnBatch(mask={self.mask.int().tolist()}, log_ratio={self.log_ratio.tolist()}, "
                f"advantages={self.advantages.tolist()}, group_ids={self.group_ids.tolist()}, "
                f"domain_ids={self.domain_ids.tolist()})")


@st.composite
def batches(draw, max_rows: int = 6, max_len: int = 6, scale: float = 0.3,
            allow_empty_rows: bool = False, zeros: bool = True) -> DrawnBatch:
    """A padded float64 batch with nested ids: every group lies in one domain; every row has
    at least one token unless ``allow_empty_rows`` (then at least one row has tokens);
    log-ratios in ``[-scale, scale]``, some exactly 0 when ``zeros``."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = draw(st.integers(1, max_rows))
    t = draw(st.integers(1, max_len))
    low = 0 if allow_empty_rows else 1
    lengths = rng.integers(low, t + 1, size=b)
    if lengths.max() == 0:
        lengths[rng.integers(b)] = 1
    mask = torch.as_tensor(np.arange(t)[None, :] < lengths[:, None])
    x = rng.uniform(-scale, scale, size=(b, t))
    if zeros:
        x[rng.random((b, t)) < 0.15] = 0.0
    n_groups = draw(st.integers(1, b))
    groups = rng.integers(0, n_groups, size=b)
    n_domains = draw(st.integers(1, 3))
    domain_of_group = rng.integers(0, n_domains, size=n_groups)
    adv = rng.normal(size=(b, t))
    return DrawnBatch(mask, torch.as_tensor(x), torch.as_tensor(adv),
                      torch.as_tensor(groups * 7 + 3), torch.as_tensor(domain_of_group[groups]))


@st.composite
def budgets(draw) -> tuple[float, float, float]:
    """``(c_plus, c_minus, eps)``: positive budgets of the size the paper uses."""
    return (draw(st.floats(0.01, 0.3)), draw(st.floats(0.01, 0.3)), draw(st.floats(0.005, 0.2)))


@st.composite
def nested_log_ratios(draw, max_domains: int = 3, max_len: int = 6, pad: float = 3.0
                      ) -> tuple[Hierarchy, torch.Tensor]:
    """``(hierarchy, [B, T] float64 log-ratios)``: nested domain > group > row ids, left-aligned
    masks with at least one token in the batch (rows may be empty), values mixing scales
    1e-3..0.5 with exact zeros, and the finite junk value ``pad`` on padding."""
    lengths, groups, domains = [], [], []
    g = 0
    for d in range(draw(st.integers(1, max_domains))):
        for _ in range(draw(st.integers(1, 2))):
            for _ in range(draw(st.integers(1, 3))):
                lengths.append(draw(st.integers(0, max_len)))
                groups.append(g)
                domains.append(d)
            g += 1
    if max(lengths) == 0:
        lengths[0] = 1
    width = max(lengths)
    rows = []
    for n in lengths:
        scale = draw(st.sampled_from([1e-3, 0.02, 0.08, 0.2, 0.5]))
        bias = draw(st.floats(-1.0, 1.0)) * scale
        vals = [0.0 if draw(st.integers(0, 9)) == 0 else bias + scale * draw(st.floats(-1, 1))
                for _ in range(n)]
        rows.append(vals + [pad] * (width - n))
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    h = Hierarchy.from_padded(mask, group_ids=torch.tensor(groups),
                              domain_ids=torch.tensor(domains))
    return h, torch.tensor(rows, dtype=torch.float64)
