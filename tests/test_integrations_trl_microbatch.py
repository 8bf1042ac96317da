"""FiberGRPOTrainer under gradient accumulation: the summed micro-batch gradients are the
whole optimizer step's gradient (float64), through TRL's own ``Trainer.train`` (generation,
buffering, shuffle, split, ``training_step``).

A tiny randomly initialised GPT-2 in float64 (built from a config, no download) trains two
optimizer steps of two micro-batches each; TRL's shuffle spreads each prompt group (a dataset
column) and domain over the step's micro-batches. The second step is off-policy (its samples
come from the first step's policy), so its ratios differ from 1 and the gates act; in the
fresh case (``num_iterations=1``, ``steps_per_generation == gradient_accumulation_steps``) TRL
computes no old log-probs and the plan runs no model pass. The reference is computed here from
scratch: the step's micro-batches scored by a copy of the model taken before the step,
concatenated, and ``losses.compute`` with the step's hierarchy. The approximate
``fiber_microbatch="local"`` mode is checked to differ from its own whole step, so the test
can tell the two apart.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("trl", reason="TRL not installed; pip install 'fibration-theory[trl]'")

import torch
from datasets import Dataset
from test_integrations_trl import PROMPTS, length_reward, tiny_model, tokenizer

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations.trl import FiberGRPOConfig, FiberGRPOTrainer
from fibration_theory.losses.registry import get

#: float64 model and objective: only the summation order differs
TOL = 1e-12
#: gates act (largest |log-ratio|), and the local mode differs, by far more than rounding
DIFFERENT = 1e-3
GA = 2
PIDS = [10, 11, 12, 13]
TOPICS = ["math", "text", "text", "math"]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    objective: str
    params: dict
    steps_per_generation: int
    iterations: int = 1
    beta: float = 0.0
    domains: bool = True

    @property
    def fresh(self) -> bool:
        """TRL computes no old log-probs: every step is on fresh samples (ratio exactly 1)."""
        return self.iterations == 1 and self.steps_per_generation == GA


FIBERPO = {"c_plus": 0.01, "c_minus": 0.01, "eps": 0.02}
CASES = [
    # one generation for both steps: the second runs on samples of the first step's policy
    Case("fiberpo", "fiberpo", FIBERPO, 4, domains=False),
    Case("fiberpo_domain", "fiberpo_domain", FIBERPO, 4),
    # a generation reused for a second step, with TRL's (bias-corrected) KL term
    Case("fiberpo_domain-kl", "fiberpo_domain", FIBERPO, 2, iterations=2, beta=0.04),
    Case("fiberpo_domain-token-mean", "fiberpo_domain", {**FIBERPO, "agg": "token-mean"}, 4),
    # fresh samples: the plan runs no model pass
    Case("fiberpo_domain-fresh", "fiberpo_domain", FIBERPO, 2),
]


class Float64Trainer(FiberGRPOTrainer):
    """TRL's trainer with the completion tokens scored in float64 (TRL's fused head computes in
    float32; how TRL scores tokens is not under test, the loss built on them is)."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                           logits_to_keep, batch_size=None,
                                           compute_entropy=False, **kwargs):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        logits = logits[:, -logits_to_keep - 1:-1].to(torch.float64)
        target = input_ids[:, -logits_to_keep:]
        logps = torch.log_softmax(logits, dim=-1).gather(-1, target[..., None])[..., 0]
        return logps, (torch.zeros_like(logps) if compute_entropy else None), None


