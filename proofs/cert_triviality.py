"""Finding F8: Remark E.2's global trivialization needs Remark 4.1's padding.

Remark E.2 says the bundle of FiberPO is globally trivial, ``E = B x F``, because the base is
finite. A finite bundle is a product exactly when every fiber has the same number of points.
Over ``B = Tj x {-1, +1}`` the fiber of ``(tau, l)`` holds the tokens of trajectory ``tau``:
``T_tau`` points. Trajectories of different lengths give fibers of different sizes, so
``E = B x F`` holds only after padding every trajectory to a common length with null
state-actions (Remark 4.1). Nothing in FBG uses the trivialization (every map is defined
pointwise on the finite sets), so the remark is harmless; the toolkit builds the unpadded
bundle (fibers of size ``T_tau``) and gives null tokens no weight.
"""

from __future__ import annotations

import numpy as np
import torch
from fibration_theory.proofs.registry import Outcome, certificate

from fibration_theory.bundles import fiberpo_bundle
from fibration_theory.hierarchy import Hierarchy


def fiber_sizes(h: Hierarchy) -> np.ndarray:
    """``(|B|,)`` number of points of E over each base point of FiberPO's bundle (App E.5.4)."""
    fib = fiberpo_bundle(h, 0.1, 0.1, 0.1).fibration
    return torch.bincount(fib.proj, minlength=fib.n_base).numpy()


def batch(lengths: list[int], groups: list[int], *, pad: bool) -> Hierarchy:
    """Rows of the given lengths; ``pad``: every row extended to the longest one with null
    state-actions (Remark 4.1), so every row has the same number of tokens."""
    width = max(lengths)
    cut = torch.full((len(lengths),), width) if pad else torch.tensor(lengths)
    mask = torch.arange(width)[None, :] < cut[:, None]
    return Hierarchy.from_padded(mask, group_ids=torch.tensor(groups))


@certificate(id="F8", paper_ref="Remark E.2, Remark 4.1, App E.5.4",
             statement="E = B x F (Remark E.2) needs equal fibers: true after Remark 4.1's "
                       "padding, not for trajectories of different lengths; nothing uses it",
             method="numeric", finding="harmless")
def finding_triviality(rng: np.random.Generator, *, n_instances: int = 10,
                       sizes_fn=fiber_sizes) -> Outcome:
    unequal = equal_after = drawn = 0
    example = ""
    for _ in range(n_instances):
        n_rows = int(rng.integers(2, 7))
        lengths = [int(x) for x in rng.integers(1, 9, n_rows)]
        if min(lengths) == max(lengths):
            continue
        groups = [int(x) for x in rng.integers(0, 2, n_rows)]
        sizes = sizes_fn(batch(lengths, groups, pad=False))
        drawn += 1
        if len(set(sizes.tolist())) > 1:
            unequal += 1
            example = example or f"lengths {lengths}: fiber sizes {sizes.tolist()}"
        equal_after += len(set(sizes_fn(batch(lengths, groups, pad=True)).tolist())) == 1
    ok = drawn > 0 and unequal == drawn and equal_after == drawn
    return Outcome(residual=0.0, tol=0.0, ok=ok,
                   detail=f"{drawn} batches with unequal lengths: fibers of unequal size in "
                          f"{unequal} ({example}), equal after Remark 4.1's padding in "
                          f"{equal_after}")
