"""What ``fibration reproduce`` runs: the job lists of every experiment, quick and full.

Protocol (:mod:`fibration_theory.simulations.protocol`, shared with ``fibration lm``): every
method of the sequence study tunes each of its parameters separately, on the same number of
configurations (``Plan.tune_configs``, :mod:`fibration_theory.simulations.tuning`) and the
same *tuning* seeds; the configuration with the best mean success AUC is then run on fresh
*evaluation* seeds, which are disjoint from the tuning seeds. The exact-settings experiment
compares methods at one matched budget (the budget is the object of study there, so it is not
tuned); the Claim 3.5 sweep runs GSPO over its ``eps`` grid; the depth study reuses
FiberPO-Domain's tuned configuration.

``--quick`` keeps every run's configuration and the tuning design (16 configurations per
method) and cuts the number of seeds only, so a quick result is a noisier estimate of the
same quantity as the full one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fibration_theory.simulations import methods as mt
from fibration_theory.simulations import protocol as pr
from fibration_theory.simulations.depth import CHAINS, DepthConfig
from fibration_theory.simulations.exact_settings import METHODS as EXACT_METHODS
from fibration_theory.simulations.exact_settings import ExactConfig
from fibration_theory.simulations.gspo_tv import EPS_GRID, LR_GRID, GspoTvConfig
from fibration_theory.simulations.protocol import (  # noqa: F401 - the protocol's names
    TUNE_SEED0,
    Config,
    factor_name,
    factors_of,
    params_of,
)
from fibration_theory.simulations.runner import RunSpec, load_runs
from fibration_theory.simulations.settings import Setting, suffix
from fibration_theory.simulations.token_efficiency import SeqConfig

Job = tuple[RunSpec, Any]

#: the exact-settings variants: (environment, gamma)
EXACT_VARIANTS: tuple[tuple[str, float], ...] = (
    ("bandit", 0.9), ("mdp", 0.9), ("mdp", 0.99), ("mdp", 0.999))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Seeds and configurations of one reproduction."""

    #: evaluation seeds of the sequence and depth studies
    eval_seeds: int
    #: tuning seeds per configuration
    tune_seeds: int
    #: seeds of the exact-settings experiment
    exact_seeds: int
    #: seeds per ``eps`` of the Claim 3.5 sweep
    gspo_seeds: int
    #: the sequence-study run
    seq: SeqConfig = dataclasses.field(default_factory=SeqConfig)
    #: the exact-settings run (``env`` and ``gamma`` replaced per variant)
    exact: ExactConfig = dataclasses.field(default_factory=ExactConfig)
    #: the Claim 3.5 run
    gspo: GspoTvConfig = dataclasses.field(default_factory=GspoTvConfig)
    #: tuning configurations per method (``L**2``: see :mod:`.tuning`)
    tune_configs: int = 16
    #: suffix of the sequence and depth runs' variant names (``-lr0.1``: settings other than
    #: the plan's, :data:`SETTINGS`), so they are kept apart from the plan's own runs
    tag: str = ""

    def __post_init__(self) -> None:
        for name in ("eval_seeds", "exact_seeds", "gspo_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tune_seeds < 0:
            raise ValueError(f"tune_seeds must be >= 0, got {self.tune_seeds}")
        from fibration_theory.simulations.tuning import side

        side(self.tune_configs)

    @classmethod
    def quick(cls) -> Plan:
        return cls(eval_seeds=5, tune_seeds=1, exact_seeds=5, gspo_seeds=5, tune_configs=16)

    @classmethod
    def full(cls) -> Plan:
        return cls(eval_seeds=30, tune_seeds=2, exact_seeds=20, gspo_seeds=10, tune_configs=16)


#: what ``fibration reproduce`` lets a flag or ``--config`` file set (the sequence run's
#: settings, then the plan's seeds and tuning size)
SETTINGS: tuple[Setting, ...] = (
    Setting("lr", float, "Adam learning rate on the logits table", "lr", 0),
    Setting("group_size", int, "completions per prompt (the group)", "g", 2),
    Setting("prompts_per_batch", int, "prompts per batch", "p"),
    Setting("epochs", int, "passes over each sampled batch", "e"),
    Setting("minibatches", int, "minibatches per pass", "m"),
    Setting("token_budget", int, "sampled tokens per run", "t"),
    Setting("eval_seeds", int, "evaluation seeds"),
    Setting("tune_seeds", int, "tuning seeds per configuration"),
    Setting("tune_configs", int, "tuning configurations per method (4, 9, 16, 25 or 49)"),
)
_SEQ_KEYS = ("lr", "group_size", "prompts_per_batch", "epochs", "minibatches", "token_budget")


def with_settings(plan: Plan, values: dict[str, Any]) -> Plan:
    """``plan`` with ``values`` (checked keys of :data:`SETTINGS`); a setting of the runs
    themselves adds its tag to ``plan.tag`` (``-lr0.1``)."""
    seq = {k: v for k, v in values.items() if k in _SEQ_KEYS}
    rest = {k: v for k, v in values.items() if k not in _SEQ_KEYS}
    return dataclasses.replace(plan, seq=dataclasses.replace(plan.seq, **seq), **rest,
                               tag=plan.tag + suffix(seq, SETTINGS))


def study(plan: Plan, method_names: Sequence[str] | None = None) -> pr.Study:
    """The sequence study's part of the protocol: its methods, each on its tuning design,
    scored by the success AUC of each tuning run; a configuration's variant is its name."""
    names = tuple(mt.all_methods()) if method_names is None else tuple(method_names)
    depth = len(plan.seq.levels)

    def job(method: str, config: Config, role: str, seed: int) -> Job:
        spec = RunSpec("sequence", method, config.name + plan.tag, role, seed,
                       params_of(method, config.as_dict, depth))
        return spec, plan.seq

    return pr.Study(metric="auc_success", methods=names, n_configs=plan.tune_configs,
                    tune_seeds=pr.tuning_seeds(plan.tune_seeds),
                    method_of=lambda m: mt.all_methods()[m], job=job,
                    variant=lambda c: c.name + plan.tag,
                    runs=lambda out, role: load_runs(out, "sequence", role=role))


def tuning_jobs(plan: Plan, method_names: Sequence[str] | None = None) -> list[Job]:
    """Every method x configuration of its design x tuning seed of the sequence study."""
    return pr.tuning_jobs(study(plan, method_names))


def edge_jobs(plan: Plan, tuning: dict[str, dict[str, Any]]) -> list[Job]:
    """For every chosen factor on the edge of its parameter's range, the two factors beyond
    it, on the tuning seeds (role ``edge``): does the score keep rising past the range?"""
    return pr.edge_jobs(study(plan, tuple(tuning)), tuning)


def eval_jobs(plan: Plan, tuning: dict[str, dict[str, Any]],
              experiments: Sequence[str]) -> list[Job]:
    """Evaluation runs of every experiment in ``experiments``; the sequence study runs every
    method of ``tuning`` at its chosen configuration (``variant``, ``factors``)."""
    jobs: list[Job] = []
    if "exact" in experiments:
        for env, gamma in EXACT_VARIANTS:
            cfg = dataclasses.replace(plan.exact, env=env, gamma=gamma)
            for m in EXACT_METHODS:
                for seed in range(plan.exact_seeds):
                    jobs.append((RunSpec("exact", m, f"{env}-g{gamma:g}", "eval", seed), cfg))
    if "sequence" in experiments:
        depth = len(plan.seq.levels)
        for name, choice in sorted(tuning.items()):
            params = params_of(name, choice["factors"], depth)
            for seed in range(plan.eval_seeds):
                jobs.append((RunSpec("sequence", name, choice["variant"], "eval", seed, params),
                             plan.seq))
    if "gspo_tv" in experiments:
        for lr in LR_GRID:
            cfg = dataclasses.replace(plan.gspo, seq=dataclasses.replace(plan.gspo.seq, lr=lr))
            for eps in EPS_GRID:
                for seed in range(plan.gspo_seeds):
                    spec = RunSpec("gspo_tv", f"gspo-lr{lr:g}", f"eps{eps:g}", "eval", seed,
                                   (("eps", eps),))
                    jobs.append((spec, cfg))
    if "depth" in experiments:
        f = factors_of(tuning, "fiberpo_domain")
        variant = tuning.get("fiberpo_domain", {}).get("variant") or Config(
            tuple((p, 1.0) for p in mt.all_methods()["fiberpo_domain"].tuned)).name + plan.tag
        for d in CHAINS:
            params = params_of("fiberpo_domain", f, d)
            cfg = DepthConfig(seq=plan.seq, depth=d)
            for seed in range(plan.eval_seeds):
                jobs.append((RunSpec("depth", f"depth{d}", variant, "eval", seed, params), cfg))
    return jobs


def current(runs: list[dict[str, Any]], tag: str, tuning: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """The sequence or depth runs of the plan with ``tag`` at the configurations ``tuning``
    chose (a results folder may also hold runs of other settings or of an earlier choice)."""
    def keep(r: dict[str, Any]) -> bool:
        v, m = r["spec"]["variant"], r["spec"]["method"]
        if (("-" + v.split("-", 1)[1]) if "-" in v else "") != tag:
            return False
        owner = "fiberpo_domain" if r["spec"]["experiment"] == "depth" else m
        return owner not in tuning or v == tuning[owner]["variant"]
    return [r for r in runs if keep(r)]
