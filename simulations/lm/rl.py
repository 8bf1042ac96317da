"""The RL loop of the small-LM study, in one function (:func:`train`, cleanrl-style).

Each update:

1. draws ``prompts_per_domain`` training problems of every domain and samples
   ``group_size`` responses to each from the current policy ``pi_old`` (KV cache,
   temperature 1), counting the sampled tokens;
2. rewards them (exact match) and forms group-relative advantages ``(R - mean) / (std +
   1e-6)`` within each prompt's group, the same for every method;
3. recomputes ``log pi_old`` with the training forward pass (so the ratio is exactly 1 at
   the first step), then runs ``epochs`` passes over the batch in ``minibatches`` of whole
   prompt groups; each minibatch maps onto the four-level hierarchy (domain, prompt group,
   trajectory, token; :func:`batch_hierarchy`) and takes one AdamW step on the objective
   from the registry, gradient norm clipped;
4. logs the reward per domain, sampled tokens, the sample TV of the update at every level,
   the FiberPO regime occupancy, the entropy, the response length and where the gradient
   comes from (``grad/*_coef_share``, ``grad/zeroed_token_frac``: the token-coefficient form
   of :mod:`fibration_theory.simulations.gradient_shares`, no extra backward pass); every
   ``eval_every`` updates it evaluates the policy on held-out problems.

A run is checkpointed (model, optimizer, random streams, curve) every
``checkpoint_every`` updates with an atomic replace, and resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fibration_theory.simulations import gradient_shares
from fibration_theory.simulations.diagnostics import Tally, gate_for, level_tv
from fibration_theory.simulations.lm.evaluation import domain_means, evaluate, rollout
from fibration_theory.simulations.lm.sampling import Rollout, token_log_probs
from fibration_theory.simulations.lm.tasks import Problem, TaskSet
from fibration_theory.simulations.methods import Method, all_methods
from fibration_theory.simulations.runner import RunResult, RunSpec
from fibration_theory.simulations.streams import numpy_rng, seed_for, torch_generator

from fibration_theory import gating, losses
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.outputs import relative_to, resolve_under, set_aside

Tensor = torch.Tensor

#: result name -> method of :mod:`fibration_theory.simulations.methods`; FiberPO-Domain gets one budget pair
#: per level (domain, group, trajectory), as the issue asks
LM_METHODS = {"fiberpo": "fiberpo", "fiberpo_domain": "fiberpo_domain_levels", "grpo": "grpo",
              "gspo": "gspo", "dapo": "dapo", "fiberpo_clamp": "fiberpo_clamp",
              # variants of FiberPO's gate (docs/variants.md), beyond the paper; run on request
              "fiberpo_slope": "fiberpo_slope", "fiberpo_hard": "fiberpo_hard"}


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """One RL run (the policy comes from ``source``, see :func:`load_policy`)."""

    tasks: TaskSet
    #: ``warm:<folder>`` (a warm start of :mod:`.warmstart`; relative: inside the results
    #: folder) or ``model:<path>``
    source: str
    device: str = "cpu"
    prompts_per_domain: int = 4
    group_size: int = 8
    epochs: int = 2
    minibatches: int = 2
    lr: float = 3e-4
    grad_clip: float = 1.0
    #: training stops once this many response tokens were sampled
    token_budget: int = 30_000
    max_new: int = 6
    eval_every: int = 20
    eval_per_domain: int = 64
    eval_samples: int = 2
    #: updates between checkpoints (0: never)
    checkpoint_every: int = 10
    #: folder of the per-run checkpoints (relative: inside the results folder)
    checkpoint_dir: str = ""

    @property
    def cost(self) -> float:
        return self.token_budget / 1e4

    @property
    def warm_folder(self) -> str | None:
        """The warm start's folder of a ``warm:<folder>`` source (``None`` for a model)."""
        kind, _, where = self.source.partition(":")
        return where if kind == "warm" else None

    def at(self, root: str | os.PathLike) -> RLConfig:
        """This config with the warm start and checkpoint folders resolved under ``root``
        (the results folder; what the runner hands to :func:`run_one`)."""
        kind, _, where = self.source.partition(":")
        source = f"warm:{resolve_under(where, root)}" if kind == "warm" else self.source
        ckpt = str(resolve_under(self.checkpoint_dir, root)) if self.checkpoint_dir else ""
        return dataclasses.replace(self, source=source, checkpoint_dir=ckpt)


def batch_hierarchy(problems: list[Problem], group: Tensor, mask: Tensor) -> Hierarchy:
    """The four-level hierarchy of a sampled batch: ``[B]`` rows, each the trajectory of
    the prompt ``problems[group[b]]``; groups are the prompts (one id per prompt drawn, so a
    problem drawn twice makes two groups), domains the problems' domains."""
    domain = torch.tensor([problems[int(g)].domain for g in group], device=mask.device)
    return Hierarchy.from_padded(mask, group_ids=group.to(mask.device), domain_ids=domain)


