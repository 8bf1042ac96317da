"""Small-LM study with a model: KV-cache sampling, the batch hierarchy, one RL step,
checkpoint resume, the warm start and the command's errors (tiny models, CPU, seconds)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the lm extra (transformers) is not installed")

from fibration_theory.simulations.lm import models, sampling
from fibration_theory.simulations.lm import rl as lm_rl
from fibration_theory.simulations.lm.cli import jobs, make_plan
from fibration_theory.simulations.lm.codec import CharCodec
from fibration_theory.simulations.lm.tasks import TaskSet
from fibration_theory.simulations.lm.warmstart import WarmStartConfig, ensure_warm_start
from fibration_theory.simulations.methods import all_methods

from fibration_theory import losses

CODEC = CharCodec()
TASKS = TaskSet(("add", "sort", "count"))
TINY = models.TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=24)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return models.build_tiny(TINY, CODEC.vocab_size, CODEC.pad_id, CODEC.eos_id, 3).eval()


def _rollout(model, n_per_domain=2, group=3, seed=0):
    problems = TASKS.draw(np.random.default_rng(seed), n_per_domain, "train")
    gid = torch.arange(len(problems)).repeat_interleave(group)
    gen = torch.Generator().manual_seed(seed)
    prompts = [CODEC.encode(TASKS.prompt(problems[int(g)])) for g in gid]
    ro = sampling.sample(model, prompts, max_new=6, stop_ids=CODEC.stop_ids, pad_id=CODEC.pad_id,
                         generator=gen)
    return problems, gid, ro


def test_kv_cache_sampling_matches_a_full_forward_pass(model):
    _, _, ro = _rollout(model)
    assert len({int(m) for m in ro.prompt_mask.sum(1)}) > 1  # prompts of several lengths
    lp, ent = sampling.token_log_probs(model, ro.prompt, ro.prompt_mask, ro.tokens, ro.mask,
                                       with_entropy=True)
    assert torch.allclose(lp, ro.log_prob.double(), atol=2e-5)
    assert bool((ent[ro.mask] > 0).all()) and bool((ent[~ro.mask] == 0).all())
    # the response mask is a prefix of each row and ends at the first stop token
    for toks, m in zip(ro.tokens.tolist(), ro.mask.tolist()):
        n = sum(m)
        assert m == [True] * n + [False] * (len(m) - n)
        stops = [i for i, t in enumerate(toks[:n]) if t in CODEC.stop_ids]
        assert stops in ([], [n - 1])
        assert stops or n == ro.tokens.shape[1]
    # a prompt gives the same log-probabilities whatever the padding of its batch
    alone = sampling.token_log_probs(model, ro.prompt[:1, -int(ro.prompt_mask[0].sum()):],
                                     ro.prompt_mask[:1, -int(ro.prompt_mask[0].sum()):],
                                     ro.tokens[:1], ro.mask[:1])[0]
    assert torch.allclose(alone, lp[:1], atol=2e-5)


def test_sampling_is_reproducible_from_the_generator(model):
    a, b = _rollout(model, seed=4)[2], _rollout(model, seed=4)[2]
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    with pytest.raises(ValueError, match="max_new"):
        sampling.sample(model, [[2]], max_new=0, stop_ids=CODEC.stop_ids, pad_id=0,
                        generator=torch.Generator())
    with pytest.raises(ValueError, match="seqs"):
        sampling.left_pad([[2], []], 0)


def test_a_sampled_batch_maps_onto_the_four_level_hierarchy(model):
    problems, gid, ro = _rollout(model, n_per_domain=2, group=3)
    h = lm_rl.batch_hierarchy(problems, gid, ro.mask)
    assert [lv.name for lv in h.levels] == ["domain", "group"]
    dom, grp = h.level("domain"), h.level("group")
    assert dom.n == 3 and grp.n == 6
    # every group lies in the domain of its prompt, and holds its group_size trajectories
    for g in range(6):
        rows = (gid == g).nonzero()[:, 0]
        assert {int(dom.ids[r]) for r in rows} == {problems[g].domain}
        assert len({int(grp.ids[r]) for r in rows}) == 1
    assert torch.equal(grp.num_traj, torch.full((6,), 3.0, dtype=grp.num_traj.dtype))
    assert float(dom.num_tokens.sum()) == float(ro.mask.sum()) == h.num_tokens
    assert torch.equal(h.lengths, ro.mask.sum(1).to(h.lengths.dtype))


@pytest.fixture
def varied_reward(monkeypatch):
    """A random model earns no exact-match reward, so every advantage would be 0: reward
    even-length responses instead, which gives every group both signs."""
    from fibration_theory.simulations.lm import evaluation

    monkeypatch.setattr(evaluation, "reward", lambda response, answer: float(len(response) % 2
                                                                              == 0))


@pytest.mark.parametrize("name", sorted(lm_rl.LM_METHODS))
def test_one_rl_step_on_a_tiny_model(model, name, varied_reward):
    cfg = lm_rl.RLConfig(tasks=TASKS, source="unused", prompts_per_domain=2, group_size=4,
                         epochs=1, minibatches=1, lr=1e-2, token_budget=1, eval_per_domain=4,
                         eval_samples=1, checkpoint_every=0)
    method = all_methods()[lm_rl.LM_METHODS[name]]
    before = [p.detach().clone() for p in model.parameters()]
    res = lm_rl.train(cfg, method, method.params(1.0, 2), 0, model_and_codec=(model, CODEC))
    assert [p["update"] for p in res.curve] == [0, 1]
    assert res.final["updates"] == 1 and res.final["tokens"] == res.curve[1]["tokens"] > 0
    moved = sum(float((p.detach() - q).abs().sum()) for p, q in zip(model.parameters(), before))
    assert np.isfinite(moved) and moved > 0
    point = res.curve[1]
    for key in ("train_reward", "reward", "tv/trajectory", "tv/group", "tv/domain", "entropy",
                "response_length", "regime/G-I", "grad/zeroed_token_frac",
                "grad/rollback_coef_share", "grad/coupling_coef_share"):
        assert np.isfinite(point[key]), key
    assert {f"reward/{d}" for d in TASKS.domains} <= set(point)


def test_on_policy_fiberpo_gradient_equals_ppo_on_an_lm_batch(model):
    """On a sampled LM batch (ratio 1) FiberPO's gradient through the whole model is PPO's
    with the same aggregation: the library's on-policy identity survives the LM plumbing."""
    problems, gid, ro = _rollout(model, n_per_domain=1, group=4, seed=2)
    rewards = torch.tensor([float(i % 2) for i in range(len(gid))], dtype=torch.float64)
    adv = lm_rl.group_advantages(rewards, gid)[:, None] * ro.mask
    h = lm_rl.batch_hierarchy(problems, gid, ro.mask)

    def logp():
        return sampling.token_log_probs(model, ro.prompt, ro.prompt_mask, ro.tokens, ro.mask)[0]

    lp = logp()
    out = losses.compute("fiberpo", lp, lp.detach(), adv, ro.mask, hierarchy=h)
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    lp = logp()
    ref = losses.compute("ppo_clip", lp, lp.detach(), adv, ro.mask, agg="seq-mean-token-mean")
    ref_grads = torch.autograd.grad(ref.loss, list(model.parameters()), allow_unused=True)
    for g, r in zip(grads, ref_grads):  # on-policy FiberPO = PPO (the library's identity)
        if g is None:
            assert r is None
        else:
            assert torch.allclose(g, r, atol=1e-6, rtol=1e-5)


