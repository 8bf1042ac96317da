"""Our objectives against TRL 1.16's own GRPO losses, in float64 (helper of the tests).

Both sides run their real loss code, ``GRPOTrainer._compute_loss`` (TRL, with its
``loss_type``) and ``FiberGRPOTrainer._compute_loss`` (ours), on one trainer and the same
micro-batch; only the model's scoring is replaced by a fixed float64 leaf of log-probs, so the
gradient is taken with respect to it. Run as a script it prints the table of
docs/integrations.md::

    .venv/bin/python tests/trl_peers.py
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile

import torch


@dataclasses.dataclass(frozen=True)
class Case:
    """TRL's ``loss_type`` (and options) against our objective with mapped parameters."""

    id: str
    loss_type: str
    objective: str
    trl: dict
    ours: dict
    beta: float = 0.0
    bias_kl: bool = True
    accumulation: int = 1  # gradient accumulation = steps_per_generation


CASES = [
    Case("grpo", "grpo", "grpo", {"epsilon": 0.2, "epsilon_high": 0.28},
         {"eps_low": 0.2, "eps_high": 0.28}),
    Case("grpo-kl", "grpo", "grpo", {"epsilon": 0.2, "epsilon_high": 0.28},
         {"eps_low": 0.2, "eps_high": 0.28}, beta=0.04),
    Case("grpo-kl-no-bias-correction", "grpo", "grpo", {"epsilon": 0.2},
         {"eps_low": 0.2, "eps_high": 0.2}, beta=0.04, bias_kl=False),
    Case("bnpo", "bnpo", "ppo_clip", {"epsilon": 0.2}, {"eps_low": 0.2, "eps_high": 0.2}),
    Case("dr_grpo", "dr_grpo", "dr_grpo", {"epsilon": 0.2}, {"eps_low": 0.2, "eps_high": 0.2}),
    Case("dapo", "dapo", "dapo", {"epsilon": 0.2, "epsilon_high": 0.28}, {}),
    Case("dapo-accumulated", "dapo", "dapo", {"epsilon": 0.2, "epsilon_high": 0.28}, {},
         accumulation=2),
    Case("dapo-kl-accumulated", "dapo", "dapo", {"epsilon": 0.2, "epsilon_high": 0.28}, {},
         beta=0.04, accumulation=2),
    Case("cispo-accumulated", "cispo", "cispo", {"epsilon_high": 1.28},
         {"eps_low": 1.0, "eps_high": 0.28}, accumulation=2),
    Case("sapo", "sapo", "sapo", {"sapo_temperature_pos": 1.0, "sapo_temperature_neg": 1.05},
         {"tau_pos": 1.0, "tau_neg": float(torch.tensor(1.05, dtype=torch.float32))}),
    Case("gspo", "grpo", "gspo", {"epsilon": 3e-4, "epsilon_high": 4e-4,
                                  "importance_sampling_level": "sequence"},
         {"eps_low": 3e-4, "eps_high": 4e-4}),
]

#: the mappings (documented in docs/integrations.md)
MAPPINGS = {
    "cispo": "TRL's epsilon_high bounds the ratio itself (ours: 1 + eps_high); TRL has no lower "
             "bound (ours: eps_low = 1); TRL reports sum sg(clip r) A log pi / N, compared with "
             "sum_i (dL_ours/dlp_i) lp_i",
    "bnpo": "TRL's bnpo normalises per micro-batch: equal to our token-mean ppo_clip when the "
            "micro-batch is the generation batch",
    "sapo": "TRL builds the temperatures with torch.where on Python floats, in float32: ours "
            "gets tau = float32(tau)",
    "rows": "TRL's grpo/sapo/dr_grpo average over all rows of a micro-batch, ours over rows "
            "with a token: the batches have no empty row",
}


