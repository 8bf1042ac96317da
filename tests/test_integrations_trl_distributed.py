"""FiberGRPOTrainer on 2 CPU processes (accelerate over gloo, DDP) equals one process on the
whole batch: loss and gradient to float64 rounding per step, parameters after two steps.

``tests/trl_multiprocess.py`` trains FiberPO-Domain for two steps on fixed samples (prompt
group ``A`` and domain ``math`` with rows on both processes, domain ``code`` on one), once on
one process and once on two under torchrun, with one micro-batch per step and with two; the
run with ``fiber_sync_processes=False`` (each process gated on its own rows) is checked to
differ, so the test can fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="TRL not installed; pip install 'fibration-theory[trl]'")

import torch

SCRIPT = Path(__file__).with_name("trl_multiprocess.py")
#: float64 model and objective: the processes differ from one by summation order only
TOL = 1e-12
#: parameters after two Adam steps: float32 rounding, the bound the brief of the check sets
PARAM_TOL = torch.finfo(torch.float32).eps
DIFFERENT = 1e-3
TIMEOUT_S = 300


def _run(cmd: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runs(tmp: Path) -> dict:
    """``{(processes, run): [rank0, rank1, ...]}`` of the saved records."""
    one, two = tmp / "one", tmp / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, str(SCRIPT), str(one)], one)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", str(_free_port()), str(SCRIPT), str(two)], two)
    out = {}
    for n, folder in ((1, one), (2, two)):
        for f in sorted(folder.glob("rank*_*.pt")):
            out.setdefault((n, f.stem.split("_", 1)[1]), []).append(
                torch.load(f, weights_only=False))
    return out


def _rel(a: dict, b: dict) -> float:
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def compare(got: list[dict], ref: dict) -> dict:
    """Relative differences of ``got`` (the ranks of one run) to the one-process ``ref``."""
    out = {}
    for s in range(2):
        r = ref["steps"][s]
        out[f"step{s + 1}"] = {
            "loss": abs(got[0]["steps"][s]["loss"] - r["loss"]) / abs(r["loss"]),
            "grad": max(_rel(g["steps"][s]["grads"], r["grads"]) for g in got),
            "shared_groups": len(set.intersection(*(set(g["steps"][s]["groups"])
                                                    for g in got)))}
    out["params"] = max(_rel(g["params"], ref["params"]) for g in got)
    return out


def figures(res: dict) -> dict:
    """Two processes against one (one micro-batch per step), per run."""
    ref = res[(1, "synced")][0]
    return {f"{n} processes, {run}": compare(got, ref) for (n, run), got in res.items()
            if (n, run) != (1, "synced")}


def test_two_processes_equal_one(tmp_path):
    """Property: with a prompt group and a domain on both processes, two processes (DDP over
    gloo) give the one-process loss and gradient to float64 rounding at each step and the
    same parameters after two steps, with one micro-batch per step and with two (exact
    mode: the step is gated whole across processes and micro-batches); gating per process
    does not."""
    res = runs(tmp_path)
    assert [r["world"] for r in res[(2, "synced")]] == [2, 2]
    fig = figures(res)
    for name in ("2 processes, synced", "2 processes, accumulated", "1 processes, accumulated"):
        f = fig[name]
        for s in ("step1", "step2"):
            assert f[s]["loss"] <= TOL and f[s]["grad"] <= TOL, (name, f)
        assert f["params"] <= PARAM_TOL, (name, f)
    for s in ("step1", "step2"):
        assert fig["2 processes, synced"][s]["shared_groups"] > 0, fig
        assert fig["2 processes, accumulated"][s]["shared_groups"] > 0, fig
    # step 2 is off-policy (the gates act): per-process gating differs there
    assert fig["2 processes, unsynced"]["step2"]["grad"] > DIFFERENT, fig


if __name__ == "__main__":  # prints the figures of docs/integrations.md
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for key, value in figures(runs(Path(d))).items():
            print(key, value)