def group_advantages(rewards: Tensor, group: Tensor) -> Tensor:
    """``[B]`` ``(R - mean_g) / (std_g + 1e-6)`` within each group (population std)."""
    n = int(group.max()) + 1
    count = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, torch.ones_like(rewards))
    mean = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, rewards) / count
    dev = rewards - mean[group]
    var = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, dev * dev) / count
    return dev / (var.sqrt()[group] + 1e-6)


def load_policy(source: str, device: str) -> tuple[Any, Any]:
    """``(model, codec)`` of ``warm:<folder>`` or ``model:<path>``, in eval mode (no dropout:
    the ratio must be exactly 1 on-policy)."""
    kind, _, where = source.partition(":")
    if kind == "warm":
        from fibration_theory.simulations.lm.warmstart import load_warm_start

        model, codec = load_warm_start(Path(where), device)
    elif kind == "model":
        from fibration_theory.simulations.lm.models import load_pretrained

        model, codec = load_pretrained(where)
        model = model.to(device)
    else:
        raise ValueError(f"source must start with 'warm:' or 'model:', got {source!r}")
    return model.eval(), codec


def eval_problems(cfg: RLConfig) -> list[Problem]:
    """The held-out problems of every run (a fixed draw, the same for every method and seed)."""
    return cfg.tasks.draw(numpy_rng("lm/heldout"), cfg.eval_per_domain, "eval")


def train(cfg: RLConfig, method: Method, params: dict[str, Any], seed: int, *,
          checkpoint: Path | None = None, model_and_codec: tuple[Any, Any] | None = None
          ) -> RunResult:
    """One RL run of ``method`` with ``params`` from the policy of ``cfg.source``."""
    model, codec = model_and_codec or load_policy(cfg.source, cfg.device)
    device = next(model.parameters()).device
    torch.manual_seed(seed_for("lm/run", seed))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = numpy_rng("lm/run", seed)
    gen = torch_generator("lm/run", seed, device=device)
    held_out = eval_problems(cfg)
    gate, gate_levels = gate_for(method, params)

    def evaluation(update: int) -> dict[str, float]:
        return evaluate(model, codec, cfg.tasks, held_out, samples=cfg.eval_samples,
                        max_new=cfg.max_new, seed=seed_for("lm/eval", seed, update))

    # a checkpoint resumes only the run that wrote it: same config, method, parameters, seed
    # (paths inside the results folder relative to it, so a moved folder resumes too)
    config = dataclasses.asdict(cfg)
    if checkpoint is not None:
        config = relative_to(config, Path(checkpoint).parent.parent)
    identity = {"config": config, "loss": method.loss, "params": params, "seed": seed}
    state = _load_checkpoint(checkpoint, model, opt, rng, gen, identity)
    if state is None:
        curve = [{"update": 0, "tokens": 0, **evaluation(0)}]
        update, tokens, seconds = 0, 0, 0.0
    else:
        curve, update, tokens, seconds = (state["curve"], state["update"], state["tokens"],
                                          state["seconds"])
    nonfinite = False
    while tokens < cfg.token_budget and not nonfinite:
        t0 = time.perf_counter()
        update += 1
        problems = cfg.tasks.draw(rng, cfg.prompts_per_domain, "train")
        group = torch.arange(len(problems)).repeat_interleave(cfg.group_size)
        row_problems = [problems[int(g)] for g in group]
        ro, rewards = rollout(model, codec, cfg.tasks, row_problems, max_new=cfg.max_new,
                              generator=gen)
        tokens += ro.num_tokens
        adv = (group_advantages(rewards, group).to(device)[:, None] * ro.mask).double()
        with torch.no_grad():
            old_lp, entropy = token_log_probs(model, ro.prompt, ro.prompt_mask, ro.tokens,
                                              ro.mask, with_entropy=True)
        tally = Tally()
        for _ in range(cfg.epochs):
            order = torch.from_numpy(rng.permutation(len(problems)))
            for chunk in order.chunk(cfg.minibatches):
                rows = torch.isin(group, chunk).nonzero()[:, 0].to(device)
                sub = ro.rows(rows)
                h = batch_hierarchy(problems, group[rows.cpu()], sub.mask)
                lp, _ = token_log_probs(model, sub.prompt, sub.prompt_mask, sub.tokens, sub.mask)
                out = losses.compute(method.loss, lp, old_lp[rows], adv[rows], sub.mask,
                                     hierarchy=h, **params)
                if not torch.isfinite(out.loss):
                    nonfinite = True
                    break
                opt.zero_grad()
                out.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                coef = gradient_shares.coefficients(method.loss, lp.detach() - old_lp[rows],
                                                    adv[rows], h, params)
                tally.add({f"loss/{k}": v for k, v in out.metrics.items()
                           if k.startswith(("clip", "gate", "regime", "rollback"))}
                          | {"grad_norm": float(grad_norm)}
                          | gradient_shares.coefficient_metrics(coef, sub.mask))
            if nonfinite:
                break
        point = {"update": update, "tokens": tokens,
                 **domain_means(cfg.tasks, row_problems, rewards, "train_reward"),
                 **_update_stats(model, ro, old_lp, entropy, problems, group, gate, gate_levels),
                 **tally.mean()}
        if update % cfg.eval_every == 0 or tokens >= cfg.token_budget or nonfinite:
            point.update(evaluation(update))
        seconds += time.perf_counter() - t0
        curve.append(point)
        if checkpoint is not None and cfg.checkpoint_every and update % cfg.checkpoint_every == 0:
            _save_checkpoint(checkpoint, model, opt, rng, gen, curve=curve, update=update,
                             tokens=tokens, seconds=seconds, identity=identity)
    result = RunResult(curve, _final(curve, nonfinite, seconds, update))
    return result


