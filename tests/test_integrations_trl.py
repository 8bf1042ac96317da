"""FiberGRPOTrainer: two real TRL training steps on CPU whose gradient is our objective's.

A tiny randomly initialised GPT-2 and a word-level tokenizer are built here (no download).
Each run takes two optimizer steps with ``num_iterations=2``: step 1 is on-policy, step 2
reuses the generations after one update, so its ratios differ from 1 and the gates act. For
every step the trainer's parameter gradient is compared with the gradient of
``losses.compute`` on the same batch, computed here from scratch: log-probs from a copy of the
model, group and domain labels looked up from the decoded prompts in the dataset. The
gradient of TRL's own loss on that batch is checked to differ, so the test can tell the two
apart.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

_REASON = ("TRL not installed; pip install 'fibration-theory[trl]' "
           "(trl, transformers, accelerate, datasets)")
pytest.importorskip("trl", reason=_REASON)
pytest.importorskip("transformers", reason=_REASON)
pytest.importorskip("datasets", reason=_REASON)
pytest.importorskip("tokenizers", reason=_REASON)

import torch
from datasets import Dataset
from docs_examples import run_example
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import GRPOTrainer

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations.trl import FiberGRPOConfig, FiberGRPOTrainer

#: the trainer and the reference run the same float32 model and the same float64 loss; only
#: summation order may differ, so a few float32 ulps of the largest gradient entry
GRAD_RTOL = 1e-5
#: unit roundoff of float32, the dtype the trainer hands its loss back in
F32_EPS = torch.finfo(torch.float32).eps
#: TRL's own loss must differ from ours by far more than the tolerance above
DIFFERENT_RTOL = 1e-2

PROMPTS = ["add two numbers", "count the letters", "sort these words", "reverse this list"]
PIDS = [10, 11, 12, 13]
TOPICS = ["math", "text", "text", "math"]
WORDS = [*" ".join(PROMPTS).split(), "one", "three", "four", "five", "six", "seven"]


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]")


def tiny_model(vocab_size: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                     eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c.split())) for c in completions]


class RecordingTrainer(FiberGRPOTrainer):
    """Keeps, for every training step, the batch, a copy of the model before the update, the
    gradient after backward and the returned loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training:
            self.records.append({"inputs": {k: v.clone() if isinstance(v, torch.Tensor) else v
                                            for k, v in inputs.items()},
                                 "model": copy.deepcopy(self.model)})
        return inputs

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.records[-1]["grads"] = {n: p.grad.detach().clone()
                                     for n, p in model.named_parameters() if p.grad is not None}
        self.records[-1]["loss"] = float(loss)
        return loss


@dataclasses.dataclass(frozen=True)
class Run:
    """One two-step training run."""

    id: str
    objective: str
    params: dict
    group_column: str | None
    domain_column: str | None


RUNS = [
    Run("fiberpo_domain-columns", "fiberpo_domain", {"c_plus": 0.01, "c_minus": 0.01, "eps": 0.02},
        "pid", "topic"),
    Run("fiberpo_domain-grpo-groups", "fiberpo_domain",
        {"c_plus": 0.005, "c_minus": 0.005, "eps": 0.05}, None, None),
    Run("dr_grpo", "dr_grpo", {"eps_low": 0.05, "eps_high": 0.05}, None, None),
]


def make_trainer(run: Run, tmp_path, **overrides) -> RecordingTrainer:
    tok = tokenizer()
    cfg = {"output_dir": str(tmp_path), "per_device_train_batch_size": 8, "num_generations": 4,
           "max_completion_length": 6, "max_steps": 2, "num_iterations": 2,
           "learning_rate": 0.05, "logging_steps": 1, "report_to": "none", "use_cpu": True,
           "save_strategy": "no", "seed": 0, "fiber_objective": run.objective,
           "fiber_params": run.params, "fiber_group_column": run.group_column,
           "fiber_domain_column": run.domain_column}
    cfg.update(overrides)
    ds = Dataset.from_dict({"prompt": PROMPTS, "pid": PIDS, "topic": TOPICS})
    return RecordingTrainer(model=tiny_model(len(tok)), reward_funcs=length_reward,
                            args=FiberGRPOConfig(**cfg), train_dataset=ds, processing_class=tok)