class Recording(Float64Trainer):
    """Keeps, per optimizer step, its micro-batches (TRL's buffered entries), the weights
    before the step, the accumulated gradient and the summed returned loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[dict] = []

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training:
            if self._step % self.args.gradient_accumulation_steps == 0:
                weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.steps.append({"parts": [], "weights": weights, "loss": 0.0})
            self.steps[-1]["parts"].append(inputs)
        return inputs

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.steps[-1]["loss"] += float(loss)
        self.steps[-1]["grads"] = {n: p.grad.clone() for n, p in model.named_parameters()
                                   if p.grad is not None}
        return loss


def config(case: Case, out_dir, mode: str, **overrides) -> FiberGRPOConfig:
    kw = {"output_dir": str(out_dir), "report_to": "none", "use_cpu": True,
          "save_strategy": "no", "seed": 0, "per_device_train_batch_size": 4,
          "num_generations": 4, "max_completion_length": 6, "gradient_accumulation_steps": GA,
          "steps_per_generation": case.steps_per_generation, "num_iterations": case.iterations,
          "beta": case.beta, "max_steps": 2, "learning_rate": 0.05, "logging_steps": 1,
          "fiber_objective": case.objective, "fiber_params": case.params,
          "fiber_group_column": "pid", "fiber_domain_column": "topic" if case.domains else None,
          "fiber_microbatch": mode}
    return FiberGRPOConfig(**{**kw, **overrides})


def train(case: Case, out_dir, mode: str) -> Recording:
    """Two optimizer steps of ``GA`` micro-batches through ``Trainer.train``. With KL the
    reference model is the initial one, set after construction (TRL would load it by name)."""
    ds = Dataset.from_dict({"prompt": PROMPTS, "pid": PIDS, "topic": TOPICS})
    trainer = Recording(model=tiny_model(len(tokenizer())).double(), reward_funcs=length_reward,
                        args=config(case, out_dir, mode, beta=0.0), train_dataset=ds,
                        processing_class=tokenizer())
    if case.beta:
        trainer.beta, trainer.ref_model = case.beta, tiny_model(len(tokenizer())).double().eval()
    trainer.train()
    return trainer


def whole_step(trainer: FiberGRPOTrainer, case: Case, record: dict) -> tuple[float, dict, float]:
    """The objective on the step's micro-batches concatenated, scored by the model as it was
    before the step (a fresh copy): ``(loss, parameter gradients, largest |log-ratio|)``."""
    parts = record["parts"]
    model = tiny_model(len(tokenizer())).double()  # a model TRL has not patched
    model.load_state_dict(record["weights"])
    lps, olds, advs, masks, refs = [], [], [], [], []
    for b in parts:
        ids = torch.cat([b["prompt_ids"], b["completion_ids"]], dim=1)
        attn = torch.cat([b["prompt_mask"], b["completion_mask"]], dim=1)
        lp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attn,
                                                              b["completion_ids"].shape[1])
        lps.append(lp)
        olds.append(lp.detach() if b.get("old_per_token_logps") is None
                    else b["old_per_token_logps"])
        masks.append(b["completion_mask"].bool())
        advs.append(b["advantages"][:, None].expand(lp.shape))
        refs.append(b.get("ref_per_token_logps"))
    lp, old, adv, mask = (torch.cat(x) for x in (lps, olds, advs, masks))
    groups = torch.cat([b["fiber_group_ids"] for b in parts])
    domains = torch.cat([b["fiber_domain_ids"] for b in parts]) if case.domains else None
    h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
    out = losses.compute(case.objective, lp, old, adv.double(), mask, hierarchy=h,
                         **case.params)
    loss = out.loss
    if case.beta:  # TRL's k3 estimate with bias correction, weighted by the step's mu
        d = torch.where(mask, torch.cat(refs) - lp, torch.zeros_like(lp))
        kl = (torch.exp(d) - d - 1) * torch.exp(torch.where(mask, lp - old, 0.0))
        loss = loss + case.beta * (out.weights * kl).sum()
    if case.params.get("agg") == "token-mean":  # TRL's rule: the generation batch's tokens
        n = float(parts[0]["num_items_in_batch"])
        loss = loss * float(mask.sum()) / n * case.steps_per_generation / GA
    named = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    drift = float((lp.detach() - old).abs()[mask].max())
    return float(loss.detach()), {n: g for (n, _), g in zip(named, grads, strict=True)
                         if g is not None}, drift


def rel_err(a: dict, b: dict) -> float:
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0, "zero reference gradient: the comparison is vacuous"
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def measure(case: Case, out_dir) -> list[dict]:
    """Per optimizer step: the exact and the local run, each against its whole step."""
    rows = [{} for _ in range(2)]
    for mode in ("exact", "local"):
        trainer = train(case, out_dir / mode, mode)
        assert len(trainer.steps) == 2, f"{case.id}: {len(trainer.steps)} steps recorded"
        for row, record in zip(rows, trainer.steps, strict=True):
            assert len(record["parts"]) == GA
            loss, grad, drift = whole_step(trainer, case, record)
            groups = [set(b["fiber_group_ids"].tolist()) for b in record["parts"]]
            row.update({f"{mode}_grad": rel_err(record["grads"], grad),
                        f"{mode}_loss": abs(record["loss"] - loss) / abs(loss),
                        f"{mode}_drift": drift,
                        f"{mode}_split_groups": len(set.intersection(*groups)),
                        "fresh": all(b.get("old_per_token_logps") is None
                                     for b in record["parts"])})
    return rows


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_summed_micro_batch_gradients_are_the_whole_steps(case, tmp_path):
    """Property: with prompt groups split across the micro-batches of an optimizer step, the
    trainer's accumulated gradient and summed loss equal the objective on the whole step to
    float64 rounding; where group or domain gates act, the micro-batch-local mode does not
    (for FiberPO, whose gates see one trajectory at a time, it does)."""
    rows = measure(case, tmp_path)
    for row in rows:
        assert row["exact_split_groups"] > 0 and row["local_split_groups"] > 0, (case.id, row)
        assert row["fresh"] == case.fresh, (case.id, row)
        assert row["exact_grad"] <= TOL and row["exact_loss"] <= TOL, (case.id, row)
        if get(case.objective).coupling == "trajectory":
            # gates on one trajectory at a time, TRL's micro-batches of equal row counts: the
            # local mode is exact too
            assert row["local_grad"] <= TOL and row["local_loss"] <= TOL, (case.id, row)
        elif row["local_drift"] > DIFFERENT:  # the group and domain gates act
            assert row["local_grad"] > DIFFERENT, (case.id, row)
    if not case.fresh:
        assert rows[1]["exact_drift"] > DIFFERENT, f"{case.id}: step 2 is on-policy ({rows})"
        assert rows[1]["local_drift"] > DIFFERENT, f"{case.id}: step 2 is on-policy ({rows})"


def test_steps_per_generation_must_be_a_multiple_of_accumulation(tmp_path):
    """Property: exact mode refuses an optimizer step that would span two generations, naming
    steps_per_generation; the local mode accepts it; an unknown mode is refused."""
    case = CASES[1]
    with pytest.raises(ValueError, match="steps_per_generation"):
        config(case, tmp_path, "exact", steps_per_generation=3)
    assert config(case, tmp_path, "local", steps_per_generation=3).fiber_microbatch == "local"
    with pytest.raises(ValueError, match="fiber_microbatch"):
        config(case, tmp_path, "approximate")


def test_exact_mode_refuses_dropout(tmp_path):
    """Property: exact mode under accumulation refuses a model with active dropout (its
    no-grad pass would see other log-probs than the backward), naming disable_dropout; TRL's
    disable_dropout=True clears it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    ds = Dataset.from_dict({"prompt": PROMPTS, "pid": PIDS, "topic": TOPICS})
    dropout = lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer()), n_positions=64, n_embd=16, n_layer=1, n_head=2,
        resid_pdrop=0.1))
    with pytest.raises(ValueError, match="disable_dropout"):
        FiberGRPOTrainer(model=dropout(), reward_funcs=length_reward,
                         args=config(CASES[1], tmp_path, "exact"), train_dataset=ds,
                         processing_class=tokenizer())
    FiberGRPOTrainer(model=dropout(), reward_funcs=length_reward,
                     args=config(CASES[1], tmp_path, "exact", disable_dropout=True),
                     train_dataset=ds, processing_class=tokenizer())


