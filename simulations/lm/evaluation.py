"""Rewards of sampled responses, and the evaluation of a policy on held-out problems."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from fibration_theory.simulations.lm.codec import Codec
from fibration_theory.simulations.lm.sampling import Rollout, sample
from fibration_theory.simulations.lm.tasks import Problem, TaskSet, reward

Tensor = torch.Tensor


def rollout(model: Any, codec: Codec, tasks: TaskSet, problems: Sequence[Problem], *,
            max_new: int, generator: torch.Generator) -> tuple[Rollout, Tensor]:
    """One sampled response per entry of ``problems`` and its ``[B]`` float64 reward."""
    prompts = [codec.encode(tasks.prompt(p)) for p in problems]
    ro = sample(model, prompts, max_new=max_new, stop_ids=codec.stop_ids, pad_id=codec.pad_id,
                generator=generator)
    tokens = ro.tokens.cpu().tolist()
    rewards = [reward(codec.decode(t), p.answer) for t, p in zip(tokens, problems)]
    return ro, torch.tensor(rewards, dtype=torch.float64)


def domain_means(tasks: TaskSet, problems: Sequence[Problem], rewards: Tensor,
                 prefix: str = "reward") -> dict[str, float]:
    """``{prefix: mean, prefix/<domain>: mean}`` of ``[B]`` rewards aligned with ``problems``."""
    dom = torch.tensor([p.domain for p in problems])
    out = {prefix: float(rewards.mean())}
    for d, name in enumerate(tasks.domains):
        sel = dom == d
        if bool(sel.any()):
            out[f"{prefix}/{name}"] = float(rewards[sel].mean())
    return out


@torch.no_grad()
def evaluate(model: Any, codec: Codec, tasks: TaskSet, problems: Sequence[Problem], *,
             samples: int, max_new: int, seed: int, batch: int = 512) -> dict[str, float]:
    """Mean reward of ``samples`` sampled responses per held-out problem, overall and per
    domain: the expected reward the RL objective maximises, estimated without bias.

    The draws depend on ``seed`` only, so every method evaluated with the same seed sees
    the same problems and the same sampling stream at its start.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    flat = [p for p in problems for _ in range(samples)]
    rewards = []
    for i in range(0, len(flat), batch):
        rewards.append(rollout(model, codec, tasks, flat[i:i + batch], max_new=max_new,
                               generator=gen)[1])
    return domain_means(tasks, flat, torch.cat(rewards))