@pytest.fixture(scope="module", params=RUNS, ids=[r.id for r in RUNS])
def trained(request, tmp_path_factory) -> tuple[Run, RecordingTrainer]:
    run = request.param
    trainer = make_trainer(run, tmp_path_factory.mktemp(run.id))
    trainer.train()
    return run, trainer


def completion_logps(trainer, model, inputs) -> torch.Tensor:
    """``[B, T]`` log-probs of the completion tokens by TRL's own scoring function (TRL patches
    the model's head; how TRL scores tokens is not under test, the loss built on them is)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    lp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attn,
                                                          inputs["completion_ids"].shape[1])
    return lp


def row_labels(tok, inputs, run: Run) -> tuple[list, list | None]:
    """Group and domain label of each row, from its decoded prompt (not from the trainer)."""
    texts = tok.batch_decode(inputs["prompt_ids"], skip_special_tokens=True)
    index = [PROMPTS.index(t.strip()) for t in texts]
    groups = [PIDS[i] if run.group_column else PROMPTS[i] for i in index]
    domains = [TOPICS[i] for i in index] if run.domain_column else None
    return groups, domains


def reference(run: Run, trainer, record) -> tuple[torch.Tensor, dict, dict]:
    """Our objective on the recorded batch: ``(loss, grads, extras)``."""
    inputs, model = record["inputs"], copy.deepcopy(record["model"])
    lp = completion_logps(trainer, model, inputs)
    old = inputs.get("old_per_token_logps")
    old = lp.detach() if old is None else old
    mask = inputs["completion_mask"].bool()
    groups, domains = row_labels(trainer.processing_class, inputs, run)
    h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
    params = dict(run.params)
    if run.objective == "dr_grpo":
        params["norm_length"] = float(trainer.args.max_completion_length)
    adv = inputs["advantages"].to(torch.float64)[:, None].expand(mask.shape)
    out = losses.compute(run.objective, lp.double(), old.double(), adv, mask, hierarchy=h,
                         **params)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads, {"max_abs_log_ratio": float((lp.detach() - old).abs()[mask]
                                                                 .max())}


def _rel_err(a: dict, b: dict) -> float:
    scale = max(float(v.abs().max()) for v in b.values())
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def test_two_steps_ran(trained):
    """Property: two optimizer steps ran; the second one is off-policy (ratios differ from 1)."""
    run, trainer = trained
    assert len(trainer.records) == 2, f"{run}: {len(trainer.records)} steps recorded"
    assert "old_per_token_logps" in trainer.records[1]["inputs"], run
    _, _, extra = reference(run, trainer, trainer.records[1])
    assert extra["max_abs_log_ratio"] > 1e-3, f"{run}: step 2 is on-policy ({extra})"


@pytest.mark.parametrize("step", [0, 1])
def test_gradient_is_our_objective(trained, step: int):
    """Property: the trainer's loss and parameter gradient equal those of losses.compute on
    the same batch (labels from the dataset, log-probs recomputed from the same weights)."""
    run, trainer = trained
    record = trainer.records[step]
    loss, grads, _ = reference(run, trainer, record)
    err = _rel_err(record["grads"], grads)
    assert err <= GRAD_RTOL, f"{run} step {step + 1}: relative gradient error {err:.3e}"
    assert abs(record["loss"] - float(loss)) <= GRAD_RTOL * max(1.0, abs(float(loss))), (
        f"{run} step {step + 1}: loss {record['loss']} vs {float(loss)}")


@pytest.mark.parametrize("step", [0, 1])
def test_gradient_is_not_trls_own_loss(trained, step: int):
    """Property: TRL's built-in loss (its configured loss_type) has a different gradient on
    the same batch, so the comparison above identifies our objective."""
    run, trainer = trained
    record = trainer.records[step]
    model = copy.deepcopy(record["model"])
    GRPOTrainer._compute_loss(trainer, model, record["inputs"]).backward()
    theirs = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    err = _rel_err(record["grads"], theirs)
    assert err > DIFFERENT_RTOL, f"{run} step {step + 1} ({trainer.loss_type}): only {err:.3e}"


def test_metrics_are_logged(trained):
    """Property: the objective's metrics reach TRL's log history under ``fiber/``."""
    run, trainer = trained
    keys = set().union(*(entry.keys() for entry in trainer.state.log_history))
    assert {"fiber/loss", "fiber/ratio/max", "fiber/clip_frac"} <= keys, (run, sorted(keys))


def test_kl_penalty_uses_the_objectives_weights(trained):
    """Property: with beta > 0 the loss adds beta * sum_i mu_i r_i KL_i (TRL's k3 estimate
    times the ratio to the old policy, TRL's use_bias_correction_kl)."""
    run, trainer = trained
    record = trainer.records[1]
    inputs = dict(record["inputs"])
    model = copy.deepcopy(record["model"])
    lp = completion_logps(trainer, model, inputs).detach()
    inputs["ref_per_token_logps"] = lp + 0.1 * torch.linspace(-1, 1, lp.numel()).reshape(lp.shape)
    beta, trainer.beta = trainer.beta, 0.25
    try:
        with_kl = float(trainer._compute_loss(model, inputs).detach())
        trainer.beta = 0.0
        without = float(trainer._compute_loss(model, inputs).detach())
    finally:
        trainer.beta = beta
    mask = inputs["completion_mask"].bool()
    d = (inputs["ref_per_token_logps"] - lp).double()
    kl = torch.exp(d) - d - 1
    assert trainer.args.use_bias_correction_kl  # TRL's default: KL times the ratio to old
    kl = kl * torch.exp(lp.double() - inputs["old_per_token_logps"].double())
    groups, domains = row_labels(trainer.processing_class, inputs, run)
    h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
    params = dict(run.params)
    if run.objective == "dr_grpo":
        params["norm_length"] = float(trainer.args.max_completion_length)
    mu = losses.compute(run.objective, lp.double(), lp.double(), kl, mask, hierarchy=h,
                        **params).weights
    expected = 0.25 * float((mu * kl)[mask].sum())
    # the trainer returns the loss in the model's float32: each value carries one rounding
    tol = 2 * F32_EPS * max(abs(with_kl), abs(without)) + GRAD_RTOL * abs(expected)
    assert abs((with_kl - without) - expected) <= tol, (
        f"{run}: KL term {with_kl - without} vs {expected}")


def test_config_rejects_unknown_objective(tmp_path):
    """Property: a misspelt objective name is refused, listing the registered names."""
    with pytest.raises(ValueError, match="fiberpo_domain"):
        FiberGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                        per_device_train_batch_size=8, num_generations=4,
                        fiber_objective="fiber_po")


def test_config_rejects_unknown_parameter(tmp_path):
    """Property: a parameter the objective does not take is refused, naming fiber_params."""
    with pytest.raises(ValueError, match="fiber_params"):
        FiberGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                        per_device_train_batch_size=8, num_generations=4,
                        fiber_objective="fiberpo", fiber_params='{"c_plus": 0.1, "delta_": 1}')


def test_unsupported_trl_option_is_refused(tmp_path):
    """Property: a TRL option that would reshape the loss behind the objective is refused."""
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        make_trainer(RUNS[0], tmp_path, top_entropy_quantile=0.5)


def test_missing_label_column_is_named(tmp_path):
    """Property: a label column absent from the dataset is named in the error."""
    trainer = make_trainer(dataclasses.replace(RUNS[0], domain_column="subject"), tmp_path)
    with pytest.raises(ValueError, match="fiber_domain_column.*subject"):
        trainer.train()


def test_docs_example_runs(tmp_path):
    """Property: the trl example of docs/integrations.md runs as written and passes its own
    checks."""
    proc = run_example("integrations.md", "trl", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
