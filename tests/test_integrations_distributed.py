"""Two gloo ranks on CPU give the single-process loss, gated ratios and gradients.

One spawn runs every case (a module fixture); the tests below read its results. The global
batch has rows of different lengths (one empty), the two ranks pad to different widths, a
prompt group and a domain are split across the ranks, one domain lives on rank 1 only, and
domain labels are strings. Every registered objective has at least one case
(``test_every_objective_has_a_case`` fails when a new one is added without a case).
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from docs_examples import run_example
from gloo_ranks import spawn_ranks

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import distributed

WORLD = 2
#: float64, the same terms summed in another order (per rank, then over ranks): ~1e-16
#: relative; the bound 1e-10 is met with six orders of margin
TOL = 1e-10

LENGTHS = [3, 1, 7, 4, 2, 5, 6, 0, 3, 2]  # row 7 is empty
RANK_ROWS = [range(5), range(5, 10)]  # rank 0 pads to width 7, rank 1 to width 6
GROUPS = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5]  # group 2 spans both ranks
DOMAINS = ["alg", "alg", "alg", "geo", "geo", "geo", "geo", "num", "num", "num"]  # "num": rank 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One objective with parameters that leave a mix of gated and ungated tokens."""

    id: str
    name: str
    params: dict
    states: str | None = None  # "blocks": APC state ids shared inside a rank only

    def kwargs(self, state_ids: torch.Tensor | None) -> dict:
        return dict(self.params, **({"state_ids": state_ids} if self.states else {}))


CASES = [
    Case("ppo_clip", "ppo_clip", {}),
    Case("ppo_clip-dual", "ppo_clip", {"dual_clip": 1.5, "eps_low": 0.1, "eps_high": 0.1}),
    Case("grpo", "grpo", {"eps_low": 0.1, "eps_high": 0.1}),
    Case("dr_grpo", "dr_grpo", {}),
    Case("dapo", "dapo", {}),
    Case("gspo", "gspo", {"eps_low": 0.08, "eps_high": 0.1}),
    Case("gspo_token", "gspo_token", {"eps_low": 0.08, "eps_high": 0.1}),
    Case("gmpo", "gmpo", {"eps_low": 0.1, "eps_high": 0.1}),
    Case("cispo", "cispo", {"eps_high": 0.1}),
    Case("sapo", "sapo", {}),
    Case("apc", "apc", {"delta": 0.15}),
    Case("apc-states", "apc", {"delta": 0.3}, states="blocks"),
    Case("fiberpo", "fiberpo", {"c_plus": 0.06, "c_minus": 0.04, "eps": 0.1}),
    Case("fiberpo_domain", "fiberpo_domain", {"c_plus": 0.05, "c_minus": 0.03, "eps": 0.1}),
    Case("fiberpo_domain-levels", "fiberpo_domain",
         {"c_plus": [0.02, 0.04, 0.08], "c_minus": [0.01, 0.03, 0.05], "eps": 0.1}),
    Case("fiberpo_clamp", "fiberpo_clamp", {"delta": 0.05, "eps": 0.1}),
    Case("fiberpo_slope", "fiberpo_slope", {"c_plus": 0.06, "c_minus": 0.04, "eps": 0.1}),
    Case("fiberpo_hard", "fiberpo_hard", {"c_plus": 0.06, "c_minus": 0.04, "eps": 0.1}),
]


