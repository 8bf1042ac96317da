"""Regime labels of FiberPO's gates (Section 5.1-5.2, Fig 3), as diagnostics.

Channel regimes of ``g_agg`` (eq 10), with ``C* = (1 + 1/k) C``:
``P`` pass-through ``|x| <= C``; ``R`` rollback ``C < |x| < C*``; ``Z`` zeroed ``|x| >= C*``.

Global regimes of a trajectory combine its two sign channels (Fig 2b, Fig 3b). The paper
names five; its text leaves the pair (R, R) and the pair (R, Z) implicit. We read the
concentric order of Fig 3b (one channel leaves P first, then the other) and label:

==========  ===============================================
G-I         both channels P
G-II,r      one channel R, the other P
G-II        one channel Z, the other P
G-III,r     neither channel P, at least one R (mutual rollback)
G-III       both channels Z (base weight exactly 1)
==========  ===============================================

Local regimes of a trajectory's fiber gate (Section 5.2), with ``u_i`` the fiber residual
(eq 14) and ``n_eps`` the number of its tokens with ``|u_i| >= eps``:
``L-I`` no token clipped; ``L-II`` some but not all; ``L-III`` every token clipped.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

GLOBAL_LABELS = ("G-I", "G-II,r", "G-II", "G-III,r", "G-III")
LOCAL_LABELS = ("L-I", "L-II", "L-III")


def channel_regime(x: Tensor, c, k) -> Tensor:
    """0 = pass-through, 1 = rollback, 2 = zeroed; the same branches as ``g_agg``."""
    ax = x.abs()
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    passing = ax <= c
    rolling = (~passing) & (ax < (1 + 1 / k) * c)
    return torch.where(passing, 0, torch.where(rolling, 1, 2)).to(torch.long)


def global_regime(plus: Tensor, minus: Tensor) -> Tensor:
    """Combine two channel regimes (0/1/2) into an index of ``GLOBAL_LABELS``."""
    hi = torch.maximum(plus, minus)
    lo = torch.minimum(plus, minus)
    one_passes = lo == 0
    label = torch.where(one_passes, hi,  # (P,P)->0, (P,R)->1, (P,Z)->2
                        torch.where(hi == 2, torch.where(lo == 2, 4, 3), 3))
    return label.to(torch.long)


def occupancy(labels: Tensor, valid: Tensor, names: tuple[str, ...], prefix: str) -> dict[str, float]:
    """Fraction of valid rows in each regime, keyed ``f"{prefix}{name}"``."""
    n = max(int(valid.sum()), 1)
    return {f"{prefix}{name}": float(((labels == j) & valid).sum()) / n
            for j, name in enumerate(names)}
