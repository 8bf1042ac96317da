"""Our objectives against verl 0.9.1's own policy losses, in float64 (helper of the tests).

``measure()`` calls verl's function (``core_algos.get_policy_loss_fn(mode)``) and ours
(``fibration_<name>``, through the same registry) on the same batch with the same
``ActorConfig`` and returns the relative differences of value and log-prob gradient. Run as a
script it prints the table of docs/integrations.md::

    .venv/bin/python tests/verl_peers.py

Convention differences are explicit mappings applied to verl's side, each named in
``MAPPINGS``; the raw difference without them is measured too.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

#: (our objective, verl loss mode, aggregation modes both support). verl's ``sapo`` hard-codes
#: ``seq-mean-token-mean`` and its ``geo_mean`` takes the plain mean over rows whatever the mode.
PAIRS: list[tuple[str, str, tuple[str, ...]]] = [
    *((name, "vanilla", ("token-mean", "token-sum", "seq-mean-token-sum",
                         "seq-mean-token-mean", "seq-mean-token-sum-norm"))
      for name in ("ppo_clip", "dapo", "grpo", "dr_grpo")),
    *((name, mode, ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                    "seq-mean-token-sum-norm"))
      for name, mode in (("gspo_token", "gspo"), ("cispo", "cispo"))),
    ("sapo", "sapo", ("seq-mean-token-mean",)),
    ("gmpo", "geo_mean", ("seq-mean-token-mean",)),
]

#: the mappings applied to verl's side (documented in docs/integrations.md)
MAPPINGS = {
    "count-eps": "verl divides each row by (token count + 1e-8) in seq-mean-token-mean and "
                 "GMPO; verl gets a response mask of 2^40 (not 1) on response tokens, which "
                 "leaves its formula unchanged but shrinks the 1e-8 below float64 rounding",
    "cispo-value": "verl's CISPO value is sum mu sg(clip r) A log pi (ours: sum mu sg(clip r) "
                   "A r... as the surrogate at the current policy); compared: verl's value "
                   "against ours with log pi in place of the ratio; gradients unmapped",
    "gmpo-rows": "verl's geo_mean averages over all B rows (empty ones too); ours over the "
                 "|Tj| non-empty rows: verl's value and gradient are multiplied by B / |Tj|",
    "gmpo-weights": "verl's geo_mean takes exp(mean log(w + 1e-10)); verl is given w - 1e-10",
}
SCALE = 2.0 ** 40


@dataclasses.dataclass(frozen=True)
class Case:
    objective: str
    mode: str
    agg: str
    weighted: bool

    @property
    def id(self) -> str:
        return f"{self.objective}-{self.agg}{'-weighted' if self.weighted else ''}"


#: verl's ``gspo`` is GSPO-token (each token's gradient through its own log-prob): with
#: per-token rollout weights it is our ``gspo_token``; our sequence-level ``gspo`` equals it
#: for outcome advantages without weights
CASES = [Case(o, m, a, w) for o, m, aggs in PAIRS for a in aggs for w in (False, True)]
CASES += [Case("gspo", "gspo", a, False) for a in PAIRS[4][2]]


def batch(seed: int) -> dict:
    """Ragged float64 ``[6, 7]`` rows (one empty), outcome advantages of both signs, log-ratios
    up to ~0.6 so that every clip and the dual clip act, rollout weights in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 0, 6, 1])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    old = -0.5 - torch.rand(6, 7, generator=g, dtype=torch.float64)
    lp = old + 1.2 * (torch.rand(6, 7, generator=g, dtype=torch.float64) - 0.5)
    lp[0, :3] = old[0, :3] + torch.tensor([1.3, 1.5, -0.7], dtype=torch.float64)  # dual clip
    adv = torch.tensor([[-1.0], [0.7], [-0.4], [0.3], [1.1], [-0.9]],
                       dtype=torch.float64).expand(6, 7).contiguous()
    w = 0.5 + torch.rand(6, 7, generator=g, dtype=torch.float64)
    return {"mask": mask, "lp": lp, "old": old, "adv": adv, "w": w}


def actor_config(**overrides):
    """verl's ``ActorConfig`` built as verl builds it: the trainer's hydra config, then
    ``omega_conf_to_dataclass``; ``overrides`` are hydra command-line overrides of the actor."""
    import os

    import verl
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from verl.utils.config import omega_conf_to_dataclass

    root = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    args = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.n=2"]
    args += [f"{'+' if k.startswith('+') else ''}actor_rollout_ref.actor.{k.lstrip('+')}={v}"
             for k, v in overrides.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=root, version_base=None):
        cfg = compose("ppo_trainer", overrides=args)
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / (scale if scale > 0 else 1.0)


