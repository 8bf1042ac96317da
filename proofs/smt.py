"""Certificate method ``smt``: statements proved for all real inputs by the z3 SMT solver.

A :class:`Claim` is ``hypotheses => conclusion`` over real (and integer) variables, written in
z3's real arithmetic with piecewise-linear terms (``If``) and, where a statement multiplies
two unknowns, polynomial ones. It is *proved* when ``hypotheses and not conclusion`` is
unsatisfiable (z3 answers ``unsat``); that covers every real value of the free variables, not a
sample. Each claim is paired with a deliberately false variant (a halved bound, a dropped
assumption, a wrong maximizer) that must come back ``sat``, with the counterexample printed:
a proof method that cannot refute a false statement certifies nothing.

z3 may answer ``unknown`` (a timeout, or its nonlinear procedure giving up). That is reported
as a timeout and fails the certificate; it never counts as a proof.

The z3 encodings of the paper's objects (clip, ``D_TV`` of eq 39, the APC gate of Def D.8,
``g_agg`` of eq 10) are written here from the paper's definitions, independently of the
numerical code under test.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Literal

import z3
from fibration_theory.proofs.registry import Outcome

Answer = Literal["unsat", "sat", "unknown"]

#: per-claim budget of the default run in z3's resource units ("rlimit"), which count solver
#: work and so do not depend on the machine's load; the hardest default claim (eq 20 at T = 2)
#: takes about 1.3e7. ``--thorough`` allows ten times more.
RLIMIT = 60_000_000
#: a wall-clock backstop per claim (seconds of z3 time are not deterministic; the rlimit is)
TIMEOUT_MS = 300_000


@dataclasses.dataclass(frozen=True)
class Claim:
    """``hypotheses => conclusion`` for all values of the free variables.

    ``sizes`` says what is fixed (counts, number of actions) and what is symbolic.
    """

    name: str
    sizes: str
    hypotheses: tuple[z3.BoolRef, ...]
    conclusion: z3.BoolRef


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: Claim
    answer: Answer
    seconds: float
    note: str = ""  # the counterexample (sat) or z3's reason (unknown)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A claim that must be proved and a false variant of it that must be refuted."""

    proof: Claim
    false: Claim


def claim(name: str, sizes: str, hypotheses: Sequence[z3.BoolRef], conclusion: z3.BoolRef
          ) -> Claim:
    return Claim(name, sizes, tuple(hypotheses), conclusion)


def decide(c: Claim, rlimit: int | None = None, timeout_ms: int | None = None) -> Verdict:
    """Ask z3 for a counterexample to ``c``: ``unsat`` proves it, ``sat`` refutes it; past the
    resource limit ``rlimit`` (default :data:`RLIMIT`) or ``timeout_ms`` it answers
    ``unknown``."""
    solver = z3.Solver()
    limit = int(RLIMIT if rlimit is None else rlimit)
    solver.set("rlimit", limit)
    solver.set("timeout", int(TIMEOUT_MS if timeout_ms is None else timeout_ms))
    solver.add(*c.hypotheses)
    solver.add(z3.Not(c.conclusion))
    start = time.perf_counter()
    result = solver.check()
    seconds = time.perf_counter() - start
    if result == z3.unsat:
        return Verdict(c, "unsat", seconds)
    if result == z3.sat:
        model = solver.model()
        # the user's variables (z3's fresh helpers, named with '!', are left out)
        shown = sorted((str(d), _fmt(model[d])) for d in model.decls()
                       if d.arity() == 0 and "!" not in str(d))
        return Verdict(c, "sat", seconds, ", ".join(f"{k}={v}" for k, v in shown))
    reason = solver.reason_unknown()
    if reason == "canceled":  # what z3 says when the resource limit is reached
        reason = f"resource limit {limit:.1e} reached"
    return Verdict(c, "unknown", seconds, reason)


def _fmt(value: z3.ExprRef) -> str:
    if z3.is_rational_value(value):
        frac = value.as_fraction()
        return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    if z3.is_algebraic_value(value):
        return value.as_decimal(6)
    return str(value)


def describe(v: Verdict, expect: Answer) -> str:
    """One line: claim, sizes, answer, time; the counterexample of a refuted claim."""
    word = {"unsat": "proved", "sat": "refuted", "unknown": "TIMEOUT/unknown"}[v.answer]
    line = f"{v.claim.name} [{v.claim.sizes}]: {word} ({v.answer}, {v.seconds:.2f}s)"
    if v.answer == "sat":
        line += f", counterexample {v.note}"
    elif v.answer == "unknown":
        line += f", z3: {v.note}"
    if v.answer != expect:
        line += f"  <-- expected {expect}"
    return line


