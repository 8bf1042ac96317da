"""Depth: the fibration gating hierarchy (FGH, Defs 6.1-6.2) beyond FiberPO-Domain.

FiberPO-Domain (Def 6.4) is the chain domain > prompt group > trajectory > token. The FGH
accepts any chain of nested strata, each gated by ``g_agg`` on its drift from the stratum
above (eq 31's pattern, one budget pair shared by every level, as eq 31 prints it). On the
sequence task of :mod:`fibration_theory.simulations.token_efficiency` we train the chains

=======  ==============================================  ====================
depth    levels above the trajectories (coarse -> fine)   name
=======  ==============================================  ====================
0        (none)                                          FiberPO (Remark 6.3)
1        group
2        domain, group                                   FiberPO-Domain
3        domain, subdomain, group
4        batch, domain, subdomain, group
=======  ==============================================  ====================

(``batch`` is one node holding the whole minibatch) and compare stability (collapses), token
efficiency and cost. Budgets: FiberPO-Domain's tuned ones. The cost is measured twice: the
wall-clock seconds per update of the training run (which the machine's other load inflates)
and ``loss_ms``, the best of several timings of building the hierarchy plus one loss
forward and backward on a fixed full batch (robust to load).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
from fibration_theory.simulations import sequence_task as st
from fibration_theory.simulations.methods import all_methods
from fibration_theory.simulations.runner import RunResult, RunSpec
from fibration_theory.simulations.streams import torch_generator
from fibration_theory.simulations.token_efficiency import SeqConfig, level_ids, train

from fibration_theory import losses
from fibration_theory.hierarchy import Hierarchy

#: repeats x calls of the loss timing; the best repeat is kept (the least disturbed one)
TIMING_REPEATS, TIMING_CALLS = 15, 4

#: depth -> levels above the trajectories
CHAINS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("group",),
    2: ("domain", "group"),
    3: ("domain", "subdomain", "group"),
    4: ("superdomain", "domain", "subdomain", "group"),
}


@dataclasses.dataclass(frozen=True)
class DepthConfig:
    """One FGH run; the chain is chosen by ``depth``."""

    #: the training run; its ``levels`` are replaced by the chain of ``depth``
    seq: SeqConfig = dataclasses.field(default_factory=SeqConfig)
    #: number of levels above the trajectories (a key of ``CHAINS``)
    depth: int = 2

    def __post_init__(self) -> None:
        if self.depth not in CHAINS:
            raise ValueError(f"depth must be one of {sorted(CHAINS)}, got {self.depth}")

    @property
    def levels(self) -> tuple[str, ...]:
        return CHAINS[self.depth]

    @property
    def cost(self) -> float:
        return self.seq.cost * (1 + 0.2 * self.depth)


def run_one(config: DepthConfig, spec: RunSpec) -> RunResult:
    """``spec.params`` are FiberPO-Domain's budgets (``c_plus``, ``c_minus``, ``eps``)."""
    seq = dataclasses.replace(config.seq, levels=config.levels)
    res = train(seq, all_methods()["fiberpo_domain"], spec.param_dict, spec.seed)
    res.final["depth"] = config.depth
    res.final["loss_ms"] = loss_cost_ms(seq, spec.param_dict, spec.seed)
    return res


def loss_cost_ms(seq: SeqConfig, params: dict[str, Any], seed: int) -> float:
    """Milliseconds for hierarchy + FiberPO-Domain loss + backward on one full batch.

    The batch holds ``group_size`` completions of every prompt, sampled from the initial
    policy; the new log-probabilities are the old ones plus N(0, 0.05^2) noise, so every
    gate has work to do.
    """
    task = st.SequenceTask(seq.task, seed)
    gen = torch_generator("depth/timing", seed)
    prompts = torch.arange(task.n_prompts).repeat_interleave(seq.group_size)
    ro = st.sample(task, task.init_logits, prompts, gen)
    old = st.token_log_probs(task.init_logits, ro)
    new = old + 0.05 * torch.randn(old.shape, generator=gen, dtype=old.dtype)
    adv = st.group_advantages(ro.reward, prompts)[:, None] * ro.mask
    ids = level_ids(task, prompts, prompts, seq.levels)
    best = math.inf
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        for _ in range(TIMING_CALLS):
            lp = new.detach().requires_grad_(True)
            h = Hierarchy.from_padded(ro.mask, levels=ids)
            out = losses.compute("fiberpo_domain", lp, old, adv, ro.mask, hierarchy=h, **params)
            out.loss.backward()
        best = min(best, (time.perf_counter() - start) / TIMING_CALLS)
    return 1e3 * best
