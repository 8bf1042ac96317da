"""Measurement: interleaved timing, peak tensor memory, and the memory-traffic floor.

Timing (:func:`interleaved`): every candidate runs once per round, in a rotated order, after
warm-up rounds; a candidate's ratio to the baseline is the median over rounds of its time
divided by the baseline's time *in the same round*, so load from other processes on a
shared machine hits both sides of each ratio alike.

Peak memory (:class:`PeakMemory`): on CPU, a ``TorchDispatchMode`` that sees every ATen op
(forward and backward), counts the bytes of each new storage an op returns (an output
that shares storage with an input is a view or an in-place result, not an allocation) and
drops them when the storage dies (a weak reference expires). The peak is the largest sum
of live bytes at an op boundary, above what existed before; temporaries inside a single
kernel are not seen. On CUDA the caching allocator's own peak is used.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

Tensor = torch.Tensor


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclasses.dataclass
class Timing:
    """Wall seconds per round of one candidate, its per-round ratios to the baseline, and
    the same for the process CPU time (insensitive to time slices lost to other processes,
    but it counts threads spinning at a barrier)."""

    seconds: list[float]
    ratios: list[float]
    cpu_seconds: list[float]
    cpu_ratios: list[float]

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.cpu_ratios)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_iqr(self) -> tuple[float, float]:
        """Quartiles of the per-round ratios (the spread that load adds)."""
        if len(self.ratios) < 2:
            return (self.ratios[0], self.ratios[0])
        q = statistics.quantiles(self.ratios, n=4)
        return (q[0], q[2])


def interleaved(candidates: dict[str, Callable[[], None]], baseline: str, *, rounds: int,
                warmup: int = 1, device: str = "cpu", budget_s: float | None = None
                ) -> dict[str, Timing]:
    """Median timings of ``candidates`` (each a zero-argument step), interleaved.

    ``rounds`` rounds after ``warmup`` untimed ones; stops early (after at least 3 rounds)
    when ``budget_s`` seconds of timed work have passed.
    """
    names = list(candidates)
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not among the candidates")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            candidates[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    base, cbase = times[baseline], cpu[baseline]
    return {n: Timing(ts, [t / b for t, b in zip(ts, base)], cpu[n],
                      [c / max(b, 1e-9) for c, b in zip(cpu[n], cbase)])
            for n, ts in times.items()}


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the ``with`` block (CPU or CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
        for k in dead:
            self.current -= self.live.pop(k)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, Tensor)}
        self._sweep()
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor):
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key in inputs or key in self.live or st.nbytes() == 0:
                continue
            self.live[key] = (StorageWeakRef(st), st.nbytes())
            self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_bytes(step: Callable[[], None], device: str = "cpu") -> int:
    """Peak bytes allocated by one call of ``step`` above what was live before it."""
    if device.startswith("cuda"):
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    with PeakMemory() as mem:
        step()
    return mem.peak


def floor_step(w_log_prob: Tensor, w_old: Tensor, w_adv: Tensor, w_mask: Tensor
               ) -> Callable[[], None]:
    """The memory-traffic floor of any of these losses: one pass that reads ``log_prob``,
    ``old_log_prob``, ``advantages`` and the mask and writes the ``[B, T]`` gradient (bytes:
    ``4 * itemsize + 1`` per slot), here ``addcmul`` into a preallocated output plus a sum
    of the mask (the bandwidth of this machine, not a loss)."""
    out = torch.empty_like(w_log_prob)

    def step() -> None:
        torch.addcmul(w_log_prob, w_old, w_adv, out=out)
        w_mask.sum()

    return step


def floor_bytes(slots: int, dtype: torch.dtype) -> int:
    """Bytes a loss must move per batch: three float inputs, the bool mask, one gradient."""
    return slots * (4 * torch.finfo(dtype).bits // 8 + 1)