def global_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """The concatenated batch, float64, padded to the longest row."""
    g = torch.Generator().manual_seed(seed)
    b, t = len(LENGTHS), max(LENGTHS)
    mask = torch.arange(t)[None, :] < torch.tensor(LENGTHS)[:, None]
    old = -0.5 - torch.rand(b, t, generator=g, dtype=torch.float64)
    # log-ratios of size ~0.25 so that every gate has tokens on both sides of its thresholds
    lp = old + 0.25 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        b, t, generator=g, dtype=torch.float64)
    rows = torch.arange(b)[:, None]
    # APC states: pairs of rows (0,1), (2,3) on rank 0 and (5,6), (7,8) on rank 1 share a
    # state per position; "span" pairs (4,5) across the ranks
    blocks = (rows // 5) * 1000 + ((rows % 5) // 2) * 100 + torch.arange(t)[None, :]
    span = (rows // 2) * 100 + torch.arange(t)[None, :]
    feats = torch.randn(b, t, 3, generator=g, dtype=torch.float64)
    return {"mask": mask, "old": old, "lp": lp, "adv": adv, "blocks": blocks, "span": span,
            "feats": feats}


def local_batch(full: dict[str, torch.Tensor], rank: int, pad: float = 7.0) -> dict:
    """Rank ``rank``'s rows at its own padded width, with junk outside the mask."""
    rows = list(RANK_ROWS[rank])
    width = max(LENGTHS[r] for r in rows)
    out = {}
    for key, value in full.items():
        v = value[rows][:, :width].clone()
        if key in ("old", "lp", "adv"):
            v = torch.where(full["mask"][rows][:, :width], v, torch.full_like(v, pad))
        out[key] = v
    out["groups"] = torch.tensor([GROUPS[r] for r in rows])
    out["domains"] = [DOMAINS[r] for r in rows]
    return out


def _single(case: Case, full: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lp = full["lp"].clone().requires_grad_(True)
    h = Hierarchy.from_padded(full["mask"], group_ids=torch.tensor(GROUPS), domain_ids=DOMAINS)
    out = losses.compute(case.name, lp, full["old"], full["adv"].expand_as(lp).contiguous(),
                         full["mask"], hierarchy=h, **case.kwargs(full["blocks"]))
    out.loss.backward()
    return out.loss.detach(), lp.grad, out.gated_ratio.detach()


def _expect_error(fn) -> str:
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    return ""


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    pg = dist.new_group(backend="gloo")  # the loss's collectives, apart from DDP's
    full = global_batch()
    loc = local_batch(full, rank)
    rows = list(RANK_ROWS[rank])
    width = loc["mask"].shape[1]
    res: dict = {"cases": {}}
    for case in CASES:
        s_loss, s_grad, s_gate = _single(case, full)
        row = {}
        for red in ("sum", "mean"):
            lp = loc["lp"].clone().requires_grad_(True)
            out = distributed.compute(
                case.name, lp, loc["old"], loc["adv"].expand_as(lp).contiguous(), loc["mask"],
                group_ids=loc["groups"], domain_ids=loc["domains"], process_group=pg,
                grad_reduction=red, **case.kwargs(loc["blocks"]))
            out.loss.backward()
            scale = world if red == "mean" else 1
            m = loc["mask"]
            row[red] = {
                "loss_err": abs(out.metrics["loss"] - float(s_loss)),
                "grad_err": float((lp.grad - scale * s_grad[rows][:, :width]).abs().max()),
                "gate_err": float((out.gated_ratio.detach()[m] - s_gate[rows][:, :width][m])
                                  .abs().max()),
                "share": out.metrics["loss/rank_share"],
                "grad_norm": float(s_grad[rows].abs().max()),
            }
        row["single_loss"] = float(s_loss)
        res["cases"][case.id] = row

    # DDP convention: a linear log-prob model, parameter gradients averaged by DDP
    theta0 = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    model = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(theta0)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    lp = loc["old"] + ddp(loc["feats"]).squeeze(-1)
    out = distributed.compute("fiberpo_domain", lp, loc["old"], loc["adv"].expand_as(lp)
                              .contiguous(), loc["mask"], group_ids=loc["groups"],
                              domain_ids=loc["domains"], process_group=pg, c_plus=0.05,
                              c_minus=0.03, eps=0.1)
    out.loss.backward()
    ref = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        ref.weight.copy_(theta0)
    lp_full = full["old"] + ref(full["feats"]).squeeze(-1)
    h = Hierarchy.from_padded(full["mask"], group_ids=torch.tensor(GROUPS), domain_ids=DOMAINS)
    losses.compute("fiberpo_domain", lp_full, full["old"], full["adv"].expand_as(lp_full)
                   .contiguous(), full["mask"], hierarchy=h, c_plus=0.05, c_minus=0.03,
                   eps=0.1).loss.backward()
    res["ddp_err"] = float((model.weight.grad - ref.weight.grad).abs().max())
    res["ddp_norm"] = float(ref.weight.grad.abs().max())

    # errors are raised on every rank (no hang), naming the rank or the argument
    res["err_states"] = _expect_error(lambda: distributed.compute(
        "apc", loc["lp"], loc["old"], loc["adv"].expand_as(loc["lp"]).contiguous(),
        loc["mask"], process_group=pg, delta=0.3, state_ids=loc["span"]))
    bad = loc["lp"].clone()
    if rank == 1:
        bad[0, 0] = float("nan")
    res["err_nan"] = _expect_error(lambda: distributed.compute(
        "fiberpo", bad, loc["old"], loc["adv"].expand_as(bad).contiguous(), loc["mask"],
        process_group=pg))
    doms = list(loc["domains"])
    if rank == 1:
        doms[0] = "alg"  # group 2 now lies in "geo" on rank 0 and "alg" on rank 1
    res["err_nesting"] = _expect_error(lambda: distributed.hierarchy(
        loc["mask"], group_ids=loc["groups"], domain_ids=doms, process_group=pg))
    empty = loc["mask"].clone()
    if rank == 0:
        empty[:] = False
    res["err_empty_rank"] = _expect_error(lambda: distributed.hierarchy(
        empty, process_group=pg))
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Spawn the two ranks once; ``{"rank0": ..., "rank1": ...}``."""
    tmp = tmp_path_factory.mktemp("dist")
    out = {f"rank{r}": res for r, res in enumerate(spawn_ranks(_worker, WORLD, tmp))}
    return out


def test_every_objective_has_a_case():
    """Property: the case table covers every registered objective."""
    assert {c.name for c in CASES} == set(losses.available()), (
        f"cases {sorted({c.name for c in CASES})} vs registry {losses.available()}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_two_ranks_equal_one_process(results, case: Case, reduction: str):
    """Property: on 2 gloo ranks the global loss, every rank's gated ratios and its log-prob
    gradient (times the world size under grad_reduction="mean") equal the single-process
    ones on the concatenated batch to 1e-10."""
    shares = 0.0
    for r in range(WORLD):
        row = results[f"rank{r}"]["cases"][case.id]
        got = row[reduction]
        for key in ("loss_err", "grad_err", "gate_err"):
            assert got[key] <= TOL, f"{case} rank {r} {reduction}: {key} = {got[key]:.3e}"
        shares += got["share"]
        assert got["grad_norm"] > 0, f"{case} rank {r}: zero gradient, the check is vacuous"
    single = results["rank0"]["cases"][case.id]["single_loss"]
    assert abs(shares - single) <= TOL, f"{case}: shares sum to {shares}, single loss {single}"


def test_ddp_average_gives_the_single_process_parameter_gradient(results):
    """Property: with grad_reduction="mean", DDP's averaged parameter gradient of a linear
    log-prob model equals the single-process gradient on the concatenated batch."""
    for r in range(WORLD):
        res = results[f"rank{r}"]
        assert res["ddp_err"] <= TOL, f"rank {r}: |grad_ddp - grad_single| = {res['ddp_err']}"
        assert res["ddp_norm"] > 0


@pytest.mark.parametrize("key,needle", [
    ("err_states", "state_ids"), ("err_nan", "rank 1: log_prob"),
    ("err_nesting", "not nested"), ("err_empty_rank", "rank 0 holds no response token")])
def test_errors_raise_on_every_rank(results, key: str, needle: str):
    """Property: bad input on one rank raises ValueError on every rank (no rank hangs)."""
    for r in range(WORLD):
        msg = results[f"rank{r}"][key]
        assert needle in msg, f"rank {r} {key}: got {msg!r}"


def test_needs_initialized_process_group():
    """Property: without torch.distributed initialised the wrapper names process_group."""
    if dist.is_initialized():  # pragma: no cover - the test process never initialises it
        pytest.skip("a process group is already initialised in this process")
    mask = torch.ones(2, 3, dtype=torch.bool)
    lp = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="process_group"):
        distributed.compute("fiberpo", lp, lp, lp, mask)


def test_docs_example_runs(tmp_path):
    """Property: the distributed example of docs/integrations.md runs as written and passes its own
    checks."""
    proc = run_example("integrations.md", "distributed", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prefactorized_sparse_codes():
    """Property: global codes given with num_nodes are used as given: nodes absent from this
    rank get zero counts, present ones their local counts; codes out of range are refused."""
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    h = Hierarchy.from_padded(mask, levels={"domain": torch.tensor([4, 4, 1]),
                                            "group": torch.tensor([7, 7, 2])}, num_nodes=[5, 9])
    dom, grp = h.levels
    assert (dom.n, grp.n) == (5, 9)
    assert dom.num_tokens.tolist() == [0, 3, 0, 0, 3] and grp.num_traj[[2, 7]].tolist() == [1, 2]
    with pytest.raises(ValueError, match="group: codes must lie in 0..8"):
        Hierarchy.from_padded(mask, levels={"group": torch.tensor([0, 9, 1])}, num_nodes=[9])
    with pytest.raises(ValueError, match="not nested"):
        Hierarchy.from_padded(mask, levels={"domain": torch.tensor([4, 3, 1]),
                                            "group": torch.tensor([7, 7, 2])}, num_nodes=[5, 9])