def test_exact_mode_refuses_a_micro_batch_outside_the_buffer(tmp_path):
    """Property: under accumulation, exact mode computes a micro-batch only as part of its
    buffered optimizer step; a copy of a buffered micro-batch is refused, naming inputs."""
    case = CASES[1]
    ds = Dataset.from_dict({"prompt": PROMPTS, "pid": PIDS, "topic": TOPICS})
    trainer = Float64Trainer(model=tiny_model(len(tokenizer())).double(),
                             reward_funcs=length_reward, args=config(case, tmp_path, "exact"),
                             train_dataset=ds, processing_class=tokenizer())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = GA
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, inputs)  # the buffered entry itself is accepted
    with pytest.raises(ValueError, match="inputs"):
        trainer.compute_loss(trainer.model, dict(inputs))


if __name__ == "__main__":  # prints the figures of docs/integrations.md
    import pathlib
    import tempfile

    print("| case | step | drift | exact grad | exact loss | local grad | local loss |")
    print("|---|---|---|---|---|---|---|")
    for c in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            for i, r in enumerate(measure(c, pathlib.Path(tmp))):
                print(f"| {c.id} | {i + 1} | {r['exact_drift']:.1e} | {r['exact_grad']:.1e} | "
                      f"{r['exact_loss']:.1e} | {r['local_grad']:.1e} | {r['local_loss']:.1e} |")
