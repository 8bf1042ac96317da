"""Claim 3.5: the trajectory-level TV that GSPO keeps, against ``sqrt(eps/2)``.

GSPO (App C.4, without its min) clips the sequence ratio ``s_tau = exp(mean_t log r)`` to
``[1 - eps, 1 + eps]``. Claim 3.5 (proof in App C.6) reads this as a bound on the
trajectory-normalised KL (``D_KL^(tj) <~ eps``) and, through Pinsker's inequality, on the
trajectory-normalised TV: ``D_TV^(tj) <~ sqrt(eps/2)`` (eq 46, with the 1/2).

We train GSPO (symmetric ``eps_low = eps_high = eps``) on the sequence task of
:mod:`fibration_theory.simulations.token_efficiency` for a range of ``eps`` at two learning rates and record, after every update,
``D_TV^(tj)`` between the new and the old policy: estimated on the batch's samples (eq 51
with eq 46's 1/2) and exactly from the tabular policies (eq 45). Per run we keep the mean
and the maximum over updates; the claim holds where they stay below ``sqrt(eps/2)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from fibration_theory.simulations.methods import all_methods
from fibration_theory.simulations.runner import RunResult, RunSpec
from fibration_theory.simulations.token_efficiency import SeqConfig, train

#: the clip values swept (GSPO's paper uses 3e-4 / 4e-4)
EPS_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

#: learning rates: the sequence study's and ten and a hundred times smaller ones. A clip only acts after
#: the ratio has left its band, so the first step of every update, and Adam's momentum after
#: it, move the policy by an amount the learning rate sets; the sweep separates the two.
LR_GRID: tuple[float, ...] = (0.003, 0.03, 0.3)


@dataclasses.dataclass(frozen=True)
class GspoTvConfig:
    """One GSPO run at a given clip ``eps``."""

    #: the training run (task, batch, epochs, learning rate, budget)
    seq: SeqConfig = dataclasses.field(
        default_factory=lambda: SeqConfig(token_budget=12_000))

    @property
    def cost(self) -> float:
        return self.seq.cost


def bound(eps: float) -> float:
    """Claim 3.5's trajectory-level TV radius ``sqrt(eps / 2)``."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return math.sqrt(eps / 2)


def run_one(config: GspoTvConfig, spec: RunSpec) -> RunResult:
    """``spec.params`` holds ``eps``; the run is GSPO with ``eps_low = eps_high = eps``."""
    eps = float(spec.param_dict["eps"])
    res = train(config.seq, all_methods()["gspo"], {"eps_low": eps, "eps_high": eps},
                spec.seed)
    updates = res.curve[1:]
    keys = ("tv/tj", "tv/tj_exact", "kl/tj")
    final = {"eps": eps, "lr": config.seq.lr, "bound": bound(eps),
             "final_success": res.final["final_success"]}
    for k in keys:
        vals = np.array([p[k] for p in updates])
        name = k.replace("/", "_")
        final[f"mean_{name}"] = float(vals.mean())
        final[f"max_{name}"] = float(vals.max())
        final[f"frac_within_{name}"] = float((vals <= bound(eps)).mean())
    final["mean_tv_tj_over_bound"] = final["mean_tv_tj"] / bound(eps)
    final["max_tv_tj_over_bound"] = final["max_tv_tj"] / bound(eps)
    final["mean_kl_tj_over_eps"] = final["mean_kl_tj"] / eps
    curve = [{k: p[k] for k in ("iter", "tokens", "success", *keys) if k in p}
             for p in res.curve]
    return RunResult(curve, final)
