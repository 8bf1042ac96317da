"""How far the public plugin's gate (``fiberpo_clamp``) is from the paper's (``fiberpo``).

``python -m fibration_theory.simulations.clamp_vs_fiberpo --out DIR`` draws random batches of
trajectories whose log-ratios drift by a common amount ``d`` (``x_t = s d + sigma z_t``,
``s = +1`` or ``-1`` per batch, ``z`` standard normal, ``sigma`` the token noise), computes
both objectives' per-token gradient coefficients ``c = dJ/dx`` (``[B, T]``, block-diagonal
over trajectories) and reports, per trajectory regime of the paper's gate, the relative
difference ``||c_clamp - c_fiberpo|| / ||c_grpo||`` (``c_grpo = mu A``, the on-policy
gradient both reduce to at ``r = 1``, so the scale does not vanish where FiberPO zeroes)
and the cosine between ``c_clamp`` and ``c_fiberpo``.

Regimes (of the paper's gate, per trajectory): ``inside`` (G-I and no token's residual at
``eps``), ``residual`` (G-I, some residual at ``eps``: the fiber clip acts), ``base`` (the
base gate acts: rollback or zeroed in a channel).

Budgets are matched two ways: ``sum``, the plugin's ``delta = C+ + C-`` (the paper's
``delta``, Def 5.1) and the same ``eps``; ``sign``, ``delta = C+`` for batches drifting up
and ``C-`` for batches drifting down (the budget of the channel the drift fills). The paper's
budgets are its Fig 4's (``C+ = 0.12``, ``C- = 0.05``, ``eps = 0.04``).

Writes ``DIR/clamp_vs_fiberpo.csv`` (one row per mapping, sign, noise, drift and regime),
``DIR/clamp_vs_fiberpo.json`` (the config) and ``DIR/clamp_vs_fiberpo.png``, the figure
made from the CSV (``--figure-only`` remakes it from an existing CSV).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from fibration_theory.simulations import gradient_shares as gs

from fibration_theory import Hierarchy, losses

Tensor = torch.Tensor
F64 = torch.float64
REGIMES = ("inside", "residual", "base")
MAPPINGS = ("sum", "sign")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The batches drawn and the paper's budgets."""

    drifts: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
    noises: tuple[float, ...] = (0.01, 0.05)
    #: trajectories per batch and batches per (drift, noise, sign)
    rows: int = 64
    batches: int = 8
    #: trajectory lengths are drawn uniformly in [min_len, max_len]
    min_len: int = 4
    max_len: int = 32
    c_plus: float = 0.12
    c_minus: float = 0.05
    eps: float = 0.04
    seed: int = 0


def _batch(cfg: CompareConfig, drift: float, noise: float, sign: int, gen: torch.Generator
           ) -> tuple[Tensor, Tensor, Hierarchy]:
    lengths = torch.randint(cfg.min_len, cfg.max_len + 1, (cfg.rows,), generator=gen)
    mask = torch.arange(cfg.max_len)[None, :] < lengths[:, None]
    x = sign * drift + noise * torch.randn(cfg.rows, cfg.max_len, generator=gen, dtype=F64)
    adv = torch.randn(cfg.rows, 1, generator=gen, dtype=F64).expand_as(x)
    x, adv = x * mask, adv * mask
    return x, adv, Hierarchy.from_padded(mask)


def _regimes(x: Tensor, h: Hierarchy, cfg: CompareConfig) -> Tensor:
    """``[B]`` index of :data:`REGIMES` under the paper's gate."""
    out = losses.compute("fiberpo", x, torch.zeros_like(x), torch.ones_like(x), h.mask,
                         hierarchy=h, c_plus=cfg.c_plus, c_minus=cfg.c_minus, eps=cfg.eps)
    reg = out.regimes
    glob = reg.global_
    at_eps = torch.from_numpy(reg.n_eps > 0)
    return torch.where(glob != 0, 2, torch.where(at_eps, 1, 0))


def _delta(cfg: CompareConfig, mapping: str, sign: int) -> float:
    """The plugin's ``delta`` matched to the paper's budgets (see the module docstring)."""
    if mapping == "sum":
        return cfg.c_plus + cfg.c_minus
    return cfg.c_plus if sign > 0 else cfg.c_minus


