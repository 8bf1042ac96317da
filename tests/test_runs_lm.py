"""LM runs that survive: the warm start checkpoints and resumes to the same model, a
checkpoint that does not load is set aside and its run restarts, the plan stores
folder-relative paths, and the warm start follows ``--threads``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the lm extra (transformers) is not installed")

from fibration_theory.simulations.lm import cli as lm_cli
from fibration_theory.simulations.lm import models
from fibration_theory.simulations.lm import rl as lm_rl
from fibration_theory.simulations.lm import warmstart as ws
from fibration_theory.simulations.lm.tasks import TaskSet

from fibration_theory import cli
from fibration_theory.outputs import SetAsideWarning

TINY = models.TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=24)
#: a band no tiny model reaches, so training runs all ``max_steps``
WARM = ws.WarmStartConfig(model=TINY, tasks=TaskSet(("count",)), max_steps=6, check_every=2,
                          check_per_domain=2, batch_size=4, band=(1.1, 1.2))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    model, _ = ws.load_warm_start(folder)
    return model.state_dict()


def _count_steps(monkeypatch) -> list[int]:
    steps: list[int] = []
    real = ws._sft_loss

    def counted(*a, **k):
        steps.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ws, "_sft_loss", counted)
    return steps


def test_a_killed_warm_start_resumes_from_its_checkpoint_to_the_same_model(tmp_path,
                                                                          monkeypatch):
    whole = _weights(ws.ensure_warm_start(WARM, tmp_path / "whole", progress=False))
    assert not (tmp_path / "whole" / "warmstart.ckpt").exists()  # removed once finished
    steps = _count_steps(monkeypatch)
    real_eval = ws.evaluate
    checks: list[int] = []

    def killed_at_the_second_check(*a, **k):
        checks.append(1)
        if len(checks) == 2:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(ws, "evaluate", killed_at_the_second_check)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        ws.ensure_warm_start(WARM, out, progress=False)
    assert (out / "warmstart.ckpt").exists() and not (out / "warmstart").exists()
    monkeypatch.setattr(ws, "evaluate", real_eval)
    steps.clear()
    folder = ws.ensure_warm_start(WARM, out, progress=False)
    assert len(steps) == WARM.max_steps - WARM.check_every  # continued after step 2
    resumed = _weights(folder)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not (out / "warmstart.ckpt").exists()


def test_a_warm_start_checkpoint_that_does_not_load_is_set_aside(tmp_path, monkeypatch):
    (tmp_path / "warmstart.ckpt").write_bytes(b"PK\x03\x04 truncated")
    steps = _count_steps(monkeypatch)
    with pytest.warns(SetAsideWarning, match="warmstart.ckpt"):
        ws.ensure_warm_start(WARM, tmp_path, progress=False)
    assert len(steps) == WARM.max_steps  # trained from the start
    assert (tmp_path / "warmstart.ckpt.corrupt").exists()


def test_a_run_checkpoint_that_does_not_load_is_set_aside_and_the_run_restarts(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    rng, gen = __import__("numpy").random.default_rng(0), torch.Generator()
    path = tmp_path / "checkpoints" / "fiberpo-quick-seed0.pt"
    path.parent.mkdir()
    path.write_bytes(b"half a checkpoint")
    with pytest.warns(SetAsideWarning, match="the run restarts"):
        assert lm_rl._load_checkpoint(path, model, opt, rng, gen, {"id": 1}) is None
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    lm_rl._save_checkpoint(path, model, opt, rng, gen, identity={"id": 1}, update=3)
    assert lm_rl._load_checkpoint(path, model, opt, rng, gen, {"id": 1})["update"] == 3


def test_the_plan_stores_folder_relative_paths_and_runs_get_them_resolved(tmp_path):
    plan = lm_cli.make_plan(quick=True, device="cpu", model=None, out=tmp_path / "res")
    assert plan.rl.source == "warm:warmstart" and plan.rl.checkpoint_dir == "checkpoints"
    at = plan.rl.at(tmp_path / "res")
    assert at.source == f"warm:{tmp_path / 'res' / 'warmstart'}"
    assert at.checkpoint_dir == str(tmp_path / "res" / "checkpoints")
    pre = lm_cli.make_plan(quick=True, device="cpu", model="ckpt/m.gguf", out=tmp_path)
    assert pre.rl.at(tmp_path).source == "model:ckpt/m.gguf"  # the user's path, untouched


def test_another_model_size_gets_its_own_warm_start_and_leaves_the_default_one(tmp_path,
                                                                              monkeypatch):
    """--n-layer/--n-embd: the plan's runs start from ``warmstart-L<n>-d<m>``; training it
    leaves the default size's warm start (and so that plan's resumable runs) untouched."""
    plan = lm_cli.make_plan(quick=True, device="cpu", model=None, out=tmp_path,
                            settings={"n_layer": 2, "n_embd": 32})
    assert plan.rl.source == "warm:warmstart-L2-d32" and plan.name.endswith("-L2-d32")
    default = ws.ensure_warm_start(WARM, tmp_path, progress=False)
    before = _weights(default)
    steps = _count_steps(monkeypatch)
    small = dataclasses.replace(WARM, model=dataclasses.replace(WARM.model, n_layer=2))
    other = ws.ensure_warm_start(small, tmp_path, progress=False, name="warmstart-L2-d32")
    assert other == tmp_path / "warmstart-L2-d32" and len(steps) == WARM.max_steps
    after = _weights(default)
    assert all(torch.equal(before[k], after[k]) for k in before)
    steps.clear()
    assert ws.ensure_warm_start(WARM, tmp_path, progress=False) == default and not steps


def test_thread_plan_shares_the_threads_between_warm_start_and_workers():
    assert lm_cli.thread_plan(4, 2) == (4, 2)
    assert lm_cli.thread_plan(1, 2) == (1, 1)
    assert lm_cli.thread_plan(3, 1) == (3, 3)
    with pytest.raises(ValueError, match="threads"):
        lm_cli.thread_plan(0, 1)


def test_the_warm_start_follows_threads_and_a_stop_says_what_was_kept(tmp_path, monkeypatch,
                                                                      capsys):
    seen: list[int] = []

    def stopped_warm_start(cfg, out, device, progress, name):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    real_plan = lm_cli.make_plan
    monkeypatch.setattr(lm_cli, "make_plan", lambda **kw: dataclasses.replace(
        real_plan(**kw), warm=WARM))
    monkeypatch.setattr(ws, "ensure_warm_start", stopped_warm_start)
    before = torch.get_num_threads()
    try:
        out = tmp_path / "lm"
        assert cli.main(["lm", "--quick", "--threads", "1", "--no-progress", "--out",
                         str(out)]) == 128 + 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"fibration lm: stopped by SIGINT; kept 0 finished run files, 0 run "
                    f"checkpoints under {out}; the same command resumes from them")]
    with pytest.raises(SystemExit, match="threads"):
        cli.main(["lm", "--quick", "--threads", "0", "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
