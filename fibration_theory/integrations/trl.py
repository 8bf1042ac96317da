"""Any registered objective as the loss of TRL's ``GRPOTrainer`` (TRL 1.16).

:class:`FiberGRPOTrainer` keeps TRL's generation, rewards and advantages and replaces only the
loss: on each micro-batch it calls :func:`fibration_theory.losses.compute` with the objective
named by ``FiberGRPOConfig.fiber_objective`` and the parameters ``fiber_params``. The sampling
hierarchy comes from the data:

* prompt groups: the dataset column ``fiber_group_column``, or by default the GRPO groups
  themselves (the ``num_generations`` completions of one prompt);
* domains: the dataset column ``fiber_domain_column`` (no domain level when unset).

Labels are factorized over all processes when completions are generated, so equal labels
name one node everywhere.

What the loss sees. TRL splits each generation batch into micro-batches of
``per_device_train_batch_size`` rows after a shuffle, and one optimizer step accumulates the
gradients of ``gradient_accumulation_steps`` of them. With ``fiber_microbatch="exact"`` (the
default) the objective's batch is the optimizer step: at the step's first micro-batch the
trainer gathers the step's micro-batches from its buffered generation batch and builds a
:func:`fibration_theory.integrations.microbatch.plan` (one no-grad forward of the step's other
micro-batches when the samples are off-policy; none on fresh samples, TRL's
``old_per_token_logps`` being absent, where every ratio is 1), and each micro-batch's
forward/backward then carries the whole step's gates; the summed micro-batch gradients are the
gradient of the objective on the whole step. This needs ``steps_per_generation`` to be a
multiple of ``gradient_accumulation_steps`` (a step never spans two generations) and a
deterministic forward (a model with active dropout is refused; TRL's ``disable_dropout``). ``fiber_microbatch="local"`` is the approximate mode:
each micro-batch is gated on its own rows. In both modes the batch spans all processes
(``fiber_sync_processes=True``, through :mod:`fibration_theory.integrations.distributed`, so a
group whose completions sit on several processes is gated as one) or this process only.

Normalisation over an optimizer step (:meth:`FiberGRPOTrainer._normalizer`): ``token-mean``
objectives divide by the generation batch's token count, as TRL's ``dapo`` and ``cispo``
(DAPO's token-level mean), whatever the gradient accumulation and ``steps_per_generation``;
the ``seq-mean-*`` modes take the step's sequence mean (exact mode) or divide each
micro-batch's mean by the accumulation steps (local mode, TRL's rule for ``grpo``, ``sapo``
and ``dr_grpo``).

Conventions. Log-ratios are taken against ``old_per_token_logps`` (TRL computes them when a
generation is reused, ``num_iterations > 1``) or against the detached current log-probs
(on-policy). The gates run in float64. Across processes DDP averages gradients, which
:func:`~fibration_theory.integrations.distributed.compute` accounts for. With ``beta > 0``
TRL's per-token KL estimate is added with the objective's own weights (the step's),
``beta * sum_i mu_i KL_i``, times the token's ratio to the old policy when
``use_bias_correction_kl`` (TRL's default), as TRL computes it. Dr.GRPO's ``norm_length`` defaults to ``max_completion_length``,
TRL's own constant. TRL options that reshape its built-in loss (``loss_type``, ``epsilon``,
``delta``) are not used; the options below are refused with a ``ValueError`` because the
objective would silently ignore them: ``importance_sampling_level="sequence"`` (use ``gspo``),
``top_entropy_quantile < 1``, ``off_policy_mask_threshold``, vLLM importance-sampling
correction, an entropy bonus, and MoE router auxiliary losses.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import distributed, microbatch
from fibration_theory.integrations.microbatch import MICROBATCH_MODES
from fibration_theory.losses.compute import LossOutput
from fibration_theory.losses.registry import get
from fibration_theory.validation import as_ids

Tensor = torch.Tensor

__all__ = ["FiberGRPOConfig", "FiberGRPOTrainer", "load_gguf"]



@dataclasses.dataclass
class FiberGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the objective and where the hierarchy's labels come from."""

    fiber_objective: str = dataclasses.field(
        default="fiberpo", metadata={"help": "name of a registered objective (fibration losses)"})
    fiber_params: dict[str, Any] | str | None = dataclasses.field(
        default=None, metadata={"help": "the objective's hyperparameters, a dict or JSON text"})
    fiber_group_column: str | None = dataclasses.field(
        default=None, metadata={"help": "dataset column of prompt-group labels "
                                        "(default: the GRPO group of each prompt)"})
    fiber_domain_column: str | None = dataclasses.field(
        default=None, metadata={"help": "dataset column of domain labels (default: no domain)"})
    fiber_sync_processes: bool = dataclasses.field(
        default=True, metadata={"help": "gate over the batch of all processes "
                                        "(all-reduced aggregates) rather than per process"})
    fiber_microbatch: str = dataclasses.field(
        default="exact", metadata={"help": "'exact': gate each optimizer step's micro-batches "
                                           "with the whole step's aggregates; 'local': gate "
                                           "each micro-batch on its own rows (approximate)"})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.fiber_params, str):
            try:
                self.fiber_params = json.loads(self.fiber_params)
            except json.JSONDecodeError as exc:
                raise ValueError(f"fiber_params: not valid JSON ({exc})") from None
        params = dict(self.fiber_params or {})
        entry = get(self.fiber_objective)  # ValueError listing the names on a miss
        unknown = sorted(set(params) - set(entry.params))
        if unknown:
            raise ValueError(f"fiber_params: {unknown[0]!r} is not a parameter of "
                             f"{self.fiber_objective!r}; it takes {sorted(entry.params)}")
        _check_values(self.fiber_objective, params)
        self.fiber_params = params
        if self.fiber_microbatch not in MICROBATCH_MODES:
            raise ValueError(f"fiber_microbatch: must be one of {MICROBATCH_MODES}, "
                             f"got {self.fiber_microbatch!r}")
        if (self.fiber_microbatch == "exact"
                and self.steps_per_generation % self.gradient_accumulation_steps):
            raise ValueError(  # noqa: TRY004
                f"steps_per_generation: fiber_microbatch='exact' gathers each optimizer step "
                f"from one generation batch, so steps_per_generation "
                f"({self.steps_per_generation}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}); or use "
                f"fiber_microbatch='local' (approximate)")


