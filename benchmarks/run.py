"""``fibration bench``: time every objective against ppo_clip, and the exact solvers.

    fibration bench --quick                      # about 20 s on 2 CPU cores
    fibration bench --json out/bench.json        # full run, about 3 min (time-budgeted sizes)
    fibration bench --device cuda                # on a GPU, when one exists

Tables go to the screen; ``--json`` keeps every figure with the machine description,
``--markdown`` writes the same tables as Markdown (what docs/performance.md quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from fibration_theory.atomic import write_text

QUICK = {"sizes": [10_000, 100_000, 1_000_000], "fgh_size": 100_000, "compile_sizes": [],
         "rounds": {10_000: 41, 100_000: 21, 1_000_000: 7}, "budget_s": 75.0,
         "solver_sizes": [100, 1_000, 10_000], "solver_budget_s": 30.0}
FULL = {"sizes": [10_000, 100_000, 1_000_000, 10_000_000], "fgh_size": 1_000_000,
        "compile_sizes": [100_000, 1_000_000],
        "rounds": {10_000: 41, 100_000: 21, 1_000_000: 11, 10_000_000: 5}, "budget_s": 900.0,
        "solver_sizes": [100, 1_000, 10_000, 100_000], "solver_budget_s": 600.0}
SECTIONS = ("objectives", "fgh", "metrics", "compile", "solvers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--quick", action="store_true",
                        help="10^4 to 10^6 slots, fewer rounds, no torch.compile (about 20 s "
                             "on 2 cores; at most about 2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--budget", type=float, metavar="S",
                        help="seconds for the objective sections (sizes that would overrun "
                             "are skipped and reported; default 75 quick, 900 full)")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads (default 1 on cpu: on a shared machine "
                             "two OpenMP threads stall at every barrier a busy core delays)")
    parser.add_argument("--sizes", help="comma-separated padded batch sizes (slots), multiples "
                                        "of 1000, e.g. 1e4,1e5 (default: the preset's); the "
                                        "FGH and metrics sections use at most the largest")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="measure the torch.compile path (default: on unless --quick)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-generic", dest="generic", action="store_false",
                        help="skip the generic (pre-fast-path) reference rows")


def machine(device: str) -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device,
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> int:
    import torch
    from fibration_theory.benchmarks import objectives as ob
    from fibration_theory.benchmarks import report
    from fibration_theory.benchmarks.solvers import solvers_section

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    preset = QUICK if args.quick else FULL
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"--sections: unknown {unknown}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    budget = args.budget if args.budget is not None else preset["budget_s"]
    use_compile = (not args.quick) if args.compile is None else args.compile
    if use_compile and "compile" in sections and "torch._inductor.config" not in sys.modules:
        # a fresh inductor cache, so that the first call's time is a cold compile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="fibration-bench-")
    sizes, fgh_size = preset["sizes"], preset["fgh_size"]
    if args.sizes:
        sizes = sorted(int(float(v)) for v in args.sizes.split(","))
        fgh_size = min(fgh_size, sizes[-1])
    cfg = ob.Config(device=args.device, dtype=getattr(torch, args.dtype),
                    sizes=sizes, fgh_size=fgh_size,
                    fgh_depths=list(range(1, 9)),
                    compile_sizes=preset["compile_sizes"] if use_compile else [],
                    rounds=preset["rounds"], budget_s=budget, generic=args.generic)
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result: dict = {"command": "fibration bench " + " ".join(sys.argv[2:]),
                    "machine": machine(args.device), "dtype": args.dtype, "quick": args.quick,
                    "budget_s": budget}
    log(f"fibration bench on {result['machine']['cpu']} ({result['machine']['cores']} cores, "
        f"{result['machine']['torch_threads']} torch threads), {args.device}, {args.dtype}")
    t0 = time.perf_counter()
    text: list[str] = []
    if "objectives" in sections:
        result["objectives"] = ob.objectives_section(cfg, log)
        text.append(report.objectives_tables(result["objectives"]))
    if "fgh" in sections:
        result["fgh"] = ob.fgh_section(cfg, log)
        text.append(report.fgh_table(result["fgh"]))
    if "metrics" in sections:
        result["metrics"] = ob.metrics_section(cfg, fgh_size, log)
        text.append(report.metrics_table(result["metrics"]))
    if "compile" in sections and cfg.compile_sizes:
        result["compile"] = ob.compile_section(cfg, log)
        text.append(report.compile_table(result["compile"]))
    elif "compile" in sections:
        text.append("torch.compile path: not measured (--quick; pass --compile to measure)")
    if "solvers" in sections:
        result["solvers"] = solvers_section(preset["solver_sizes"], preset["solver_budget_s"],
                                            log)
        text.append("Closed-form trust-region solvers against cvxpy\n\n"
                    + report.solvers_table(result["solvers"]))
    result["wall_s"] = time.perf_counter() - t0
    result["targets"] = [{"target": t, "met": ok, "measured": m}
                         for t, ok, m in report.targets(result)]
    text.append("Targets\n\n" + report.targets_table(result))
    print("\n\n".join(text))
    print(f"\nwall time {result['wall_s']:.0f} s; load average at start "
          f"{result['machine']['load_average_at_start']}")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1, default=str))
    if args.markdown:
        _write_markdown(args.markdown, result, sections)
    return 0


def _write_markdown(path: str, result: dict, sections: list[str]) -> None:
    from fibration_theory.benchmarks import report

    parts = [f"Command: `{result['command']}`; machine: {result['machine']}"]
    if "objectives" in result:
        parts.append(report.objectives_tables(result["objectives"], markdown=True))
    if "fgh" in result:
        parts.append(report.fgh_table(result["fgh"], markdown=True))
    if "metrics" in result:
        parts.append(report.metrics_table(result["metrics"], markdown=True))
    if "compile" in result:
        parts.append(report.compile_table(result["compile"], markdown=True))
    if "solvers" in result:
        parts.append(report.solvers_table(result["solvers"], markdown=True))
    parts.append(report.targets_table(result, markdown=True))
    write_text(path, "\n\n".join(parts) + "\n")