def make_trainer(case: Case, out_dir: str):
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel

    from fibration_theory.integrations.trl import FiberGRPOConfig, FiberGRPOTrainer

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=32, n_embd=8, n_layer=1,
                                       n_head=2, bos_token_id=1, eos_token_id=1,
                                       pad_token_id=0))
    opts = {k: v for k, v in case.trl.items() if k != "importance_sampling_level"}
    args = FiberGRPOConfig(
        output_dir=out_dir, report_to="none", use_cpu=True, save_strategy="no",
        per_device_train_batch_size=4, num_generations=4, max_completion_length=7,
        gradient_accumulation_steps=case.accumulation, steps_per_generation=case.accumulation,
        loss_type=case.loss_type, beta=0.0, use_bias_correction_kl=case.bias_kl,
        fiber_objective=case.objective, fiber_params=case.ours,
        # one micro-batch on its own, as TRL's loss sees it: the peers' objectives weight each
        # token by its own ratio, so the local mode is the exact one here
        fiber_microbatch="local", **opts)
    ds = Dataset.from_dict({"prompt": ["a b", "c d"]})
    trainer = FiberGRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] *
                               len(completions), args=args, train_dataset=ds,
                               processing_class=_tokenizer())
    trainer.current_gradient_accumulation_steps = case.accumulation
    # the reference log-probs come with the batch: no reference model is built
    trainer.beta = case.beta
    trainer.importance_sampling_level = case.trl.get("importance_sampling_level", "token")
    return trainer


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, "a": 3, "b": 4, "c": 5, "d": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]")


def micro_batch(seed: int, accumulation: int) -> tuple[dict, torch.Tensor]:
    """TRL's micro-batch dict (4 rows of 1..7 tokens, none empty) and the float64 log-probs;
    ``num_items_in_batch`` counts the tokens of ``accumulation`` such micro-batches."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).long()
    old = -0.5 - torch.rand(4, 7, generator=g, dtype=torch.float64)
    lp = old + 0.8 * (torch.rand(4, 7, generator=g, dtype=torch.float64) - 0.5)
    ref = lp + 0.3 * torch.randn(4, 7, generator=g, dtype=torch.float64)
    others = int(torch.randint(8, 20, (1,), generator=g)) * (accumulation - 1)
    inputs = {"prompt_ids": torch.full((4, 2), 3), "prompt_mask": torch.ones(4, 2, dtype=torch.long),
              "completion_ids": torch.full((4, 7), 4), "completion_mask": mask,
              "advantages": torch.tensor([1.0, -0.6, 0.4, -1.2], dtype=torch.float64),
              "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": torch.tensor(float(mask.sum() + others))}
    return inputs, lp


def _loss_and_grad(fn, trainer, inputs, lp):
    leaf = lp.clone().requires_grad_(True)
    zeros = torch.zeros_like(lp)  # entropies: TRL only logs them here
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (leaf, zeros, None)
    try:
        loss = fn(trainer, trainer.model, inputs)
    finally:
        del trainer._get_per_token_logps_and_entropies
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def measure(case: Case, trainer, seed: int) -> dict:
    """Relative differences of value and log-prob gradient, ours vs TRL's."""
    from trl import GRPOTrainer

    from fibration_theory.integrations.trl import FiberGRPOTrainer

    inputs, lp = micro_batch(seed, case.accumulation)
    trainer.model.train()
    ours, g_ours = _loss_and_grad(FiberGRPOTrainer._compute_loss, trainer, inputs, lp)
    theirs, g_theirs = _loss_and_grad(GRPOTrainer._compute_loss, trainer, inputs, lp)
    raw = abs(float(ours - theirs)) / abs(float(theirs))
    if case.loss_type == "cispo":
        ours = (g_ours * torch.where(inputs["completion_mask"].bool(), lp,
                                     torch.zeros_like(lp))).sum()
        if case.beta:
            raise ValueError("the CISPO value mapping holds without KL only")
    scale = float(g_theirs.abs().max())
    return {"raw_value": raw, "value": abs(float(ours - theirs)) / abs(float(theirs)),
            "grad": float((g_ours - g_theirs).abs().max()) / scale, "grad_norm": scale}


def table(seeds=(0, 1, 2)) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            trainer = make_trainer(case, tmp)
            worst = {"raw_value": 0.0, "value": 0.0, "grad": 0.0}
            for seed in seeds:
                m = measure(case, trainer, seed)
                worst = {k: max(worst[k], m[k]) for k in worst}
            rows.append({"case": case, **worst})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| case | TRL loss_type | ours | value (raw) | value (mapped) | gradient |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        c = row["case"]
        lines.append(f"| {c.id} | `{c.loss_type}` | `{c.objective}` | {row['raw_value']:.1e} | "
                     f"{row['value']:.1e} | {row['grad']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(table()))
    sys.exit(0)
