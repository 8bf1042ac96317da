"""The tuning design: which configurations of each method's parameters are tried, and which wins.

Every method tunes each of its own parameters (``Method.tuned``) separately, and every
method gets the same number ``n`` of configurations on the same tuning seeds. A configuration
gives each tuned parameter a *factor*: its value is the method's default times the factor.

* **Levels.** With ``n = L**2`` configurations a parameter's levels are the powers of 3
  ``3**-1, 3**0, ..., 3**(L-2)`` (``L = 4``: 1/3, 1, 3, 9; ``L = 3``: 1/3, 1, 3): evenly
  spaced on a log scale, the default (factor 1) among them.
* **One parameter**: ``n`` log-spaced factors ``3**(-1 + j/(L+1))``, ``j = 0..n-1``, over the
  same range as the levels (the levels are among them: ``j = 0, L+1, 2(L+1), ...``).
* **Two to L+1 parameters**: the orthogonal array ``OA(L**2, L+1, L, 2)`` (Bose's
  construction over the field GF(L); L16(4^5) for ``L = 4``, L9(3^4) for ``L = 3``): its
  first two columns are the ``L x L`` full factorial, and any two columns hold every pair of
  levels exactly once, so each level's mean score averages every level of every other
  parameter equally (the main effects of the sensitivity figure are unconfounded by pairs).
  Code 0 of every column is the default, so the array's row of zeros is the default
  configuration.
* **More than L+1 parameters** (a plan whose ``n`` is too small for a method): the parameters
  past the array's L+1 columns share its last column (they move together); the design says
  so (``Design.shared``).

Every design is deterministic and its first configuration is the defaults. The choice is the
configuration with the best mean tuning score (ties: the one closest to the defaults, i.e. the
smallest sum of ``|log3 factor|``). The grid-edge rule: a chosen factor on the edge of its
parameter's range also gets the factors beyond it (``x3`` and ``x9`` past the edge, or ``x3``
alone where a plan says so; that parameter moved, the others kept), on the tuning seeds,
reported and never chosen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np

#: ratio between successive levels of a parameter
BASE = 3

#: factors tried beyond an edge of a parameter's range, as multiples of the edge value
EDGE_STEPS = (BASE, BASE ** 2)

# multiplication in GF(4) = {0, 1, a, a + 1} coded 0..3 (a**2 = a + 1); addition is XOR
_GF4_MUL = np.array([[0, 0, 0, 0], [0, 1, 2, 3], [0, 2, 3, 1], [0, 3, 1, 2]])


def factor_name(f: float) -> str:
    """Name of one factor, e.g. ``x0.333``."""
    return f"x{f:.3g}"


@dataclasses.dataclass(frozen=True)
class Config:
    """One configuration: a factor per tuned parameter (in the method's order)."""

    factors: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        """The variant name of the runs: the factors joined by ``_`` (``x1`` without any)."""
        return "_".join(factor_name(f) for _, f in self.factors) or "x1"

    @property
    def as_dict(self) -> dict[str, float]:
        return dict(self.factors)

    @property
    def distance(self) -> float:
        """Distance from the defaults: the sum of ``|log3 factor|``."""
        return sum(abs(math.log(f, BASE)) for _, f in self.factors)


def side(n: int) -> int:
    """``L`` of ``n = L**2`` configurations; ``L`` must be a prime or 4."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: the number of tuning configurations must be a positive int, got {n!r}")
    root = math.isqrt(n)
    if n == 1:
        return 1
    if root * root != n or not (root == 4 or all(root % p for p in range(2, root))):
        raise ValueError(f"n: tuning configurations must be L**2 with L a prime or 4 "
                         f"(4, 9, 16, 25, 49), got {n}")
    return root


def levels(n_levels: int) -> tuple[float, ...]:
    """The ``L`` factors of a parameter: ``3**-1, ..., 3**(L-2)``."""
    return tuple(float(Fraction(BASE) ** (j - 1)) for j in range(n_levels))


def orthogonal_array(n_levels: int) -> np.ndarray:
    """``OA(L**2, L+1, L, 2)``, codes ``0..L-1``, shape ``(L**2, L+1)``.

    Row ``(a, b)`` (``a``-major) has columns ``a`` and ``lam * a + b`` for every ``lam`` of
    GF(L) (``lam = 0`` gives ``b``): Bose's construction. Row 0 is all zeros.
    """
    L = n_levels
    side(L * L)
    a, b = np.divmod(np.arange(L * L), L)
    cols = [a]
    for lam in range(L):
        if L == 4:
            cols.append(np.bitwise_xor(_GF4_MUL[lam][a], b))
        else:
            cols.append((lam * a + b) % L)
    return np.stack(cols, axis=1)


@dataclasses.dataclass(frozen=True)
class Design:
    """The tuning configurations of one method."""

    params: tuple[str, ...]
    #: ``configs[0]`` is the defaults (every factor 1)
    configs: tuple[Config, ...]
    #: what the design is, in words (e.g. ``L16(4^5) orthogonal array``)
    kind: str
    #: groups of parameters that share one column (they move together); empty normally
    shared: tuple[tuple[str, ...], ...] = ()

    def range_of(self, param: str) -> tuple[float, float]:
        """Smallest and largest factor of ``param`` in the design."""
        vals = [c.as_dict[param] for c in self.configs]
        return min(vals), max(vals)

    def edge_configs(self, chosen: Config, steps: Sequence[float] = EDGE_STEPS
                     ) -> list[tuple[str, str, Config]]:
        """``(parameter, "low"|"high", config)`` beyond every edge ``chosen`` sits on: that
        parameter at the edge value times or over each of ``steps``, the others as chosen."""
        out = []
        for p in self.params:
            lo, hi = self.range_of(p)
            f = chosen.as_dict[p]
            for edge, where, sign in ((hi, "high", 1), (lo, "low", -1)):
                if f != edge or lo == hi:
                    continue
                for step in steps:
                    g = edge * step if sign > 0 else edge / step
                    out.append((p, where, Config(tuple((q, g if q == p else v)
                                                       for q, v in chosen.factors))))
        return out


def design(params: Sequence[str], n: int) -> Design:
    """The ``n`` configurations of a method tuning ``params`` (see the module docstring)."""
    params = tuple(params)
    if len(set(params)) != len(params):
        raise ValueError(f"params: repeated names in {params}")
    L = side(n)
    k = len(params)
    if k == 0 or n == 1:
        return Design(params, (Config(tuple((p, 1.0) for p in params)),), "defaults only")
    if k == 1:
        exps = [Fraction(-1) + Fraction(j, L + 1) for j in range(n)]
        fs = [float(Fraction(BASE) ** e) if e.denominator == 1 else BASE ** float(e) for e in exps]
        fs.sort(key=lambda f: (f != 1.0, f))  # the default first, then ascending
        return Design(params, tuple(Config(((params[0], f),)) for f in fs),
                      f"{n} log-spaced values")
    lv = levels(L)
    code_to_factor = (lv[1],) + lv[:1] + lv[2:]  # code 0 is the default (factor 1)
    oa = orthogonal_array(L)
    col = [min(j, L) for j in range(k)]  # parameters past the last column share it
    rows = tuple(Config(tuple((p, code_to_factor[row[c]]) for p, c in zip(params, col)))
                 for row in oa)
    shared = (params[L:],) if k > L + 1 else ()
    kind = (f"{L}x{L} full factorial" if k == 2 else
            f"L{n}({L}^{L + 1}) orthogonal array" + (f", {', '.join(shared[0])} sharing its "
                                                     "last column" if shared else ""))
    return Design(params, rows, kind, shared)


def choose(design_: Design, scores: Mapping[str, Sequence[float]]) -> Config:
    """The configuration of ``design_`` with the best mean of ``scores[config.name]`` (ties:
    the one closest to the defaults, then the name). Configurations without scores are
    skipped; at least one must have them."""
    scored = [c for c in design_.configs if scores.get(c.name)]
    if not scored:
        raise ValueError("scores: no configuration of the design has a tuning score")
    return max(scored, key=lambda c: (round(float(np.mean(scores[c.name])), 12), -c.distance,
                                      c.name))


def label(factors: Mapping[str, float]) -> str:
    """The factors that differ from 1, e.g. ``c_plus x3, eps x0.333`` (``defaults``)."""
    moved = [f"{p} {factor_name(f)}" for p, f in factors.items() if f != 1.0]
    return ", ".join(moved) or "defaults"


def markdown(tuning: Mapping[str, Mapping]) -> str:
    """The tuning record (``tuning.json``) as a Markdown table: per method its design, the
    default's and the chosen configuration's mean tuning score, and the grid-edge checks."""
    head = ("| method | design | seeds | default score | chosen | chosen score | beyond the "
            "edge (never chosen) |")
    lines = [head, "|" + "---|" * 7]
    for m in sorted(tuning):
        rec = tuning[m]
        default = next((e["score"] for e in rec["configs"]
                        if all(f == 1.0 for f in e["factors"].values())), None)
        edge = "; ".join(f"{e['parameter']} {factor_name(e['factors'][e['parameter']])}: "
                         + ("–" if e["score"] is None else f"{e['score']:.3f}")
                         for e in rec.get("edge", [])) or "–"
        lines.append(f"| {m} | {rec['design']} | {len(rec['tune_seeds'])} | "
                     + ("–" if default is None else f"{default:.3f}")
                     + f" | {label(rec['factors'])} | {rec['score']:.3f} | {edge} |")
    return "\n".join(lines) + "\n"