def measure(cfg: CompareConfig) -> list[dict]:
    """One row per mapping, sign, noise, drift and regime (regimes with no trajectory are
    left out): ``rel_diff`` and ``cosine`` over the regime's trajectories of all batches."""
    gen = torch.Generator().manual_seed(cfg.seed)
    paper = {"c_plus": cfg.c_plus, "c_minus": cfg.c_minus, "eps": cfg.eps}
    rows = []
    for noise in cfg.noises:
        for drift in cfg.drifts:
            for sign in (1, -1):
                # per (mapping, regime): sum |a-b|^2, |g|^2, <a,b>, |a|^2, |b|^2, count
                acc = {(m, r): np.zeros(6) for m in MAPPINGS for r in range(len(REGIMES))}
                for _ in range(cfg.batches):
                    x, adv, h = _batch(cfg, drift, noise, sign, gen)
                    reg = _regimes(x, h, cfg)
                    c_fp = gs.coefficients("fiberpo", x, adv, h, paper)
                    b, g = c_fp["total"], c_fp["ungated"]
                    for mapping in MAPPINGS:
                        a = gs.coefficients("fiberpo_clamp", x, adv, h, {
                            "delta": _delta(cfg, mapping, sign), "eps": cfg.eps})["total"]
                        per = torch.stack([((a - b) ** 2).sum(1), (g ** 2).sum(1),
                                           (a * b).sum(1), (a ** 2).sum(1), (b ** 2).sum(1),
                                           torch.ones(a.shape[0], dtype=F64)])
                        for r in range(len(REGIMES)):
                            acc[(mapping, r)] += per[:, reg == r].sum(1).numpy()
                for (mapping, r), (dd, gg, ab, aa, bb, n) in acc.items():
                    if n == 0:
                        continue
                    rows.append({
                        "mapping": mapping, "sign": sign, "noise": noise, "drift": drift,
                        "regime": REGIMES[r], "trajectories": int(n),
                        "rel_diff": math.sqrt(dd / gg) if gg > 0 else 0.0,
                        "cosine": ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        out = []
        for r in csv.DictReader(f):
            out.append({**r, "sign": int(r["sign"]), "noise": float(r["noise"]),
                        "drift": float(r["drift"]), "trajectories": int(r["trajectories"]),
                        "rel_diff": float(r["rel_diff"]), "cosine": float(r["cosine"])})
        return out


def figure(rows: list[dict], path: Path) -> None:
    """Relative difference against drift: one panel per (mapping, noise), a line per regime
    and sign (made from the CSV's rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(len(MAPPINGS), len(noises), figsize=(4.2 * len(noises), 6.4),
                             sharex=True, sharey=True, squeeze=False)
    colors = {"inside": "tab:green", "residual": "tab:orange", "base": "tab:red"}
    for i, mapping in enumerate(MAPPINGS):
        for j, noise in enumerate(noises):
            ax = axes[i][j]
            for regime in REGIMES:
                for sign, style in ((1, "-"), (-1, "--")):
                    pts = sorted((r["drift"], r["rel_diff"]) for r in rows
                                 if (r["mapping"], r["noise"], r["regime"], r["sign"]) ==
                                 (mapping, noise, regime, sign))
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(xs, ys, style, marker="o", ms=3, color=colors[regime],
                                label=f"{regime}, drift {'up' if sign > 0 else 'down'}")
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_title(f"delta = {'C+ + C-' if mapping == 'sum' else 'C+ / C- by sign'}, "
                         f"noise {noise}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("|c_clamp - c_fiberpo| / |c_grpo|")
            if i == len(MAPPINGS) - 1:
                ax.set_xlabel("drift d of the mean log-ratio")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("fiberpo_clamp (plugin) vs fiberpo (paper): gradient difference by regime",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_lines(rows: list[dict]) -> list[str]:
    """What the data say: per noise, mapping, regime and drift direction, ``rel_diff`` at
    each drift (``-`` where no trajectory fell in that regime), as a Markdown table."""
    drifts = sorted({r["drift"] for r in rows})
    head = "| noise | delta | regime | drift | " + " | ".join(f"{d:g}" for d in drifts) + " |"
    out = [head, "|" + "---|" * (4 + len(drifts))]
    index = {(r["noise"], r["mapping"], r["regime"], r["sign"], r["drift"]): r for r in rows}
    for noise in sorted({r["noise"] for r in rows}):
        for mapping in MAPPINGS:
            for regime in REGIMES:
                for sign in (1, -1):
                    cells = [index.get((noise, mapping, regime, sign, d)) for d in drifts]
                    if not any(cells):
                        continue
                    vals = " | ".join("-" if c is None else f"{c['rel_diff']:.3g}" for c in cells)
                    out.append(f"| {noise:g} | {mapping} | {regime} | "
                               f"{'up' if sign > 0 else 'down'} | {vals} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fibration_theory.simulations.clamp_vs_fiberpo",
        description="gradient difference between the plugin's fiberpo_clamp and the paper's "
                    "fiberpo, per regime, on random batches with growing drift")
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    parser.add_argument("--figure-only", action="store_true",
                        help="remake the figure from OUT/clamp_vs_fiberpo.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "clamp_vs_fiberpo.csv"
    if not args.figure_only:
        cfg = CompareConfig(seed=args.seed)
        (out / "clamp_vs_fiberpo.json").write_text(json.dumps(dataclasses.asdict(cfg),
                                                              indent=1) + "\n")
        write_csv(measure(cfg), data)
    elif not data.exists():
        raise SystemExit(f"--figure-only: {data} does not exist; run without it first")
    rows = read_csv(data)
    figure(rows, out / "clamp_vs_fiberpo.png")
    print("fiberpo_clamp against fiberpo: |c_clamp - c_fiberpo| / |c_grpo| per regime "
          "(0: the same gradient; 1: a difference as large as GRPO's whole gradient)")
    print("\n".join(summary_lines(rows)))
    print(f"data: {data}; figure: {out / 'clamp_vs_fiberpo.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
