"""Token-efficiency study: group-relative RL on the tabular sequence task.

Does FiberPO reach a reward threshold in fewer sampled tokens than GRPO?

The whole algorithm is :func:`train` (cleanrl-style, one function):

1. each iteration samples ``group_size`` completions for each of ``prompts_per_batch``
   prompts from the current policy ``pi_old`` and counts the sampled tokens;
2. the binary rewards give group-relative advantages (GRPO's ``(R - mean) / std``, the same
   for every method, so only the objective differs);
3. ``epochs`` passes over the batch, each split into ``minibatches`` of whole prompt groups,
   take one Adam step on the objective each; the ratio ``pi_theta / pi_old`` therefore moves
   away from 1 and the gates matter;
4. after the update the exact success rate of the policy is computed (no evaluation noise).

Per update we record the sample TV at each level of the hierarchy, the trajectory-level
TV of Claim 3.5 on the samples and exactly, the FiberPO regime occupancy (G-I..G-III,
L-I..L-III; for methods without FiberPO's gate, labelled with ``REFERENCE_GATE``), for
every trajectory or node whose channel is in rollback, whether the gradient and the update
move its drift back (Section 5.1's restorative gradient), and where the gradient comes from
(``grad/*``: the shares of rollback terms, zeroed trajectories and the base gate's coupling
of clipped tokens, and the fraction of tokens whose gradient is zeroed; see
:mod:`.gradient_shares`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from fibration_theory.simulations import gradient_shares
from fibration_theory.simulations import sequence_task as st
from fibration_theory.simulations.diagnostics import Tally, gate_for, level_tv
from fibration_theory.simulations.methods import Method, all_methods
from fibration_theory.simulations.runner import RunResult, RunSpec
from fibration_theory.simulations.streams import torch_generator

from fibration_theory import fiberpo, gating, losses
from fibration_theory.hierarchy import Hierarchy

Tensor = torch.Tensor

#: the logits move by at most this much in the finite-difference probe of the gradient
#: direction: small enough to be first order, large enough to sit far above float64 noise
PROBE_STEP = 1e-6


@dataclasses.dataclass(frozen=True)
class SeqConfig:
    """One training run on the sequence task."""

    #: prompts, domains and the initial policy
    task: st.TaskConfig = dataclasses.field(default_factory=st.TaskConfig)
    #: completions per prompt (the group)
    group_size: int = 8
    #: prompts per iteration (all of them when equal to the number of prompts)
    prompts_per_batch: int = 9
    #: passes over each batch
    epochs: int = 4
    #: minibatches per pass (each holds whole prompt groups)
    minibatches: int = 2
    #: Adam learning rate on the logits table
    lr: float = 0.3
    #: training stops once this many tokens were sampled
    token_budget: int = 40_000
    #: success-rate threshold of the tokens-to-threshold metric (most runs plateau between
    #: 0.6 and 0.9 within the budget, so 0.6 is reached by most and still separates speed)
    threshold: float = 0.6
    #: the success rate must hold at or above ``threshold`` this many updates in a row
    hold: int = 3
    #: a collapse is a fall of the success rate by this much below its running maximum
    collapse_drop: float = 0.25
    #: levels above the trajectories, coarse to fine, from
    #: ``superdomain``, ``domain``, ``subdomain``, ``group``
    levels: tuple[str, ...] = ("domain", "group")

    @property
    def cost(self) -> float:
        """Relative cost, for scheduling long runs first."""
        return self.token_budget * self.epochs / 1e5


def level_ids(task: st.SequenceTask, prompts: Tensor, groups: Tensor,
              names: tuple[str, ...]) -> dict[str, Tensor]:
    """``{name: [B] ids}`` of each requested level for rows with ``prompts`` and ``groups``."""
    table = {
        "superdomain": torch.zeros_like(prompts),
        "domain": task.domain[prompts],
        "subdomain": task.subdomain[prompts],
        "group": groups,
    }
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"levels: unknown level(s) {sorted(unknown)}; choose from {list(table)}")
    return {n: table[n] for n in names}


def _subset(ro: st.Rollout, rows: Tensor) -> st.Rollout:
    return st.Rollout(ro.prompt[rows], ro.tokens[rows], ro.states[rows], ro.mask[rows],
                      ro.errors[rows], ro.reward[rows])


def level_drifts(log_ratio: Tensor, h: Hierarchy) -> list[tuple[Tensor, Tensor]]:
    """Per row, each level's gated drift ``(x+, x-)``: the aggregate minus its parent's.

    This is the argument of ``g_agg`` at every level of eq 31 (eq 8 for one level).
    """
    return fiberpo.drifts(gating.level_aggregates(log_ratio, h))


def exact_tv_tj(task: st.SequenceTask, old_logits: Tensor, new_logits: Tensor,
                prompts: Tensor) -> float:
    """Population trajectory-normalised TV (eq 45 with eq 34's 1/2) over ``prompts``.

    ``sum_{t,e} occ_old(p, t, e) / L_p * TV(s)`` averaged over the distinct prompts, with
    ``TV(s) = (1/2) sum_a |pi_new(a|s) - pi_old(a|s)|``.
    """
    occ, _ = st.visitation(task, old_logits)
    tv = 0.5 * (torch.softmax(new_logits, -1) - torch.softmax(old_logits, -1)).abs().sum(-1)
    tv = tv.reshape(task.n_prompts, task.max_len, task.n_err)
    per_prompt = (occ * tv).sum((1, 2)) / task.lengths.to(tv.dtype)
    return float(per_prompt[torch.unique(prompts)].mean())


def _rollback_rows(reg: gating.Regimes) -> list[tuple[Tensor, Tensor]]:
    return [(p == 1, m == 1) for p, m in reg.channel]


def train(cfg: SeqConfig, method: Method, params: dict[str, Any], seed: int,
          *, record_every: int = 1, shares: bool = True) -> RunResult:
    """One run of ``method`` with ``params`` on the task of ``seed``; see the module docstring.

    ``shares``: record the ``grad/*`` gradient decomposition of every update (one extra
    backward pass per part; it roughly doubles a run's cost and changes no other number).
    """
    task = st.SequenceTask(cfg.task, seed)
    gen = torch_generator("sequence/train", seed)
    tables = [t.requires_grad_(True) for t in task.init_params()]
    trained = tables if cfg.task.shared else tables[:1]
    opt = torch.optim.Adam(trained, lr=cfg.lr)

    def policy() -> Tensor:  # [n_states, V] logits of the current parameters
        return task.logits(*tables)

    n_sel = min(cfg.prompts_per_batch, task.n_prompts)
    gate, gate_levels = gate_for(method, params)
    names = cfg.levels
    uses_states = method.loss == "apc"

    _, success0 = st.visitation(task, policy().detach())
    curve: list[dict[str, Any]] = [{"iter": 0, "tokens": 0, "success": float(success0.mean()),
                                    **_domain_success(task, success0)}]
    tokens, it, nonfinite, seconds_update = 0, 0, False, 0.0
    rb_fired: dict[str, float] = {}
    while tokens < cfg.token_budget:
        it += 1
        sel = (torch.arange(task.n_prompts) if n_sel == task.n_prompts
               else torch.randperm(task.n_prompts, generator=gen)[:n_sel])
        prompts = sel.repeat_interleave(cfg.group_size)
        groups = torch.arange(n_sel).repeat_interleave(cfg.group_size)
        old_logits = policy().detach()
        ro = st.sample(task, old_logits, prompts, gen)
        tokens += ro.num_tokens
        adv = st.group_advantages(ro.reward, groups)[:, None] * ro.mask
        old_lp = st.token_log_probs(old_logits, ro)
        ids = level_ids(task, prompts, groups, names)
        tally = Tally()
        t0 = time.perf_counter()
        for _ in range(cfg.epochs):
            perm = torch.randperm(n_sel, generator=gen)
            for chunk in perm.chunk(cfg.minibatches):
                rows = torch.isin(groups, chunk).nonzero()[:, 0]
                sub = _subset(ro, rows)
                h = Hierarchy.from_padded(sub.mask, levels={k: v[rows] for k, v in ids.items()})
                lp = st.token_log_probs(policy(), sub)
                extra = {"state_ids": sub.states} if uses_states else {}
                out = losses.compute(method.loss, lp, old_lp[rows], adv[rows], sub.mask,
                                     hierarchy=h, **params, **extra)
                if not torch.isfinite(out.loss):
                    nonfinite = True
                    break
                opt.zero_grad()
                out.loss.backward()
                diag = _step_diagnostics(task, trained, tables, sub, old_lp[rows], adv[rows], h,
                                         gate, gate_levels, out.regimes)
                if shares:
                    diag.update(gradient_shares.update_metrics(
                        method.loss, st.token_log_probs(policy(), sub), old_lp[rows],
                        adv[rows], h, params, trained, extra.get("state_ids")))
                opt.step()
                diag.update(_restored_after(policy().detach(), sub, old_lp[rows], h,
                                            diag.pop("_rb"), "update"))
                tally.add(diag)
            if nonfinite:
                break
        seconds_update += time.perf_counter() - t0
        if nonfinite:
            break
        with torch.no_grad():
            new_logits = policy()
            new_lp = st.token_log_probs(new_logits, ro)
            h_all = Hierarchy.from_padded(ro.mask, levels=ids)
            tvs = level_tv(new_lp - old_lp, h_all)
            tvs["tv/tj_exact"] = exact_tv_tj(task, old_logits, new_logits, prompts)
            _, success = st.visitation(task, new_logits)
        point = {"iter": it, "tokens": tokens, "success": float(success.mean()),
                 "reward": float(ro.reward.mean()), **_domain_success(task, success), **tvs,
                 **tally.mean()}
        for k, v in tally.sums.items():
            if k.startswith("rb/"):
                rb_fired[k] = rb_fired.get(k, 0.0) + v
        if it % record_every == 0 or tokens >= cfg.token_budget:
            curve.append(point)
    return RunResult(curve, _final(cfg, curve, rb_fired, nonfinite, seconds_update / max(it, 1),
                                   it))


def _domain_success(task: st.SequenceTask, success: Tensor) -> dict[str, float]:
    out = {}
    for d, spec in enumerate(task.cfg.domains):
        out[f"success/{spec.name}"] = float(success[task.domain == d].mean())
    return out


def _step_diagnostics(task: st.SequenceTask, trained: list[Tensor], tables: list[Tensor],
                      sub: st.Rollout, old_lp: Tensor, adv: Tensor, h: Hierarchy,
                      gate: dict[str, Any], gate_levels: bool,
                      reg: gating.Regimes | None = None) -> dict[str, Any]:
    """Regime occupancy before the step, and whether a plain gradient step restores rollback.

    ``reg``: the regimes ``losses.compute`` returned for this minibatch (FiberPO's gate, with
    ``gate``), or ``None`` to label them with ``gate`` here.

    Called after ``backward`` (the ``trained`` tables hold the loss gradient) and before the
    optimizer step. Returns occupancy fractions, counts ``rb/<level>/fired``,
    ``rb/<level>/grad_restores`` (split by advantage sign), and the rollback masks (``_rb``).
    """
    with torch.no_grad():
        if reg is None:
            lr_now = st.token_log_probs(task.logits(*tables), sub) - old_lp
            reg = gating.regimes(lr_now, h, levels=gate_levels, **gate)
        out: dict[str, Any] = dict(reg.occupancy())
        rb = _rollback_rows(reg)
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in trained]
        gmax = max(float(g.abs().max()) for g in grads)
        scale = PROBE_STEP / max(gmax, 1e-300)
        # a plain gradient-descent step on the loss
        probe = [t - scale * g for t, g in zip(trained, grads)] + list(tables[len(trained):])
        lr_probe = st.token_log_probs(task.logits(*probe), sub) - old_lp
        before = reg.drifts
        after = _gated_drifts(lr_probe, h, gate_levels)
        a_sign = torch.sign(h.row_sum(adv))
        for name, (rp, rm), (bp, bm), (ap, am) in zip(reg.names, rb, before, after):
            for ch, fired, x0, x1 in (("+", rp, bp, ap), ("-", rm, bm, am)):
                fired = fired & h.valid
                back = (x1.abs() < x0.abs()) & fired
                out[f"rb/{name}/fired"] = out.get(f"rb/{name}/fired", 0.0) + float(fired.sum())
                out[f"rb/{name}/grad_restores"] = (out.get(f"rb/{name}/grad_restores", 0.0)
                                                   + float(back.sum()))
                for sgn, label in ((1, "pos"), (-1, "neg")):
                    sel = fired & (a_sign == sgn)
                    key = f"rb/{name}/fired_{label}"
                    out[key] = out.get(key, 0.0) + float(sel.sum())
                    key = f"rb/{name}/grad_restores_{label}"
                    out[key] = out.get(key, 0.0) + float((back & sel).sum())
        out["rows"] = float(h.valid.sum())
        out["_rb"] = (rb, before, reg.names)
    return out


def _gated_drifts(log_ratio: Tensor, h: Hierarchy, with_levels: bool) -> list[tuple[Tensor, Tensor]]:
    if not with_levels:  # FiberPO (eq 8) gates the trajectory aggregates themselves
        return [gating.trajectory_aggregates(log_ratio, h)]
    return level_drifts(log_ratio, h)


def _restored_after(new_logits: Tensor, sub: st.Rollout, old_lp: Tensor, h: Hierarchy, rb_info,
                    tag: str) -> dict[str, float]:
    """Counts of rollback channels whose drift shrank after the actual optimizer step."""
    rb, before, names = rb_info
    with torch.no_grad():
        lr_after = st.token_log_probs(new_logits, sub) - old_lp
        after = _gated_drifts(lr_after, h, len(before) > 1)
    out: dict[str, float] = {}
    for name, (rp, rm), (bp, bm), (ap, am) in zip(names, rb, before, after):
        n = 0.0
        for fired, x0, x1 in ((rp, bp, ap), (rm, bm, am)):
            n += float(((x1.abs() < x0.abs()) & fired & h.valid).sum())
        out[f"rb/{name}/{tag}_restores"] = n
    return out


def tokens_to_threshold(curve: list[dict[str, Any]], threshold: float, hold: int) -> float:
    """Sampled tokens at the first update from which success stays >= ``threshold`` for
    ``hold`` consecutive updates (``inf`` if never)."""
    ok = [p["success"] >= threshold for p in curve]
    for i in range(len(curve)):
        window = ok[i:i + hold]
        if len(window) == hold and all(window):
            return float(curve[i]["tokens"])
    return math.inf


def collapsed(curve: list[dict[str, Any]], drop: float) -> bool:
    """Did the success rate fall ``drop`` below its running maximum at some update?"""
    best = -math.inf
    for p in curve:
        best = max(best, p["success"])
        if p["success"] < best - drop:
            return True
    return False


def _final(cfg: SeqConfig, curve: list[dict[str, Any]], rb: dict[str, float], nonfinite: bool,
           sec_per_update: float, iters: int) -> dict[str, Any]:
    succ = np.array([p["success"] for p in curve])
    last = curve[-1]
    out: dict[str, Any] = {
        "final_success": float(succ[-1]),
        "auc_success": float(succ.mean()),
        "tokens_to_threshold": tokens_to_threshold(curve, cfg.threshold, cfg.hold),
        "collapsed": bool(collapsed(curve, cfg.collapse_drop) or nonfinite),
        "nonfinite": nonfinite,
        "tokens": last["tokens"],
        "iters": iters,
        "sec_per_update": sec_per_update,
    }
    out.update({k: v for k, v in last.items() if k.startswith("success/")})
    updates = [p for p in curve[1:]]
    if updates:
        for k in updates[0]:
            if k.startswith(("tv/", "kl/", "regime/", "rollback_frac/")):
                out[f"mean_{k}"] = float(np.mean([p.get(k, 0.0) for p in updates]))
        # gradient shares: over the updates that had a gradient (see gradient_shares)
        for k in sorted({k for p in updates for k in p if k.startswith("grad/")}):
            out[f"mean_{k}"] = float(np.mean([p[k] for p in updates if k in p]))
    out.update({f"total_{k}": v for k, v in rb.items()})
    return out


def run_one(config: SeqConfig, spec: RunSpec) -> RunResult:
    """Runner entry point: ``spec.method`` names a method of :func:`all_methods`.

    Tuning and grid-edge runs are scored by their success AUC only, so they skip the
    ``grad/*`` decomposition (which doubles a run's cost); evaluation runs record it.
    """
    method = all_methods()[spec.method]
    params = spec.param_dict
    return train(config, method, params, spec.seed, shares=spec.role == "eval")
