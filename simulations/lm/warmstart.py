"""Supervised warm start of the from-scratch model to partial competence.

The tiny GPT-2 is trained by teacher forcing on correct responses of training problems
(cross-entropy on the response tokens and ``<eos>`` only), balanced over the domains. The
domains differ in difficulty (counting is learnt in a few hundred steps, two-digit addition
needs thousands, and what one domain learns carries over to the others), so each domain is
paced on its own by its sampled success ``s`` on held-out problems at the last check: below
``band[0]`` it gets a full share of the training batches, inside the band a ``replay``
share (dropping it entirely makes the model forget it within a hundred steps), above
``band[1]`` none (it drifts back down). Training ends at the first check with every domain
at or above ``band[0]`` (or at ``max_steps``); the measured success per domain is recorded. RL then starts from a policy
that solves some problems of every domain and fails others (the issue asks for 20-60%). The model, its tokenizer and ``meta.json`` (config and
measured success) are written to ``DIR/warmstart``; ``meta.json`` is written last, so its
presence with the same config means the warm start is reused, by every method and seed.

Training is checkpointed at every check (``DIR/warmstart.ckpt``: model, optimizer, random
stream, pacing and history, replaced atomically), so a killed warm start continues from its
last check and ends exactly where an uninterrupted one would; a checkpoint that does not
load is set aside (renamed, with a warning) and training starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fibration_theory.simulations.lm import models
from fibration_theory.simulations.lm.codec import CharCodec
from fibration_theory.simulations.lm.evaluation import evaluate
from fibration_theory.simulations.lm.sampling import left_pad, token_log_probs
from fibration_theory.simulations.lm.tasks import TaskSet
from fibration_theory.simulations.runner import _jsonable
from fibration_theory.simulations.streams import numpy_rng, seed_for

from fibration_theory.atomic import write_text
from fibration_theory.outputs import set_aside


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Supervised training of the from-scratch model."""

    model: models.TinyConfig = dataclasses.field(default_factory=models.TinyConfig)
    tasks: TaskSet = dataclasses.field(default_factory=lambda: TaskSet(("add", "sort", "count")))
    seed: int = 0
    #: problems per step (split evenly over the domains)
    batch_size: int = 96
    lr: float = 1e-3
    max_steps: int = 4000
    #: steps between success checks
    check_every: int = 25
    #: success band of every domain at the end (see the module docstring)
    band: tuple[float, float] = (0.2, 0.5)
    #: batch share of a domain inside the band relative to one below it
    replay: float = 0.1
    #: held-out problems per domain in a check (one sample each)
    check_per_domain: int = 48
    #: response length limit while sampling
    max_new: int = 6


def _sft_loss(model: Any, codec: CharCodec, tasks: TaskSet, problems, device) -> torch.Tensor:
    prompt, pmask = left_pad([codec.encode(tasks.prompt(p)) for p in problems], codec.pad_id,
                             device)
    targets = [codec.encode(tasks.target(p)) + [codec.eos_id] for p in problems]
    width = max(len(t) for t in targets)
    tokens = torch.full((len(targets), width), codec.pad_id, dtype=torch.long)
    mask = torch.zeros((len(targets), width), dtype=torch.bool)
    for i, t in enumerate(targets):
        tokens[i, :len(t)] = torch.tensor(t)
        mask[i, :len(t)] = True
    tokens, mask = tokens.to(device), mask.to(device)
    lp, _ = token_log_probs(model, prompt, pmask, tokens, mask)
    return -lp.sum() / mask.sum()