@torch.no_grad()
def _update_stats(model: Any, ro: Rollout, old_lp: Tensor, entropy: Tensor,
                  problems: list[Problem], group: Tensor, gate: dict[str, Any],
                  gate_levels: bool) -> dict[str, float]:
    """Per-level sample TV of the whole update, regime occupancy, entropy, response length."""
    new_lp, _ = token_log_probs(model, ro.prompt, ro.prompt_mask, ro.tokens, ro.mask)
    log_ratio = (new_lp - old_lp).cpu()  # the diagnostics run on the host
    h = batch_hierarchy(problems, group, ro.mask.cpu())
    out = level_tv(log_ratio, h)
    out.update(gating.regimes(log_ratio, h, levels=gate_levels, **gate).occupancy())
    n = float(ro.mask.sum())
    out["entropy"] = float(entropy.sum()) / n
    out["response_length"] = n / ro.mask.shape[0]
    return out


def _final(curve: list[dict[str, Any]], nonfinite: bool, seconds: float, updates: int
           ) -> dict[str, Any]:
    evals = [p for p in curve if "reward" in p]
    first, last = evals[0], evals[-1]
    out: dict[str, Any] = {"reward_before": first["reward"], "reward_after": last["reward"],
                           "improvement": last["reward"] - first["reward"],
                           # the tuning score: mean held-out reward over the run's evaluations
                           "auc_reward": float(np.mean([p["reward"] for p in evals[1:]]
                                                       or [first["reward"]])),
                           "tokens": int(curve[-1]["tokens"]), "updates": updates,
                           "nonfinite": nonfinite, "sec_per_update": seconds / max(updates, 1)}
    for k in first:
        if k.startswith("reward/"):
            out[f"{k}_before"] = first[k]
            out[f"{k}_after"] = last[k]
    steps = curve[1:]
    for k in (steps[0] if steps else {}):
        if k.startswith(("tv/", "kl/", "regime/", "entropy", "response_length", "loss/")):
            out[f"mean_{k}"] = float(np.mean([p.get(k, 0.0) for p in steps]))
    return out


def _save_checkpoint(path: Path, model: Any, opt: torch.optim.Optimizer,
                     rng: np.random.Generator, gen: torch.Generator, **state: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "rng": rng.bit_generator.state, "gen": gen.get_state(), **state}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, model: Any, opt: torch.optim.Optimizer,
                     rng: np.random.Generator, gen: torch.Generator,
                     identity: dict[str, Any]) -> dict[str, Any] | None:
    """Restore the run from ``path`` when it holds a checkpoint of the same run; a checkpoint
    that does not load is set aside (renamed, with a warning) and the run starts afresh."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location=next(model.parameters()).device,
                           weights_only=False)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a checkpoint")
    except Exception as err:  # noqa: BLE001 - any unreadable file: restart, keep the file
        set_aside(path, f"checkpoint does not load ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); the run restarts")
        return None
    if state.get("identity") != identity:  # another config (or code) wrote it: start afresh
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    gen.set_state(state["gen"].cpu())
    return state


def run_one(config: RLConfig, spec: RunSpec) -> RunResult:
    """Runner entry point: ``spec.method`` is a key of :data:`LM_METHODS`."""
    method = all_methods()[LM_METHODS[spec.method]]
    ckpt = (Path(config.checkpoint_dir) / f"{spec.method}-{spec.variant}-seed{spec.seed}.pt"
            if config.checkpoint_dir else None)
    result = train(config, method, spec.param_dict, spec.seed, checkpoint=ckpt)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()  # the run file now holds everything the run computed
    return result