def test_checkpoint_resume_continues_the_same_run(model, tmp_path, varied_reward):
    cfg = lm_rl.RLConfig(tasks=TASKS, source="unused", prompts_per_domain=1, group_size=2,
                         epochs=1, minibatches=1, lr=1e-2, token_budget=10**9,
                         eval_per_domain=2, eval_samples=1, eval_every=100, checkpoint_every=1)
    method = all_methods()["grpo"]
    params = method.params(1.0, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run(budget, ckpt, seed=5):
        m = models.build_tiny(TINY, CODEC.vocab_size, CODEC.pad_id, CODEC.eos_id, 3).eval()
        m.load_state_dict(state)
        c = dataclasses.replace(cfg, token_budget=budget)
        return lm_rl.train(c, method, params, seed, checkpoint=ckpt, model_and_codec=(m, CODEC))

    # find the token counts of an uninterrupted 3-update run, then stop after update 1
    full = run(1, None)
    t1 = full.curve[1]["tokens"]
    ckpt = tmp_path / "c.pt"
    first = run(t1, ckpt)
    assert ckpt.exists() and len(first.curve) == 2
    whole = run(t1 + 1, None)  # uninterrupted, one more update
    resumed = run(t1 + 1, ckpt)
    keys = ("update", "tokens", "train_reward")
    assert [[p[k] for k in keys] for p in resumed.curve[1:]] == \
           [[p[k] for k in keys] for p in whole.curve[1:]]
    assert resumed.final["updates"] == whole.final["updates"] == 2
    # a checkpoint of another run (here: another seed) is not resumed: the run starts afresh
    # and matches the same run made without any checkpoint
    fresh = run(t1 + 1, None, seed=6)
    other = run(t1 + 1, ckpt, seed=6)
    assert [[p.get(k) for k in keys] for p in other.curve] == \
           [[p.get(k) for k in keys] for p in fresh.curve]


def test_warm_start_is_trained_once_and_reused(tmp_path):
    cfg = WarmStartConfig(model=TINY, tasks=TaskSet(("count",)), max_steps=3, check_every=2,
                          check_per_domain=2, batch_size=4)
    folder = ensure_warm_start(cfg, tmp_path, progress=False)
    meta = folder / "meta.json"
    stamp = meta.stat().st_mtime_ns
    assert (folder / "model" / "config.json").exists() and (folder / "codec.json").exists()
    assert ensure_warm_start(cfg, tmp_path, progress=False) == folder
    assert meta.stat().st_mtime_ns == stamp  # reused, not retrained
    model, codec = lm_rl.load_policy(f"warm:{folder}", "cpu")
    assert codec.alphabet == CODEC.alphabet and not model.training
    ensure_warm_start(dataclasses.replace(cfg, max_steps=4), tmp_path, progress=False)
    assert meta.stat().st_mtime_ns != stamp  # another config is trained anew


def test_plan_and_command_errors(tmp_path, monkeypatch):
    plan = make_plan(quick=True, device="cpu", model=None, out=tmp_path)
    assert plan.methods == ("fiberpo", "fiberpo_domain", "grpo", "gspo", "dapo",
                            "fiberpo_clamp")
    assert not set(plan.tune_seeds) & set(plan.seeds)  # tuning never sees evaluation seeds
    pre = make_plan(quick=True, device="cpu", model="smollm2", out=tmp_path)
    assert pre.tune_seeds == () and pre.rl.tasks.fmt == "fewshot"
    specs = [s for s, _ in jobs(plan)]
    assert len(specs) == len(plan.methods) * len(plan.seeds)
    dom = next(s for s in specs if s.method == "fiberpo_domain").param_dict
    assert isinstance(dom["c_plus"], list) and len(dom["c_plus"]) == 3  # per-level budgets
    with pytest.raises(ValueError, match="methods"):
        make_plan(quick=True, device="cpu", model=None, out=tmp_path, methods=("ppo",))
    with pytest.raises(ValueError, match="seeds"):
        make_plan(quick=True, device="cpu", model=None, out=tmp_path, seeds=0)
    assert make_plan(quick=True, device="cpu", model=None, out=tmp_path, epochs=1,
                     minibatches=1).name == "quick-e1m1"
    with pytest.raises(ValueError, match="model"):
        models.resolve_checkpoint(str(tmp_path / "missing"))
    (tmp_path / "w.bin").write_text("x")
    with pytest.raises(ValueError, match="model"):
        models.resolve_checkpoint(str(tmp_path / "w.bin"))
    with pytest.raises(ValueError, match="source"):
        lm_rl.load_policy("nowhere", "cpu")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r"fibration-theory\[lm\]"):
        models.require_transformers("fibration lm")
    from fibration_theory import cli

    with pytest.raises(SystemExit, match=r"needs the Hugging Face `transformers`"):
        cli.main(["lm", "--quick", "--out", str(tmp_path / "x")])