def train_warm_start(cfg: WarmStartConfig, device: str = "cpu", progress: bool = True,
                     checkpoint: Path | None = None) -> tuple[Any, CharCodec, dict[str, Any]]:
    """Train the from-scratch model; returns ``(model, codec, record)``. With ``checkpoint``
    the state is saved there at every check and training resumes from it."""
    codec = CharCodec()
    model = models.build_tiny(cfg.model, codec.vocab_size, codec.pad_id, codec.eos_id,
                              seed_for("warm/train", cfg.seed)).to(device).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = numpy_rng("warm/train", cfg.seed)
    checks = cfg.tasks.draw(numpy_rng("warm/checks"), cfg.check_per_domain, "eval")
    lo, hi = cfg.band
    share = np.ones(len(cfg.tasks.domains))
    history, start, step, inside, before = [], time.perf_counter(), 0, False, 0.0
    identity = _jsonable(dataclasses.asdict(cfg))
    state = _load_checkpoint(checkpoint, identity, model, opt, rng, device)
    if state is not None:
        share, history, step, before = (np.asarray(state["share"]), state["history"],
                                        state["step"], state["seconds"])
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, desc="warm start", disable=not progress,
               leave=False)
    while step < cfg.max_steps and not inside:
        counts = rng.multinomial(cfg.batch_size, share / share.sum())
        loss = _sft_loss(model, codec, cfg.tasks, cfg.tasks.draw(rng, counts, "train"), device)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.check_every == 0:
            res = evaluate(model, codec, cfg.tasks, checks, samples=1, max_new=cfg.max_new,
                           seed=seed_for("warm/check", step=step))
            s = np.array([res[f"reward/{name}"] for name in cfg.tasks.domains])
            share = np.where(s < lo, 1.0, np.where(s <= hi, cfg.replay, 0.0))
            inside = bool((s >= lo).all())
            history.append({"step": step, "loss": float(loss.detach()), **res})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", success=f"{res['reward']:.2f}")
            if checkpoint is not None:
                _save_checkpoint(checkpoint, {
                    "identity": identity, "model": model.state_dict(), "opt": opt.state_dict(),
                    "rng": rng.bit_generator.state, "share": share.tolist(),
                    "history": history, "step": step,
                    "seconds": before + time.perf_counter() - start})
    bar.close()
    record = {"steps": step, "seconds": round(before + time.perf_counter() - start, 1),
              "history": history, "reached_band": inside}
    return model, codec, record


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, identity: Any, model: Any, opt: torch.optim.Optimizer,
                     rng: np.random.Generator, device: str) -> dict[str, Any] | None:
    """The saved state of the same warm start (model, optimizer and stream restored), or
    None; an unreadable checkpoint is set aside with a warning."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a checkpoint")
    except Exception as err:  # noqa: BLE001 - any unreadable file: restart, keep the file
        set_aside(path, f"warm-start checkpoint does not load ({type(err).__name__}); "
                        "training starts afresh")
        return None
    if state.get("identity") != identity:  # another config wrote it: start afresh
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    return state


def ensure_warm_start(cfg: WarmStartConfig, out: Path, device: str = "cpu",
                      progress: bool = True, name: str = "warmstart") -> Path:
    """``out/NAME`` holding the warm start of ``cfg``, trained now unless already there
    (checkpointed to ``out/NAME.ckpt`` meanwhile). A folder of another config is retrained;
    :func:`folder_name` gives each model size its own folder, so another size never
    replaces one."""
    folder = Path(out) / name
    meta_path = folder / "meta.json"
    config = _jsonable(dataclasses.asdict(cfg))
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("config") == config:
            return folder
        shutil.rmtree(folder)  # another config: redo rather than reuse silently
    ckpt = Path(out) / f"{name}.ckpt"
    model, codec, record = train_warm_start(cfg, device, progress, checkpoint=ckpt)
    tmp = folder.with_name(f"{name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "model")
    codec.save(tmp / "codec.json")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    write_text(meta_path, json.dumps({"config": config, **record}, indent=1))
    ckpt.unlink(missing_ok=True)  # the warm start itself now holds what it computed
    return folder


def folder_name(tag: str = "") -> str:
    """The warm start's folder inside a results folder: ``warmstart``, or ``warmstart-L2-d32``
    for a model size set by ``--n-layer``/``--n-embd`` (``tag``: ``-L2-d32``)."""
    return f"warmstart{tag}"


def load_warm_start(folder: Path, device: str = "cpu") -> tuple[Any, CharCodec]:
    model = models.load_saved(Path(folder) / "model").to(device).eval()
    return model, CharCodec.load(Path(folder) / "codec.json")
