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
``per_device_train_batch_size`` rows after a shuffle; the objective's batch is one micro-batch
on all processes (``fiber_sync_processes=True``, through
:mod:`fibration_theory.integrations.distributed`, so a group whose completions sit on several
processes is gated as one) or on this process only. A group split across micro-batches is
gated per micro-batch; for group- and domain-level gates on whole groups use
``steps_per_generation=1`` (one micro-batch per generation batch).

Normalisation over an optimizer step (:meth:`FiberGRPOTrainer._normalizer`): ``token-mean``
objectives divide by the generation batch's token count, as TRL's ``dapo`` and ``cispo``
(DAPO's token-level mean), whatever the gradient accumulation and ``steps_per_generation``;
the ``seq-mean-*`` modes divide each micro-batch's mean by the accumulation steps, as TRL's
``grpo``, ``sapo`` and ``dr_grpo``.

Conventions. Log-ratios are taken against ``old_per_token_logps`` (TRL computes them when a
generation is reused, ``num_iterations > 1``) or against the detached current log-probs
(on-policy). The gates run in float64. Across processes DDP averages gradients, which
:func:`~fibration_theory.integrations.distributed.compute` accounts for. With ``beta > 0``
TRL's per-token KL estimate is added with the objective's own weights,
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
from fibration_theory.integrations import distributed
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
        default=True, metadata={"help": "gate over the micro-batch of all processes "
                                        "(all-reduced aggregates) rather than per process"})

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
            raise ValueError(  # noqa: TRY004
                f"args must be a FiberGRPOConfig, got {type(self.args).__name__}")
        self._refuse_unsupported()
        self._fiber_pg = None
        if self.args.fiber_sync_processes and self.accelerator.num_processes > 1:
            # a group of its own keeps the loss's collectives apart from DDP's bucket reductions
            self._fiber_pg = dist.new_group()

    def _refuse_unsupported(self) -> None:
        a = self.args
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
    def fiber_loss(self, log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor,
                   group_ids: Tensor | None = None, domain_ids: Tensor | None = None
                   ) -> LossOutput:
        """The objective on one micro-batch, in float64.

        ``log_prob``, ``old_log_prob``, ``advantages``: ``[B, T]``; ``mask``: ``[B, T]`` bool;
        ``group_ids``, ``domain_ids``: ``[B]``. With process sync the returned loss follows
        the DDP convention of :func:`~fibration_theory.integrations.distributed.compute`.
        """
        params = dict(self.args.fiber_params)
        entry = get(self.args.fiber_objective)
        if ("norm_length" in entry.params and params.get("norm_length") is None
                and self.max_completion_length):
            params["norm_length"] = float(self.max_completion_length)
        lp, old, adv = (t.to(torch.float64) for t in (log_prob, old_log_prob, advantages))
        if self._fiber_pg is not None:
            return distributed.compute(self.args.fiber_objective, lp, old, adv, mask,
                                       group_ids=group_ids, domain_ids=domain_ids,
                                       process_group=self._fiber_pg, grad_reduction="mean",
                                       **params)
        h = Hierarchy.from_padded(mask, group_ids=group_ids, domain_ids=domain_ids)
        return losses.compute(self.args.fiber_objective, lp, old, adv, mask, hierarchy=h,
                              **params)

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask.bool()
        if "tool_mask" in inputs:  # tool outputs inside a completion are not the policy's
            mask = mask & inputs["tool_mask"].bool()
        extra = {k: inputs.get(k) for k in (
            "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
            "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids",
            "image_position_ids")}
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=False,
            **extra)
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        adv = inputs["advantages"]
        adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(per_token_logps)
        out = self.fiber_loss(per_token_logps, old, adv, mask, inputs.get("fiber_group_ids"),
                              inputs.get("fiber_domain_ids"))
        loss = out.loss
        mode = "train" if self.model.training else "eval"
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
            loss = loss + self.beta * scale * (out.weights * kl).sum()
            self._metrics[mode]["kl"].append(float(kl.detach()[mask].mean()))
        loss = loss * self._normalizer(mask, inputs, mode)
        for key, value in out.metrics.items():
            self._metrics[mode][f"fiber/{key}"].append(value)
        return loss.to(per_token_logps.dtype)

    def _normalizer(self, mask: Tensor, inputs: dict, mode: str) -> float:
        """The factor that makes the summed micro-batch losses one optimizer step's objective.

        ``token-mean`` objectives are normalised by the token count of the whole generation
        batch (``num_items_in_batch``, all processes), TRL's rule for ``dapo``/``cispo``:
        the micro-batch loss (``mu_i = 1 / T_batch``) is multiplied by ``T_batch / N *
        steps_per_generation / gradient_accumulation_steps`` (``T_batch``: the tokens of the
        objective's batch; per process, times the process count that DDP divides by). The
        other modes divide by the gradient-accumulation steps, TRL's rule for ``grpo``,
        ``sapo`` and ``dr_grpo``.
        """
        params = {**get(self.args.fiber_objective).params, **self.args.fiber_params}
        if params.get("agg") != "token-mean":
            return 1.0 / self.current_gradient_accumulation_steps if mode == "train" else 1.0
        tokens = mask.sum()
        if self._fiber_pg is not None:
            tokens = self.accelerator.gather(tokens[None]).sum()
        else:
            tokens = tokens * self.accelerator.num_processes
        factor = float(tokens) / float(inputs["num_items_in_batch"].clamp(min=1.0))
        if mode == "train":
            factor *= self.args.steps_per_generation / self.current_gradient_accumulation_steps
        return factor


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
