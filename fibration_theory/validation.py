"""Input checks shared by every public entry point.

Every check raises ``ValueError`` whose message starts with the offending argument's name,
so a user sees at once which tensor is wrong. Entries outside the response mask are never
inspected: padding may hold anything (``-inf`` log-probs included).

Hyperparameters are real numbers: ``int``, ``float``, numpy real scalars or 0-d real tensors.
A string is refused, never converted (``eps="0.1"`` is an error, not 0.1), and so is a bool
(``True`` is not the number 1 here) and NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

Tensor = torch.Tensor


def as_mask(mask, name: str = "mask") -> Tensor:
    """Return ``mask`` as a ``[B, T]`` bool tensor; 0/1 numbers are accepted."""
    if mask is None:
        raise ValueError(f"{name} is required: a [B, T] bool or 0/1 tensor marking the response "
                         f"tokens, got None")
    if not isinstance(mask, Tensor):
        arr = np.asarray(mask, dtype=object if _ragged(mask) else None)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a bool or 0/1 tensor, got an array of dtype "
                             f"{arr.dtype} ({type(mask).__name__})")
        mask = torch.as_tensor(arr)
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


def _ragged(x) -> bool:
    """Whether a nested list has rows of different lengths (numpy refuses to stack them)."""
    if not isinstance(x, (list, tuple)) or not x:
        return False
    lens = {len(r) if isinstance(r, (list, tuple)) else -1 for r in x}
    return len(lens) > 1


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


def _real(value, name: str, where: str = "") -> float:
    """``value`` as a float if it is a real number (not a string, bool, NaN or container)."""
    if isinstance(value, (np.ndarray, Tensor)) and value.ndim == 0:
        value = value.item()  # a 0-d tensor or array: its Python scalar, checked below
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got the bool {value}{where}")
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number, got the string {value!r}{where} "
                         f"(strings are refused, never converted)")
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} "
                         f"{value!r}{where}")
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"{name} must be a real number, got NaN{where}")
    return out


def check_real(value, name: str, *, finite: bool = True) -> float:
    """A scalar hyperparameter as a ``float``: a real number, never NaN, finite by default."""
    out = _real(value, name)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value}")
    return out


def check_positive(value, name: str) -> float:
    """A finite real number ``> 0`` (a temperature, a length) as a ``float``."""
    out = check_real(value, name)
    if not out > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return out


def check_nonneg(value, name: str) -> None:
    """A budget, radius or clip range: finite and ``>= 0``; a real scalar, or a 1-D sequence
    (list, tuple, array, tensor) of them, one per level."""
    if isinstance(value, (list, tuple)) or (isinstance(value, (np.ndarray, Tensor))
                                            and value.ndim == 1):
        items = [(v, f" at {name}[{k}]") for k, v in enumerate(value)]
    elif isinstance(value, (np.ndarray, Tensor)) and value.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence of numbers, got shape "
                         f"{tuple(value.shape)}")
    else:
        items = [(value, "")]
    for v, where in items:
        if isinstance(v, (list, tuple, np.ndarray, Tensor)) and np.ndim(v) > 0:
            raise ValueError(f"{name} must be a number or a 1-D sequence of numbers, got a "
                             f"nested {type(v).__name__}{where}")
        x = _real(v, name, where)
        if not math.isfinite(x):
            raise ValueError(f"{name} must be finite, got {value}")
        if x < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_not_text(params: dict[str, object], defaults: dict[str, object]) -> None:
    """Refuse a string or a bool given for any hyperparameter whose default is not a string
    (a mode such as ``agg`` is the only kind of parameter that takes text). A string is never
    converted to the number it spells; each parameter's own range is checked where it is
    used."""
    for key, value in params.items():
        if isinstance(defaults.get(key), str):
            continue
        if isinstance(value, (str, bytes)):
            raise ValueError(f"{key} must be a real number (or numbers), got the string "
                             f"{value!r} (strings are refused, never converted)")
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{key} must be a real number, got the bool {value}")


def as_ids(ids, name: str, batch: int) -> Tensor:
    """Factorize per-row labels into ``[B]`` long codes ``0..n-1``; only equality of labels
    matters downstream.

    ``ids`` is one label per row, 1-D: integers (a tensor, a numpy array or a list; all three
    give the same codes, in increasing order of the ids) or hashable labels such as strings
    (codes in order of first appearance). Floats and bools are refused in every container, as
    are nested lists and arrays of more than one dimension.
    """
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{name} must have shape [{batch}] (one label per row), got "
                             f"{ids.shape}")
        if ids.dtype.kind in "iu":
            ids = torch.from_numpy(ids.astype(np.int64))
        elif ids.dtype.kind in "bfc":
            raise ValueError(f"{name} must hold integer ids or labels such as strings, got "
                             f"dtype {ids.dtype}")
        else:
            ids = ids.tolist()
    if isinstance(ids, Tensor):
        return _tensor_codes(ids, name, batch)
    if isinstance(ids, (str, bytes)) or np.ndim(ids) == 0:
        raise ValueError(f"{name} must be a [{batch}] sequence of ids (a tensor, an array or a "
                         f"list), got {type(ids).__name__}")
    if not isinstance(ids, Sequence):  # another array-like (a pandas Series, ...)
        return as_ids(np.asarray(ids), name, batch)
    seq = list(ids)
    if len(seq) != batch:
        raise ValueError(f"{name} must have {batch} entries (one per row), got {len(seq)}")
    for row, v in enumerate(seq):
        seq[row] = _label(v, name, row)
    if all(isinstance(v, int) for v in seq):
        return _tensor_codes(torch.tensor(seq, dtype=torch.long), name, batch)
    codes: dict = {}
    return torch.tensor([codes.setdefault(v, len(codes)) for v in seq], dtype=torch.long)


def _label(v, name: str, row: int):
    """One row's label: an int (numpy and 0-d tensor ints included) or a hashable scalar."""
    if isinstance(v, (np.ndarray, Tensor)) and v.ndim == 0:
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        raise ValueError(f"{name}[{row}] is missing ({v!r})")
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name}[{row}] is the bool {v}; ids are integers or labels such as "
                         f"strings")
    if isinstance(v, (numbers.Integral, np.integer)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0 (negative ids are reserved); "
                             f"{name}[{row}] = {v}")
        return int(v)
    if isinstance(v, (numbers.Real, np.floating, complex)):
        raise ValueError(f"{name}[{row}] is the number {v!r}; ids are integers or labels such "
                         f"as strings (a float tensor is refused too)")
    if isinstance(v, (list, tuple, set, dict, np.ndarray, Tensor)):
        raise ValueError(f"{name} must be 1-D (one label per row); {name}[{row}] is a "
                         f"{type(v).__name__}: {v!r}")
    try:
        hash(v)
    except TypeError:
        raise ValueError(f"{name}[{row}] is an unhashable {type(v).__name__}; a label must be "
                         f"an integer or a hashable value such as a string") from None
    return v


def _tensor_codes(ids: Tensor, name: str, batch: int) -> Tensor:
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
