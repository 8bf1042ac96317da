"""Input checks shared by every public entry point.

Every check raises ``ValueError`` whose message starts with the offending argument's name,
so a user sees at once which tensor is wrong. Entries outside the response mask are never
inspected: padding may hold anything (``-inf`` log-probs included).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Tensor = torch.Tensor


def as_mask(mask, name: str = "mask") -> Tensor:
    """Return ``mask`` as a ``[B, T]`` bool tensor; 0/1 numbers are accepted."""
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(np.asarray(mask))
    if mask.dim() != 2:
        raise ValueError(f"{name} must have shape [B, T], got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.dtype in (torch.int8, torch.int16, torch.int32,
                                                   torch.int64, torch.uint8):
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{name} must hold only 0/1 (or bool); {name}{list(idx)} = "
                             f"{mask[idx].item()}")
        return mask != 0
    raise ValueError(f"{name} must be a bool or 0/1 tensor, got dtype {mask.dtype}")


def check_float(x, name: str, shape: Sequence[int] | None = None,
                mask: Tensor | None = None) -> Tensor:
    """Check a floating tensor's shape and finiteness (on ``mask`` only, when given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    with torch.no_grad():
        finite = torch.isfinite(x)
        bad = ~finite if mask is None else (~finite & mask)
        if bool(bad.any()):
            idx = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"{name} holds a non-finite value at {idx}: {x[tuple(idx)].item()}")
    return x


def check_same_dtype(**tensors: Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise ValueError(f"dtype mismatch: {listing}; cast them to one floating dtype")


def check_nonneg(value, name: str) -> None:
    """A budget, radius or clip range must be finite and >= 0 (scalars or sequences)."""
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {value}")


def as_ids(ids, name: str, batch: int) -> Tensor:
    """Factorize per-row labels (int tensor, or a sequence of hashables such as strings)
    into ``[B]`` long codes ``0..n-1``. Only equality of labels matters downstream."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1 or ids.shape[0] != batch:
            raise ValueError(f"{name} must have shape [{batch}], got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
        if bool((ids < 0).any()):
            row = int((ids < 0).nonzero()[0])
            raise ValueError(f"{name} must be >= 0 (negative ids are reserved); "
                             f"{name}[{row}] = {int(ids[row])}")
        _, codes = torch.unique(ids, return_inverse=True)
        return codes.to(torch.long)
    seq = list(np.asarray(ids, dtype=object).reshape(-1)) if not isinstance(ids, (list, tuple)) \
        else list(ids)
    if len(seq) != batch:
        raise ValueError(f"{name} must have {batch} entries (one per row), got {len(seq)}")
    codes: dict = {}
    out = []
    for row, v in enumerate(seq):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            raise ValueError(f"{name}[{row}] is missing ({v!r})")
        if isinstance(v, (int, np.integer)) and v < 0:
            raise ValueError(f"{name} must be >= 0 (negative ids are reserved); {name}[{row}] = {v}")
        out.append(codes.setdefault(v, len(codes)))
    return torch.tensor(out, dtype=torch.long)
