"""Spawn a test's gloo ranks (CPU processes) with a deadline and collect what each saved.

A worker is ``worker(rank, world, init_file, out_dir)``: it joins the group through the
file store ``init_file`` and saves its result as ``out_dir/rank{rank}.pt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

#: a pair of ranks that has not finished by then is a failure, not a hang
DEADLINE_S = 120.0


def spawn_ranks(worker: Callable[..., None], world: int, out_dir: str | Path,
                deadline_s: float = DEADLINE_S) -> list:
    """Run ``worker`` on ``world`` spawned processes; the ranks' saved results, rank order."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    ctx = mp.spawn(worker, args=(world, str(out_dir / "store"), str(out_dir)), nprocs=world,
                   join=False)
    try:
        while not ctx.join(timeout=1.0):
            if time.perf_counter() - start > deadline_s:
                pytest.fail(f"the {world} gloo ranks did not finish in {deadline_s} s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]
