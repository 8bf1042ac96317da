"""FiberGRPOTrainer on 2 CPU processes (accelerate over gloo, DDP) equals one process on the
whole batch: loss and gradient to float64 rounding per step, parameters after two steps.

``tests/trl_multiprocess.py`` trains FiberPO-Domain for two steps on fixed samples (prompt
group ``A`` and domain ``math`` with rows on both processes, domain ``code`` on one), once on
one process and once on two under torchrun; the run with ``fiber_sync_processes=False`` (each
process gated on its own rows) is checked to differ, so the test can fail.
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
    """``{"one": rank0, "two": [rank0, rank1], "unsynced": [...]}`` of the saved records."""
    one, two = tmp / "one", tmp / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, str(SCRIPT), str(one)], one)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", str(_free_port()), str(SCRIPT), str(two)], two)
    load = lambda p: torch.load(p, weights_only=False)
    return {"one": load(one / "rank0.pt"),
            "two": [load(two / f"rank{r}.pt") for r in range(2)],
            "unsynced": [load(two / f"rank{r}_unsynced.pt") for r in range(2)]}


def _rel(a: dict, b: dict) -> float:
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def figures(res: dict) -> dict:
    one, two, unsynced = res["one"], res["two"], res["unsynced"]
    out = {}
    for s in range(2):
        ref = one["steps"][s]
        out[f"step{s + 1}"] = {
            "loss": abs(two[0]["steps"][s]["loss"] - ref["loss"]) / abs(ref["loss"]),
            "grad": _rel(two[0]["steps"][s]["grads"], ref["grads"]),
            "grad_unsynced": _rel(unsynced[0]["steps"][s]["grads"], ref["grads"]),
            "shared_groups": len(set(two[0]["steps"][s]["groups"])
                                 & set(two[1]["steps"][s]["groups"]))}
    out["params"] = max(_rel(r["params"], one["params"]) for r in two)
    out["params_unsynced"] = _rel(unsynced[0]["params"], one["params"])
    return out


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """Property: with a prompt group and a domain on both processes, two processes (DDP over
    gloo) give the one-process loss and gradient to float64 rounding at each step and the
    same parameters after two steps; gating per process does not."""
    res = runs(tmp_path)
    assert res["one"]["world"] == 1 and res["two"][0]["world"] == 2
    fig = figures(res)
    for s in ("step1", "step2"):
        assert fig[s]["shared_groups"] > 0, fig
        assert fig[s]["loss"] <= TOL and fig[s]["grad"] <= TOL, fig
    assert fig["params"] <= PARAM_TOL, fig
    # step 2 is off-policy (the gates act): per-process gating differs there
    assert fig["step2"]["grad_unsynced"] > DIFFERENT, fig


if __name__ == "__main__":  # prints the figures of docs/integrations.md
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(figures(runs(Path(d))))
