"""FiberGRPOTrainer on one or more CPU processes on fixed batches (helper of the tests).

Run by ``tests/test_integrations_trl_distributed.py`` as::

    python tests/trl_multiprocess.py OUT                      # one process
    ACCELERATE_USE_CPU=1 python -m torch.distributed.run --nproc_per_node 2 \
        tests/trl_multiprocess.py OUT                         # two (accelerate: gloo)

(``accelerate launch --cpu --num_processes 2`` starts a single process on one machine
without MPI; torchrun sets the environment accelerate reads for multi-CPU.)

Every process builds the same tiny float64 GPT-2 and trains FiberPO-Domain for two optimizer
steps through ``Trainer.train`` (step 2 reuses step 1's samples: off-policy). Only TRL's
sampling is replaced: each completion is a fixed function of its prompt and its index among
the prompt's completions, so that one process and two see the same global batch; everything
else is TRL's and accelerate's (the sampler's split of the prompts over processes, DDP's
gradient averaging over gloo) and the trainer's (labels factorized over processes, the
objective through ``integrations.distributed``). The prompt groups (column ``pid``) and the
domain ``math`` have rows on both processes. Each process writes ``OUT/rank<r>.pt``: per step
the whole batch's loss and the parameter gradient after DDP's averaging, the step's group
labels on this process, and the parameters after training, as ``OUT/rank<r>_<run>.pt`` for
the runs ``synced`` (one micro-batch per step), ``accumulated`` (two micro-batches per step,
``fiber_microbatch="exact"``) and, with several processes, ``unsynced``
(``fiber_sync_processes=False``: each process gates its own rows).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PROMPTS = ["add two numbers", "count the letters", "sort these words", "reverse this list"]
PIDS = ["A", "A", "A", "B"]  # A has prompts on both processes
TOPICS = ["math", "math", "math", "code"]  # "code" lives on one process
GENERATIONS, WIDTH = 2, 6


def completion(p: int, k: int, vocab: int) -> tuple[torch.Tensor, int, float]:
    """``(token ids [WIDTH], length, advantage)`` of completion ``k`` of prompt ``p``."""
    g = torch.Generator().manual_seed(100 * p + k)
    n = int(torch.randint(1, WIDTH + 1, (1,), generator=g))
    ids = torch.randint(3, vocab, (WIDTH,), generator=g)
    ids[n:] = 0
    return ids, n, float(torch.randn(1, generator=g, dtype=torch.float64))


def main(out_dir: str) -> None:
    from datasets import Dataset
    from test_integrations_trl import length_reward, tiny_model, tokenizer
    from test_integrations_trl_microbatch import Float64Trainer

    from fibration_theory.integrations.trl import FiberGRPOConfig

    class FixedSamples(Float64Trainer):
        """Completions, advantages fixed per (prompt, index); old log-probs from the model."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.records: list[dict] = []

        def _fixed(self, inputs: list[dict]) -> dict:
            vocab = len(self.processing_class)
            seen: dict[int, int] = {}
            rows = []
            for x in inputs:
                p = PROMPTS.index(x["prompt"])
                rows.append(completion(p, seen.get(p, 0), vocab))
                seen[p] = seen.get(p, 0) + 1
            prompt_ids = self.processing_class([x["prompt"] for x in inputs],
                                               return_tensors="pt")["input_ids"]
            ids = torch.stack([r[0] for r in rows])
            mask = (torch.arange(WIDTH)[None, :] < torch.tensor([r[1] for r in rows])[:, None])
            total = sum(completion(p, k, vocab)[1] for p in range(len(PROMPTS))
                        for k in range(GENERATIONS))
            out = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
                   "completion_ids": ids, "completion_mask": mask.long(),
                   "advantages": torch.tensor([r[2] for r in rows], dtype=torch.float64),
                   "num_items_in_batch": torch.tensor(float(total))}
            with torch.no_grad():
                out["old_per_token_logps"], _, _ = self._get_per_token_logps_and_entropies(
                    self.model, torch.cat([prompt_ids, ids], 1),
                    torch.cat([out["prompt_mask"], out["completion_mask"]], 1), WIDTH)
            return out

        def _generate_and_score_completions(self, inputs):
            # the trainer's own labelling (gathered over processes) on top of fixed samples
            output = self._fixed(inputs)
            output["fiber_group_ids"] = self._labels(inputs, self.args.fiber_group_column,
                                                     "group")
            output["fiber_domain_ids"] = self._labels(inputs, self.args.fiber_domain_column,
                                                      "domain")
            return output

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            # returned loss of a process: N * its share (DDP convention); the mean over
            # processes is the whole batch's loss
            whole = float(self.accelerator.gather(loss.detach().reshape(1)).mean())
            batch = self._buffered_inputs[(self._step - 1) % self.args.steps_per_generation]
            if (self._step - 1) % self.args.gradient_accumulation_steps == 0:
                self.records.append({"loss": 0.0, "groups": []})
            step = self.records[-1]
            step["loss"] += whole
            step["groups"] += batch["fiber_group_ids"].tolist()
            step["grads"] = {n: p.grad.detach().clone() for n, p in
                             self.accelerator.unwrap_model(model).named_parameters()}
            return loss


    world = int(os.environ.get("WORLD_SIZE", "1"))
    runs = {"synced": (1, True), "accumulated": (2, True)}
    if world > 1:
        runs["unsynced"] = (1, False)
    for name, (accumulation, sync) in runs.items():
        args = FiberGRPOConfig(
            output_dir=out_dir, report_to="none", use_cpu=True, save_strategy="no", seed=0,
            per_device_train_batch_size=len(PROMPTS) * GENERATIONS // world // accumulation,
            gradient_accumulation_steps=accumulation, steps_per_generation=accumulation,
            num_generations=GENERATIONS, max_completion_length=WIDTH, num_iterations=2,
            max_steps=2, learning_rate=0.02, logging_steps=1, fiber_objective="fiberpo_domain",
            fiber_params={"c_plus": 0.05, "c_minus": 0.03, "eps": 0.1},
            fiber_group_column="pid", fiber_domain_column="topic", fiber_sync_processes=sync)
        ds = Dataset.from_dict({"prompt": PROMPTS, "pid": PIDS, "topic": TOPICS})
        trainer = FixedSamples(model=tiny_model(len(tokenizer())).double(),
                               reward_funcs=length_reward, args=args, train_dataset=ds,
                               processing_class=tokenizer())
        trainer.train()
        params = {n: p.detach().clone() for n, p in
                  trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
        rank = trainer.accelerator.process_index
        torch.save({"world": trainer.accelerator.num_processes, "steps": trainer.records,
                    "params": params}, os.path.join(out_dir, f"rank{rank}_{name}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