def test_command_end_to_end_writes_the_summary_and_resumes(tmp_path, monkeypatch):
    """``fibration lm --quick`` on a plan shrunk to seconds: summary schema, figures, and a
    rerun that finds every run done."""
    from fibration_theory.simulations.lm import cli as lm_cli

    from fibration_theory import cli

    real = lm_cli.make_plan

    def small_plan(**kw):
        plan = real(**kw)
        warm = dataclasses.replace(plan.warm, model=TINY, max_steps=4, check_every=2,
                                   check_per_domain=2, batch_size=6)
        rl = dataclasses.replace(plan.rl, token_budget=60, prompts_per_domain=1, group_size=2,
                                 eval_per_domain=2, eval_samples=1, eval_every=2)
        return dataclasses.replace(plan, warm=warm, rl=rl, seeds=(0, 1), workers=1,
                                   methods=("fiberpo", "grpo"), tune_seeds=(1000,),
                                   tune_configs=4)

    monkeypatch.setattr(lm_cli, "make_plan", small_plan)
    out = tmp_path / "lm"
    assert cli.main(["lm", "--quick", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domains"] == ["add", "sort", "count"]
    for m in ("fiberpo", "grpo"):
        e = summary["methods"][m]
        assert e["seeds"] == 2 and e["tokens"] >= 60
        assert 0.0 <= e["reward_before"] <= 1.0 and 0.0 <= e["reward_after"] <= 1.0
        assert set(e["per_domain"]) == set(summary["domains"])
    assert "paired_vs_grpo" in summary["methods"]["fiberpo"]
    from fibration_theory.simulations.lm.report import render_markdown

    text = render_markdown(summary)
    assert "| fiberpo | " in text and "| grpo | " in text and "chosen" in text
    assert (out / "figures" / "lm_reward.png").exists()
    tuning = json.loads((out / "tuning.json").read_text())
    assert set(tuning) == {"fiberpo", "grpo"}
    for m, rec in tuning.items():  # the chosen configuration has the best tuning score
        assert rec["n_configs"] == 4 and rec["score"] == max(rec["scores"].values())
        ran = json.loads((out / "runs" / "lm" / m / "quick" / "eval-seed0.jsonl").open()
                         .readline())["params"]
        base = all_methods()[lm_rl.LM_METHODS[m]].params(1.0, 2)
        for p, f in rec["factors"].items():
            assert ran[p] == pytest.approx(base[p] * f), (m, p)
    assert not list((out / "checkpoints").glob("*.pt"))  # finished runs leave none behind
    files = sorted((out / "runs" / "lm").rglob("*.jsonl"))
    stamps = [f.stat().st_mtime_ns for f in files]
    # 4 configurations of levels 1/3 and 1: every chosen factor is on an edge, so each
    # parameter gets the quick plan's one factor beyond it (fiberpo 3 parameters, grpo 2);
    # then 2 x 2 evaluation runs
    n_edge = sum(len(rec["edge"]) for rec in tuning.values())
    assert n_edge == 3 + 2 and len(files) == 8 + n_edge + 4
    for m, rec in tuning.items():
        assert set(summary["tuning_edge"][m]) == {e["variant"] for e in rec["edge"]}
    assert cli.main(["lm", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps  # resumed: nothing recomputed


def test_api_doc_example_runs(tmp_path):
    import os
    import subprocess

    from docs_examples import doc_example

    script = tmp_path / "example_lm.py"
    script.write_text(doc_example("api.md", "lm"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[3, 6] (24,)"


def test_gate_ablation_opens_one_part_at_a_time(tmp_path):
    from fibration_theory.simulations.lm import ablation

    specs = {(s.method, s.variant): s.param_dict for s, _ in ablation.jobs(tmp_path, 1)}
    default = specs[("fiberpo", "ablation-default")]
    assert default == all_methods()["fiberpo"].params(1.0, 2)
    assert specs[("fiberpo", "ablation-base_only")] == default | {"eps": ablation.WIDE}
    assert specs[("fiberpo", "ablation-fiber_only")] == default | {"c_plus": ablation.WIDE,
                                                                   "c_minus": ablation.WIDE}
    assert specs[("grpo", "ablation-grpo")] == all_methods()["grpo"].params(1.0, 2)
    with pytest.raises(SystemExit, match="warm start"):
        ablation.main(["--out", str(tmp_path)])


def test_open_fiberpo_is_the_unclipped_objective(model):
    """The ablation's premise: with budgets and eps far beyond the drift, FiberPO's loss and
    gradient are those of PPO without its clip, on an off-policy LM batch."""
    from fibration_theory.simulations.lm.ablation import WIDE

    problems, gid, ro = _rollout(model, n_per_domain=1, group=4, seed=3)
    rewards = torch.tensor([float(i % 3 == 0) for i in range(len(gid))], dtype=torch.float64)
    adv = lm_rl.group_advantages(rewards, gid)[:, None] * ro.mask
    h = lm_rl.batch_hierarchy(problems, gid, ro.mask)
    old = ro.log_prob.double() + 0.05 * torch.randn(ro.log_prob.shape, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(0))
    grads = []
    for name, kw in (("fiberpo", {"c_plus": WIDE, "c_minus": WIDE, "eps": WIDE}),
                     ("ppo_clip", {"eps_low": WIDE, "eps_high": WIDE,
                                   "agg": "seq-mean-token-mean"})):
        lp = sampling.token_log_probs(model, ro.prompt, ro.prompt_mask, ro.tokens, ro.mask)[0]
        out = losses.compute(name, lp, old, adv, ro.mask, hierarchy=h, **kw)
        grads.append((out.loss.detach(), torch.autograd.grad(out.loss, lp)[0]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)
