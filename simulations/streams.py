"""Every random stream of the studies, derived from ``(seed, tag)`` in one place.

A stream is named by a *tag* and drawn from the run's ``seed`` (and, for streams renewed
during a run, a ``step``): :func:`seed_for` returns the integer that seeds it, and
:func:`numpy_rng` / :func:`torch_generator` build the generator.

* The tags of :data:`STREAMS` are the streams of the experiments. Each maps a run seed to
  ``multiplier * seed + offset + step``; the table holds the seeds the studies have used
  since their first published results, so those results are reproduced exactly. A zero
  multiplier is a fixed draw shared by every seed (the same held-out problems for every
  method and seed, for paired comparisons).
* Any other tag names a stream of the summaries or figures (a table's or a band's name): its
  seed is the 32-bit FNV-1a hash of the tag, stable across processes (Python's ``hash`` is
  not) and independent of every other table, so adding a table changes no other interval.
"""

from __future__ import annotations

import numpy as np

#: tag -> (multiplier of the run seed, offset); ``seed_for`` adds the step
STREAMS: dict[str, tuple[int, int]] = {
    # sequence study (token_efficiency.train): the prompts of the seed, then the sampling
    # and minibatch order of the run
    "sequence/task": (1, 0),
    "sequence/train": (10_007, 1),
    # exact-settings experiment: the environment of the seed, then the sampled tables
    "exact/env": (7_919, 3),
    "exact/run": (104_729, 17),
    # depth study: the batch whose loss is timed (depth.loss_cost_ms)
    "depth/timing": (1, 99),
    # LM study (lm/rl.train): the run's parameters, sampling and minibatch order; the
    # held-out evaluation of update ``step``; the held-out problems (one draw for all runs)
    "lm/run": (1, 0),
    "lm/eval": (10_000, 0),
    "lm/heldout": (0, 2_027),
    # the few-shot examples of domain ``step`` (lm/tasks.TaskSet.prompt)
    "lm/shots": (0, 1_000),
    # the warm start (seed: WarmStartConfig.seed): its training stream, the problems of its
    # success checks, and the sampling of the check at training step ``step``
    "warm/train": (1, 0),
    "warm/checks": (0, 7_919),
    "warm/check": (0, 0),
    # the bootstrap intervals of the gate ablation table (lm/ablation.py)
    "ablation/table": (0, 0),
}


def fnv1a(text: str) -> int:
    """The 32-bit FNV-1a hash of ``text`` (UTF-8)."""
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) % (2**32)
    return h


def seed_for(tag: str, seed: int = 0, step: int = 0) -> int:
    """The seed of stream ``tag`` of run ``seed`` at ``step`` (see the module docstring)."""
    if tag in STREAMS:
        mult, offset = STREAMS[tag]
        return mult * int(seed) + offset + int(step)
    if seed or step:
        raise ValueError(f"tag: {tag!r} is not in STREAMS; a named stream takes no seed or "
                         "step")
    return fnv1a(tag)


def numpy_rng(tag: str, seed: int = 0, step: int = 0) -> np.random.Generator:
    """``np.random.default_rng(seed_for(tag, seed, step))``."""
    return np.random.default_rng(seed_for(tag, seed, step))


def torch_generator(tag: str, seed: int = 0, step: int = 0, device=None):
    """A ``torch.Generator`` (on ``device``) seeded with ``seed_for(tag, seed, step)``."""
    import torch

    gen = torch.Generator() if device is None else torch.Generator(device=device)
    return gen.manual_seed(seed_for(tag, seed, step))
