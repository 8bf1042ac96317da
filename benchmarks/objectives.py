"""Sections of ``fibration bench`` that time the objectives against ``ppo_clip``.

Every step is what a trainer runs per minibatch: ``losses.compute`` (validation, the
objective, its metrics as ``compute`` returns them) and ``loss.backward()``, on a
hierarchy built once per batch (outside the timed step; its build cost is reported apart).
Each candidate is timed against ``ppo_clip`` in the same rounds (see ``harness``).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from fibration_theory.benchmarks import harness, legacy
from fibration_theory.benchmarks.workload import Workload, make_workload

from fibration_theory import fiberpo, losses
from fibration_theory.validation import check_float

BASELINE = "ppo_clip"


@dataclasses.dataclass
class Config:
    """What to run; filled from the command line by ``fibration_theory.benchmarks.run``."""

    device: str
    dtype: torch.dtype
    sizes: list[int]
    fgh_size: int
    fgh_depths: list[int]
    compile_sizes: list[int]
    rounds: dict[int, int]
    budget_s: float
    generic: bool


def _rounds(cfg: Config, slots: int) -> int:
    return cfg.rounds.get(slots, min(cfg.rounds.values()))


def step(w: Workload, name: str, h, *, mode: str = "fused") -> Callable[[], None]:
    """One forward + backward of objective ``name``; ``mode``: ``fused`` (default routing),
    ``generic`` (the closed form, ``fiberpo.fast_path(False)``) or ``compiled``
    (``torch.compile``d kernels)."""

    def run() -> None:
        lp = w.log_prob.detach().requires_grad_(True)
        with fiberpo.fast_path(mode != "generic", compiled=mode == "compiled"):
            out = losses.compute(name, lp, w.old_log_prob, w.advantages, w.mask, hierarchy=h)
        out.loss.backward()

    return run


def _measure(cfg: Config, w: Workload, cands: dict[str, Callable[[], None]], rounds: int,
             budget_s: float, *, memory: bool = True) -> dict[str, dict]:
    cands = dict(cands)
    cands["floor"] = harness.floor_step(w.log_prob, w.old_log_prob, w.advantages, w.mask)
    timing = harness.interleaved(cands, BASELINE, rounds=rounds, device=cfg.device,
                                 budget_s=budget_s)
    floor = timing["floor"].seconds
    nbytes = harness.floor_bytes(w.slots, w.log_prob.dtype)
    out = {"floor_bytes": nbytes, "floor_GBps": nbytes / statistics.median(floor) / 1e9}
    for name, t in timing.items():
        out[name] = {"median_s": t.median, "ratio": t.ratio, "ratio_q1_q3": t.ratio_iqr,
                     "cpu_ratio": t.cpu_ratio, "rounds": len(t.seconds),
                     "x_floor": statistics.median(s / f for s, f in zip(t.seconds, floor)),
                     "ns_per_slot": 1e9 * t.median / w.slots}
    if memory:
        base = harness.peak_bytes(cands[BASELINE], cfg.device)
        for name, fn in cands.items():
            if "[compiled]" in name and not cfg.device.startswith("cuda"):
                # the CPU tracker is a TorchDispatchMode: under it dynamo runs the kernels
                # as plain eager code and keeps that state, so compiled steps go unmeasured
                continue
            peak = base if name == BASELINE else harness.peak_bytes(fn, cfg.device)
            out[name]["peak_bytes"] = peak
            out[name]["peak_ratio"] = peak / base if base else float("nan")
            out[name]["peak_bytes_per_slot"] = peak / w.slots
    return out


def _sized(cfg: Config, sizes: list[int], title: str,
           body: Callable[[int], dict], log: Callable[[str], None]) -> list[dict]:
    """Run ``body(slots)`` for growing sizes while the time budget allows (each size is
    estimated at 10x the previous one's cost)."""
    rows, start, last = [], time.perf_counter(), None
    for slots in sizes:
        spent = time.perf_counter() - start
        if last is not None:
            est = last[1] * slots / last[0]
            if spent + est > cfg.budget_s:
                rows.append({"slots": slots, "skipped": f"estimated {est:.0f} s with "
                             f"{cfg.budget_s - spent:.0f} s of the {cfg.budget_s:.0f} s budget left"})
                log(f"  {title} {slots:.0e} slots: skipped (time budget)")
                continue
        t0 = time.perf_counter()
        rows.append({"slots": slots, **body(slots)})
        last = (slots, time.perf_counter() - t0)
        log(f"  {title} {slots:.0e} slots: {last[1]:.1f} s")
    return rows


def objectives_section(cfg: Config, log: Callable[[str], None]) -> list[dict]:
    """Every registered objective, forward + backward, per padded batch size."""

    def body(slots: int) -> dict:
        w = make_workload(slots, dtype=cfg.dtype, device=cfg.device)
        t0 = time.perf_counter()
        h_traj = w.hierarchy("trajectory")
        t_traj = time.perf_counter() - t0
        t0 = time.perf_counter()
        h_dom = w.hierarchy("domain")
        t_dom = time.perf_counter() - t0
        cands = {name: step(w, name, h_dom if name == "fiberpo_domain" else h_traj)
                 for name in losses.available()}
        if cfg.generic:
            cands["fiberpo [generic]"] = step(w, "fiberpo", h_traj, mode="generic")
            cands["fiberpo_domain [generic]"] = step(w, "fiberpo_domain", h_dom,
                                                     mode="generic")
        res = _measure(cfg, w, cands, _rounds(cfg, slots), cfg.budget_s / 3)
        return {"tokens": w.tokens, "hierarchy_build_s": {"trajectory": t_traj,
                                                          "domain": t_dom}, "results": res}

    return _sized(cfg, cfg.sizes, "objectives", body, log)


def fgh_section(cfg: Config, log: Callable[[str], None]) -> dict:
    """FiberPO-Domain's gate over an FGH of depth 1..8 (Def 6.1), against ppo_clip."""
    w = make_workload(cfg.fgh_size, dtype=cfg.dtype, device=cfg.device)
    cands = {BASELINE: step(w, BASELINE, w.hierarchy())}
    for n in cfg.fgh_depths:
        h = w.hierarchy(f"fgh{n}")
        cands[f"fgh{n}"] = step(w, "fiberpo_domain", h)
        if cfg.generic:
            cands[f"fgh{n} [generic]"] = step(w, "fiberpo_domain", h, mode="generic")
    t0 = time.perf_counter()
    res = _measure(cfg, w, cands, _rounds(cfg, cfg.fgh_size), cfg.budget_s / 3)
    log(f"  fgh depths at {cfg.fgh_size:.0e} slots: {time.perf_counter() - t0:.1f} s")
    out = {"slots": cfg.fgh_size, "tokens": w.tokens, "results": res}
    for tag in ("", " [generic]"):
        pts = [(n, res[f"fgh{n}{tag}"]["ratio"]) for n in cfg.fgh_depths
               if f"fgh{n}{tag}" in res]
        if len(pts) >= 2:
            out[f"per_level{tag.replace(' ', '_')}"] = _slope(pts)
    return out


def _slope(pts: list[tuple[int, float]]) -> dict:
    """Least-squares slope of the ratio per FGH level, and the largest single step."""
    n = [p[0] for p in pts]
    r = [p[1] for p in pts]
    mn, mr = statistics.fmean(n), statistics.fmean(r)
    b = sum((a - mn) * (c - mr) for a, c in zip(n, r)) / sum((a - mn) ** 2 for a in n)
    steps = [(r2 - r1) / (n2 - n1) for (n1, r1), (n2, r2) in itertools.pairwise(pts)]
    return {"slope": b, "max_step": max(steps), "ratio_depth1": r[0], "ratio_deepest": r[-1]}


def compile_section(cfg: Config, log: Callable[[str], None]) -> list[dict]:
    """Speed-up of the ``torch.compile``d kernels over the eager fused ones."""
    rows = []
    for slots in cfg.compile_sizes:
        w = make_workload(slots, dtype=cfg.dtype, device=cfg.device)
        h_traj, h_dom = w.hierarchy("trajectory"), w.hierarchy("domain")
        cands = {BASELINE: step(w, BASELINE, h_traj)}
        first = {}
        for name, h in (("fiberpo", h_traj), ("fiberpo_domain", h_dom)):
            cands[name] = step(w, name, h)
            cands[f"{name} [compiled]"] = step(w, name, h, mode="compiled")
            t0 = time.perf_counter()
            try:
                cands[f"{name} [compiled]"]()
            except Exception as exc:  # noqa: BLE001 -- report why compile is unavailable
                rows.append({"slots": slots, "error": f"{type(exc).__name__}: {exc}"[:300]})
                log(f"  compile unavailable: {rows[-1]['error']}")
                return rows
            first[name] = time.perf_counter() - t0
        res = _measure(cfg, w, cands, _rounds(cfg, slots), cfg.budget_s / 3, memory=True)
        # per-round ratios of eager to compiled, through their ratios to the same baseline
        speedup = {n: res[n]["ratio"] / res[f"{n} [compiled]"]["ratio"]
                   for n in ("fiberpo", "fiberpo_domain")}
        rows.append({"slots": slots, "first_call_s": first, "speedup": speedup, "results": res})
        log(f"  compile {slots:.0e} slots: speed-up {speedup}")
    return rows


def metrics_section(cfg: Config, slots: int, log: Callable[[str], None]) -> dict:
    """Cost of the metrics alone (before and after the rewrite), against a ppo_clip step."""
    w = make_workload(slots, dtype=cfg.dtype, device=cfg.device)
    h = w.hierarchy("domain")
    zero = torch.zeros((), dtype=cfg.dtype, device=cfg.device)
    x = torch.where(w.mask, w.log_prob - w.old_log_prob, zero)
    from fibration_theory.metrics import ratio_metrics

    kw = {"c_plus": 0.12, "c_minus": 0.05, "eps": 0.04}

    def gate(fast: bool, stats: bool) -> Callable[[], None]:
        def run() -> None:  # the plan is built per call, as losses.compute builds it
            plan = fiberpo.gate_plan(h, levels=True, **kw)
            _, reg = fiberpo.gate(x, plan, stats=stats, fast=fast, masked=True)
            if stats:
                reg.metrics()
        return run

    def validation() -> None:
        for t in (w.log_prob, w.old_log_prob, w.advantages):
            check_float(t, "x", tuple(w.mask.shape), w.mask)

    cands = {BASELINE: step(w, BASELINE, w.hierarchy()),
             "compute() input validation (3 x check_float)": validation,
             "ratio_metrics": lambda: ratio_metrics(x, h, masked=True),
             "ratio_metrics [before]": lambda: legacy.ratio_metrics(x, h),
             "fused gate fwd + metrics": gate(True, True),
             "fused gate fwd, no metrics": gate(True, False),
             "generic gate fwd + metrics": gate(False, True)}
    t0 = time.perf_counter()
    res = _measure(cfg, w, cands, _rounds(cfg, slots), cfg.budget_s / 6, memory=False)
    log(f"  metrics at {slots:.0e} slots: {time.perf_counter() - t0:.1f} s")
    return {"slots": slots, "results": res}