def check_pairs(pairs: Sequence[Pair], *, thorough: bool = False) -> Outcome:
    """Decide every proof (must be ``unsat``) and false variant (must be ``sat``).

    ``residual`` counts the claims that did not come out as expected (timeouts included).
    ``detail`` groups the claims by name: the sizes proved, the slowest solver time, and for
    each false variant one counterexample; every unexpected answer is listed in full.
    """
    rlimit = 10 * RLIMIT if thorough else RLIMIT
    groups: dict[tuple[str, str], list[Verdict]] = {}
    surprises: list[str] = []
    for pair in pairs:
        for c, expect in ((pair.proof, "unsat"), (pair.false, "sat")):
            v = decide(c, rlimit)
            groups.setdefault((c.name, expect), []).append(v)
            if v.answer != expect:
                surprises.append(describe(v, expect))
    parts = []
    for (name, expect), verdicts in groups.items():
        slowest = max(v.seconds for v in verdicts)
        sizes = _sizes(v.claim.sizes for v in verdicts)
        good = sum(v.answer == expect for v in verdicts)
        if expect == "unsat":
            parts.append(f"PROVED {good}/{len(verdicts)}: {name} [{sizes}] "
                         f"(slowest {slowest:.2f}s)")
        else:
            example = next((v for v in verdicts if v.answer == "sat"), None)
            shown = f"; e.g. [{example.claim.sizes}] {example.note}" if example else ""
            parts.append(f"FALSE VARIANT REFUTED {good}/{len(verdicts)}: {name}{shown}")
    bad = len(surprises)
    head = (f"all {len(pairs)} claims proved (unsat) and all {len(pairs)} false variants "
            "refuted (sat)" if bad == 0 else
            f"{bad} of {2 * len(pairs)} answers not as expected: " + "; ".join(surprises))
    return Outcome(residual=float(bad), tol=0.0, ok=bad == 0,
                   detail=head + ". " + "; ".join(parts))


def _sizes(all_sizes) -> str:
    """The sizes of a group of claims, listed when few, else counted with the first and last."""
    seen = list(dict.fromkeys(all_sizes))
    if len(seen) <= 3:
        return " | ".join(seen)
    return f"{len(seen)} size sets: {seen[0]} ... {seen[-1]}"


# --- z3 encodings of the paper's elementary objects -------------------------------------

def zabs(x: z3.ArithRef) -> z3.ArithRef:
    return z3.If(x >= 0, x, -x)


def zmax0(x: z3.ArithRef) -> z3.ArithRef:
    return z3.If(x > 0, x, 0)


def zclip(x: z3.ArithRef, lo: z3.ArithRef, hi: z3.ArithRef) -> z3.ArithRef:
    """``clip(x, lo, hi)`` for ``lo <= hi``."""
    return z3.If(x > hi, hi, z3.If(x < lo, lo, x))


def tv(counts: Sequence, w: Sequence) -> z3.ArithRef:
    """``D_TV(s, w) = (1/T_s) sum_a n_a |w_a|`` (eq 39 as printed), one state."""
    return sum(n * zabs(x) for n, x in zip(counts, w)) / sum(counts)


def apc_gate(counts: Sequence, u: Sequence, radius: z3.ArithRef) -> list[z3.ArithRef]:
    """``G(u)_a = clip(u_a, T_s (delta - D(s, u)) + |u_a|)`` of Def D.8 (one state), with
    ``clip(x, B) = clip(x, -B+, B+)``."""
    t_s = sum(counts)
    d = tv(counts, u)
    out = []
    for x in u:
        b = zmax0(t_s * (radius - d) + zabs(x))
        out.append(zclip(x, -b, b))
    return out


def weighted_mean(counts: Sequence, w: Sequence) -> z3.ArithRef:
    """``(1/T_s) sum_a n_a w_a``: the correction ``C(w)_s`` of eq 74 at one state."""
    return sum(n * x for n, x in zip(counts, w)) / sum(counts)


def g_agg(x: z3.ArithRef, c: z3.ArithRef, k: z3.ArithRef, *, star=None) -> z3.ArithRef:
    """``g_agg(x, C, k)`` of eq 10: ``x`` for ``|x| <= C``; ``sign(x)(k+1)C - k x`` for
    ``C < |x| < C*``; 0 beyond, with ``C* = (1 + 1/k) C`` (``star`` overrides it for a false
    variant)."""
    k = k if z3.is_expr(k) else z3.RealVal(k)
    c_star = (1 + 1 / k) * c if star is None else star
    sign = z3.If(x >= 0, 1, -1)
    return z3.If(zabs(x) <= c, x, z3.If(zabs(x) < c_star, sign * (k + 1) * c - k * x, 0))


def extreme(values: Sequence, name: str, *, largest: bool) -> tuple[z3.ArithRef, list]:
    """A fresh variable equal to ``max(values)`` (or min) and the constraints saying so."""
    m = z3.FreshReal(name)
    bound = [m >= v if largest else m <= v for v in values]
    return m, bound + [z3.Or([m == v for v in values])]