def _check_values(objective: str, params: dict[str, Any]) -> None:
    """Validate ``params``' values now rather than at the first loss: the objective's own
    checks run on a one-token batch (so ``delta`` inconsistent with ``c_plus + c_minus`` is
    refused), and FiberPO's ``eps`` must be > 0 (with ``eps = 0`` the fiber term is clipped
    away: every token of a trajectory gets the trajectory's gradient)."""
    if "eps" in get(objective).params and "eps" in params:
        eps = params["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"fiber_params: eps must be a number > 0, got {eps!r} (eps = 0 "
                             f"clips the token-level fiber term away)")
    one = torch.zeros(1, 1, dtype=torch.float64)
    try:
        losses.compute(objective, one, one, one, torch.ones(1, 1, dtype=torch.bool), **params)
    except ValueError as exc:
        raise ValueError(f"fiber_params: {exc}") from None


class FiberGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose policy loss is ``losses.compute(args.fiber_objective, ...)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, FiberGRPOConfig):
            # the project raises ValueError naming the argument for every bad input
            raise ValueError(
                f"args must be a FiberGRPOConfig, got {type(self.args).__name__}")
        self._refuse_unsupported()
        self._fiber_pg = None
        # the current optimizer step's plan: ((buffer id, first micro-batch), plan, tokens)
        self._fiber_plan: tuple[tuple[int, int], microbatch.StepPlan, Tensor] | None = None
        if self.args.fiber_sync_processes and self.accelerator.num_processes > 1:
            # a group of its own keeps the loss's collectives apart from DDP's bucket reductions
            self._fiber_pg = dist.new_group()

    def _refuse_unsupported(self) -> None:
        a = self.args
        if a.fiber_microbatch == "exact" and a.gradient_accumulation_steps > 1:
            model = self.accelerator.unwrap_model(self.model)
            active = [n for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Dropout) and m.p > 0]
            if active or float(getattr(model.config, "attention_dropout", 0) or 0) > 0:
                raise ValueError(
                    f"disable_dropout: fiber_microbatch='exact' reads each micro-batch's "
                    f"log-probs twice (the no-grad pass and the backward), which dropout makes "
                    f"differ ({(active or ['attention_dropout'])[0]}); set disable_dropout=True "
                    f"or use fiber_microbatch='local' (approximate)")
        checks = [
            (a.importance_sampling_level != "token", "importance_sampling_level",
             "sequence-level ratios belong to the objective (use fiber_objective='gspo')"),
            (a.top_entropy_quantile < 1.0, "top_entropy_quantile", "entropy masking"),
            (a.off_policy_mask_threshold is not None, "off_policy_mask_threshold",
             "off-policy sequence masking"),
            (a.use_vllm and a.vllm_importance_sampling_correction,
             "vllm_importance_sampling_correction", "vLLM importance-sampling correction"),
            (getattr(self, "_entropy_bonus_enabled", False), "entropy_coef", "an entropy bonus"),
            (getattr(self, "aux_loss_enabled", False), "router_aux_loss_coef",
             "MoE router auxiliary loss"),
        ]
        for bad, name, what in checks:
            if bad:
                raise ValueError(f"{name}: {what} is not supported by FiberGRPOTrainer, whose "
                                 f"loss is the registered objective alone; leave it at its default")

    # ------------------------------------------------------------------ hierarchy labels
    def _labels(self, inputs: list[dict], column: str | None, kind: str) -> Tensor:
        """``[B]`` long codes of this process's rows, one factorization over all processes."""
        n = len(inputs)
        if column is None:
            mode = "train" if self.model.training else "eval"
            k = self.num_generations if mode == "train" else self.num_generations_eval
            # the RepeatSampler puts each prompt's k completions on consecutive global rows
            start = self.accelerator.process_index * n
            labels: list = [(start + i) // k for i in range(n)]
        else:
            missing = [i for i, x in enumerate(inputs) if column not in x]
            if missing:
                raise ValueError(f"fiber_{kind}_column: the dataset has no column {column!r} "
                                 f"(row keys: {sorted(inputs[missing[0]])})")
            labels = [inputs[i][column] for i in range(n)]
        everyone = gather_object(labels)
        codes = as_ids(everyone, f"{kind}_ids", len(everyone))
        start = self.accelerator.process_index * n
        return codes[start:start + n].to(self.accelerator.device)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["fiber_group_ids"] = self._labels(inputs, self.args.fiber_group_column, "group")
        if self.args.fiber_domain_column is not None:
            output["fiber_domain_ids"] = self._labels(inputs, self.args.fiber_domain_column,
                                                      "domain")
        return output

    # ------------------------------------------------------------------ loss
    def _fiber_params(self) -> dict[str, Any]:
        """``fiber_params`` plus Dr.GRPO's ``norm_length`` default (TRL's constant)."""
        params = dict(self.args.fiber_params)
        entry = get(self.args.fiber_objective)
        if ("norm_length" in entry.params and params.get("norm_length") is None
                and self.max_completion_length):
            params["norm_length"] = float(self.max_completion_length)
        return params

    def fiber_loss(self, log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor,
                   group_ids: Tensor | None = None, domain_ids: Tensor | None = None
                   ) -> LossOutput:
        """The objective on one batch (a micro-batch in local mode), in float64.

        ``log_prob``, ``old_log_prob``, ``advantages``: ``[B, T]``; ``mask``: ``[B, T]`` bool;
        ``group_ids``, ``domain_ids``: ``[B]``. With process sync the returned loss follows
        the DDP convention of :func:`~fibration_theory.integrations.distributed.compute`.
        """
        params = self._fiber_params()
        lp, old, adv = (t.to(torch.float64) for t in (log_prob, old_log_prob, advantages))
        if self._fiber_pg is not None:
            return distributed.compute(self.args.fiber_objective, lp, old, adv, mask,
                                       group_ids=group_ids, domain_ids=domain_ids,
                                       process_group=self._fiber_pg, grad_reduction="mean",
                                       **params)
        h = Hierarchy.from_padded(mask, group_ids=group_ids, domain_ids=domain_ids)
        return losses.compute(self.args.fiber_objective, lp, old, adv, mask, hierarchy=h,
                              **params)

    def _score(self, model, inputs: dict) -> tuple[Tensor, Tensor]:
        """``(per_token_logps [B, T], mask [B, T] bool)`` of one micro-batch: the model's
        log-probs of the completion tokens (TRL's scoring) and the policy's tokens."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        extra = {k: inputs.get(k) for k in (
            "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
            "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids",
            "image_position_ids")}
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1),
            compute_entropy=False, **extra)
        return per_token_logps, _policy_mask(inputs)

    def _step_plan(self, model, inputs: dict, log_prob: Tensor, mode: str
                   ) -> tuple[microbatch.StepPlan, int, Tensor] | None:
        """``(plan, j, tokens)``: the whole optimizer step's plan, this micro-batch's index in
        it and the step's response tokens on this process, or ``None`` when the micro-batch is the objective's whole batch (local mode,
        evaluation, no gradient accumulation).

        The step's micro-batches are the ``gradient_accumulation_steps`` consecutive entries
        of TRL's buffered generation batch that hold this one. The plan is built once per
        step: with TRL's ``old_per_token_logps`` (off-policy) after a no-grad forward of the
        step's other micro-batches (this one's log-probs are ``log_prob``), without them
        (fresh samples: ratio 1 on every token) from zeros and no model pass.
        """
        ga = self.current_gradient_accumulation_steps
        if mode != "train" or self.args.fiber_microbatch == "local" or ga == 1:
            return None
        spg = self.args.steps_per_generation
        if spg % ga:
            raise ValueError(f"steps_per_generation: {spg} is not a multiple of this step's "
                             f"gradient accumulation ({ga}); use fiber_microbatch='local'")
        buffer, i = self._buffered_inputs, self._step % spg
        if buffer is None or inputs is not buffer[i]:
            raise ValueError("inputs: fiber_microbatch='exact' gathers the optimizer step from "
                             "the trainer's buffered generation batch, and this micro-batch is "
                             "not its current entry; use fiber_microbatch='local' to compute a "
                             "micro-batch on its own (approximate)")
        j = i % ga
        key = (id(buffer), self._step - j)
        if self._fiber_plan is not None and self._fiber_plan[0] == key:
            return self._fiber_plan[1], j, self._fiber_plan[2]
        parts = buffer[i - j:i - j + ga]
        masks = [_policy_mask(b) for b in parts]
        advs = [_per_token(b["advantages"], m) for b, m in zip(parts, masks, strict=True)]
        olds = [b.get("old_per_token_logps") for b in parts]
        current = None
        if any(o is not None for o in olds):  # off-policy: the no-grad pass
            with torch.no_grad():
                current = [log_prob.detach() if k == j else self._score(model, b)[0]
                           for k, b in enumerate(parts)]
        else:  # fresh samples: log-ratios 0, no model pass
            olds = [torch.zeros(m.shape, dtype=torch.float64, device=m.device) for m in masks]
        labels = {}
        for kind in ("group", "domain"):
            ids = [b.get(f"fiber_{kind}_ids") for b in parts]
            labels[f"{kind}_ids"] = None if any(x is None for x in ids) else ids
        step = microbatch.plan(self.args.fiber_objective, olds, advs, masks, log_probs=current,
                               process_group=self._fiber_pg, grad_reduction="mean",
                               **labels, **self._fiber_params())
        tokens = sum(m.sum() for m in masks)
        self._fiber_plan = (key, step, tokens)
        for k, value in step.output.metrics.items():
            self._metrics[mode][f"fiber/{k}"].append(value)
        return step, j, tokens

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        per_token_logps, mask = self._score(model, inputs)
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        step = self._step_plan(model, inputs, per_token_logps, mode)
        if step is None:
            adv = _per_token(inputs["advantages"], mask)
            out = self.fiber_loss(per_token_logps, old, adv, mask, inputs.get("fiber_group_ids"),
                                  inputs.get("fiber_domain_ids"))
            loss, weights, tokens = out.loss, out.weights, mask.sum()
            for key, value in out.metrics.items():
                self._metrics[mode][f"fiber/{key}"].append(value)
        else:
            plan, j, tokens = step
            loss, weights = plan.loss(j, per_token_logps), plan.weights(j)
        if self.beta != 0.0:
            # k3 estimate of KL(pi_theta || pi_ref) per token, as TRL; masked before exp so that
            # padding never reaches the gradient as 0 * inf; times the ratio to the old policy
            # (with its gradient) when use_bias_correction_kl, as TRL
            lp64 = per_token_logps.to(torch.float64)
            d = inputs["ref_per_token_logps"].to(torch.float64) - lp64
            d = torch.where(mask, d, torch.zeros_like(d))
            kl = torch.exp(d) - d - 1
            if self.args.use_bias_correction_kl:
                log_ratio = torch.where(mask, lp64 - old.to(torch.float64), torch.zeros_like(d))
                kl = kl * torch.exp(log_ratio)
            scale = self.accelerator.num_processes if self._fiber_pg is not None else 1
            loss = loss + self.beta * scale * (weights * kl).sum()
            self._metrics[mode]["kl"].append(float(kl.detach()[mask].mean()))
        loss = loss * self._normalizer(tokens, inputs, mode, whole_step=step is not None)
        return loss.to(per_token_logps.dtype)

    def _normalizer(self, tokens: Tensor, inputs: dict, mode: str, whole_step: bool) -> float:
        """The factor that makes the summed micro-batch losses one optimizer step's objective.

        ``tokens``: the response tokens of the objective's batch on this process (the
        micro-batch, or with ``whole_step`` the optimizer step's micro-batches).
        ``token-mean`` objectives are normalised by the token count of the whole generation
        batch (``num_items_in_batch``, all processes), TRL's rule for ``dapo``/``cispo``:
        the loss (``mu_i = 1 / T_batch``) is multiplied by ``T_batch / N *
        steps_per_generation / gradient_accumulation_steps`` (``T_batch``: the tokens of the
        objective's batch, all processes; unsynced, this process's times the process count
        that DDP divides by). The other modes are the step's sequence mean already
        (``whole_step``) or divide by the gradient-accumulation steps, TRL's rule for
        ``grpo``, ``sapo`` and ``dr_grpo``.
        """
        params = {**get(self.args.fiber_objective).params, **self.args.fiber_params}
        if params.get("agg") != "token-mean":
            if whole_step or mode != "train":
                return 1.0
            return 1.0 / self.current_gradient_accumulation_steps
        if self._fiber_pg is not None:
            tokens = self.accelerator.gather(tokens.reshape(1)).sum()
        else:
            tokens = tokens * self.accelerator.num_processes
        factor = float(tokens) / float(inputs["num_items_in_batch"].clamp(min=1.0))
        if mode == "train":
            factor *= self.args.steps_per_generation / self.current_gradient_accumulation_steps
        return factor


def _policy_mask(inputs: dict) -> Tensor:
    """``[B, T]`` bool: the completion's tokens that are the policy's (tool outputs inside a
    completion are not)."""
    mask = inputs["completion_mask"].bool()
    if "tool_mask" in inputs:
        mask = mask & inputs["tool_mask"].bool()
    return mask


def _per_token(advantages: Tensor, mask: Tensor) -> Tensor:
    """TRL's ``[B]`` (or ``[B, T]``) advantages as ``[B, T]``."""
    return (advantages[:, None] if advantages.dim() == 1 else advantages).expand(mask.shape)


def load_gguf(path: str, gguf_file: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a GGUF checkpoint, the model a plain float32 one that
    TRL can train.

    ``transformers`` dequantizes GGUF weights to float32 on load but keeps the model marked
    as quantized (``hf_quantizer``, ``config.quantization_config``), so ``Trainer`` refuses it
    as "purely quantized". The weights are copied into a fresh model of the same
    architecture built from the config without its quantization entry; nothing else
    changes.
    """
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file,
                                                  dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise ValueError(f"gguf_file: weights do not fit the rebuilt model (missing "
                         f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    return model, AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