def measure(case: Case, config, data: dict, mapped: bool = True) -> dict:
    """``{"value": rel diff, "grad": rel diff, "grad_norm": |grad|}`` of ours vs verl's."""
    from verl.trainer.ppo import core_algos

    mask, adv = data["mask"], data["adv"]
    w = data["w"] if case.weighted else None
    ours_fn = core_algos.get_policy_loss_fn(f"fibration_{case.objective}")
    lp = data["lp"].clone().requires_grad_(True)
    ours, _ = ours_fn(old_log_prob=data["old"], log_prob=lp, advantages=adv,
                      response_mask=mask, loss_agg_mode=case.agg, config=config,
                      rollout_is_weights=w)
    (g_ours,) = torch.autograd.grad(ours, lp)
    verl_mask = mask.to(torch.float64)
    if mapped and (case.agg == "seq-mean-token-mean" or case.mode == "geo_mean"):
        verl_mask = verl_mask * SCALE
    verl_w = w
    if mapped and w is not None and case.mode == "geo_mean":
        verl_w = w - 1e-10
    lp2 = data["lp"].clone().requires_grad_(True)
    theirs, _ = core_algos.get_policy_loss_fn(case.mode)(
        old_log_prob=data["old"], log_prob=lp2, advantages=adv, response_mask=verl_mask,
        loss_agg_mode=case.agg, config=config, rollout_is_weights=verl_w)
    (g_theirs,) = torch.autograd.grad(theirs, lp2)
    g_theirs = torch.where(mask, g_theirs, torch.zeros_like(g_theirs))
    if mapped and case.mode == "geo_mean":
        factor = mask.shape[0] / float(mask.any(-1).sum())
        theirs, g_theirs = theirs * factor, g_theirs * factor
    value = ours.detach()
    if mapped and case.mode == "cispo":
        # ours with log pi in place of the ratio: the same function of the detached clip
        # coefficient, evaluated the way verl reports it
        lp3 = data["lp"].clone().requires_grad_(True)
        value = _cispo_as_verl_reports(ours_fn, data, lp3, case, config, w)
    return {"value": _rel(value, theirs.detach()), "grad": _rel(g_ours, g_theirs),
            "grad_norm": float(g_ours.abs().max())}


def _cispo_as_verl_reports(fn, data, lp, case, config, w) -> torch.Tensor:
    """Our CISPO loss is linear in the detached coefficient times the ratio; its value with
    the ratio replaced by log pi is the loss's gradient pairing ``sum_i (dL/dlp_i) * lp_i``
    (dL/dlp_i = -mu_i sg(clip r_i) A_i w_i)."""
    loss, _ = fn(old_log_prob=data["old"], log_prob=lp, advantages=data["adv"],
                 response_mask=data["mask"], loss_agg_mode=case.agg, config=config,
                 rollout_is_weights=w)
    (g,) = torch.autograd.grad(loss, lp)
    return (g * torch.where(data["mask"], data["lp"], torch.zeros_like(data["lp"]))).sum()


CONFIG_OVERRIDES = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 2.0,
                    "loss_scale_factor": 11, "tau_pos": 1.0, "tau_neg": 1.05}


def table(seeds=(0, 1, 2)) -> list[dict]:
    """Max over ``seeds`` of the differences, raw and mapped, for every case."""
    config = actor_config(**CONFIG_OVERRIDES)
    rows = []
    for case in CASES:
        worst = {"raw_value": 0.0, "raw_grad": 0.0, "value": 0.0, "grad": 0.0}
        for seed in seeds:
            data = batch(seed)
            m = measure(case, config, data)
            r = measure(case, config, data, mapped=False)
            worst = {"raw_value": max(worst["raw_value"], r["value"]),
                     "raw_grad": max(worst["raw_grad"], r["grad"]),
                     "value": max(worst["value"], m["value"]),
                     "grad": max(worst["grad"], m["grad"])}
        rows.append({"case": case, **worst})
    return rows


def markdown(rows: list[dict]) -> str:
    """One row per objective and aggregation: the max over with/without rollout weights."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        c = row["case"]
        key = (c.objective, c.mode, c.agg)
        old = merged.setdefault(key, {k: 0.0 for k in ("raw_value", "raw_grad", "value", "grad")}
                                | {"weighted": set()})
        for k in ("raw_value", "raw_grad", "value", "grad"):
            old[k] = max(old[k], row[k])
        old["weighted"].add(c.weighted)
    lines = [("| objective | verl loss | aggregation | rollout weights | value (raw) | "
              "gradient (raw) | value (mapped) | gradient (mapped) |"),
             "|---|---|---|---|---|---|---|---|"]
    for (obj, mode, agg), r in merged.items():
        w = "with and without" if len(r["weighted"]) == 2 else "without"
        lines.append(f"| `{obj}` | `{mode}` | `{agg}` | {w} | {r['raw_value']:.1e} | "
                     f"{r['raw_grad']:.1e} | {r['value']:.1e} | {r['grad']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import fibration_theory.integrations.verl  # noqa: F401  registers fibration_<name>

    print(markdown(table()))
    sys.exit(0)
