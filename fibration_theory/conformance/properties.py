"""Example-driven properties: each is a check of one drawn batch, searched by Hypothesis.

A :class:`Property` carries its fixed id, the paper's number and one paragraph (its meaning
and how it is checked: ``docs/properties.md`` prints it). The checks compare in float64 with
the named tolerances below; each raises :class:`~fibration_theory.conformance.search.Violation`
with the numbers that differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from fibration_theory.conformance import strategies as S
from fibration_theory.conformance.search import Budget, Objective, Result, Violation, search

Tensor = torch.Tensor

#: float64 identities (on-policy value and gradient, permutation, sharding): the loss is a
#: sum of a few dozen terms, so reordering or regrouping it moves it by ~1e-15 of the sum of
#: |terms|; 1e-10 of that leaves room for exp/log rounding, while a real violation is O(1)
IDENTITY_RTOL = 1e-10


@dataclasses.dataclass(frozen=True)
class Property:
    """A certifiable property: ``id`` (fixed), a one-line ``title``, the paper's number,
    one paragraph ``doc`` (meaning and check), and ``run(objective, budget) -> Result``."""

    id: str
    title: str
    paper: str
    doc: str
    run: Callable[[Objective, Budget], Result]


def describe_case(case: S.Case) -> dict[str, Any]:
    return {"batch": case.to_dict()}


def _masked(case: S.Case, x: Tensor) -> Tensor:
    return torch.where(case.mask, x, torch.zeros_like(x))


def close(got: float, want: float, scale: float) -> bool:
    """``|got - want| <= IDENTITY_RTOL * scale``."""
    return abs(got - want) <= IDENTITY_RTOL * scale


def grad_close(got: Tensor, want: Tensor) -> bool:
    """Entrywise within ``IDENTITY_RTOL`` of the larger of the two largest entries."""
    scale = float(torch.maximum(got.abs().max(), want.abs().max()))
    return float((got - want).abs().max()) <= IDENTITY_RTOL * scale


def worst_entry(got: Tensor, want: Tensor) -> dict[str, Any]:
    """Where ``got`` and ``want`` (``[B, T]``) differ most, and their values there."""
    i = int((got - want).abs().argmax())
    row, tok = divmod(i, got.shape[1])
    return {"at": [row, tok], "got": float(got[row, tok]), "expected": float(want[row, tok])}


def example_property(strategy: st.SearchStrategy, check: Callable[[Objective, Any], Any],
                     describe: Callable[[Any], dict[str, Any]] = describe_case,
                     summarize: Callable[[Objective, list[Any]], Any] | None = None
                     ) -> Callable[[Objective, Budget], Result]:
    """``run`` of a property that holds when ``check`` passes on every drawn example;
    ``summarize(objective, observations)`` fills ``value``."""

    def run(objective: Objective, budget: Budget) -> Result:
        counter, observed = search(strategy, lambda ex: check(objective, ex), budget, describe)
        value = summarize(objective, observed) if summarize else None
        return Result("fails" if counter else "holds", value, counter)

    return run


# --------------------------------------------------------------------- on-policy (Thm 4.5)
def check_on_policy_value(objective: Objective, case: S.Case) -> None:
    c = S.on_policy(case)
    ev = objective.evaluate(c)
    adv = _masked(c, c.advantages)
    want = -float((ev.weights * adv).sum())
    scale = float((ev.weights * adv).abs().sum()) + ev.scale
    if not close(ev.loss, want, scale):
        raise Violation(f"on-policy loss {ev.loss!r} differs from -sum(mu * A) = {want!r}",
                        loss=ev.loss, expected=want)


def check_on_policy_gradient(objective: Objective, case: S.Case) -> None:
    c = S.on_policy(case)
    ev = objective.evaluate(c)
    want = -ev.weights * _masked(c, c.advantages)
    if not grad_close(ev.grad, want):
        raise Violation("on-policy gradient differs from -mu * A", **worst_entry(ev.grad, want))


ON_POLICY_VALUE = Property(
    "on_policy_value", "at r = 1 the loss is -sum(mu A)", "Thm 4.5 (value)",
    "At `log_prob == old_log_prob` every ratio is 1 and the loss must equal `-sum_i mu_i A_i` "
    "with the objective's own weights `mu` (the RGF form of eq 2 with `G(1) = 1`), the value "
    "of the linear surrogate `J^(1)`. Checked in float64 on drawn hierarchical batches with "
    "token-level advantages, to `IDENTITY_RTOL` of `sum |mu A| + sum |mu G A|`. First-order "
    "agreement of the value, Thm 4.5 (for FBG) and Property 5.4 (for FiberPO).",
    example_property(S.batches(), check_on_policy_value))

ON_POLICY_GRADIENT = Property(
    "on_policy_gradient", "at r = 1 the gradient is -mu A", "Thm 4.5, Property 5.4",
    "At `log_prob == old_log_prob` the gradient of the loss with respect to `log_prob` must be "
    "`-mu_i A_i` at every token, the vanilla policy gradient with the objective's weights "
    "(and 0 on padding). Checked in float64 with autograd on drawn batches whose advantages "
    "differ from token to token, to `IDENTITY_RTOL` of the largest entry. Sequence objectives "
    "that pair each token with its row's mean advantage fail it whenever a row's advantages "
    "differ (they agree for outcome advantages, one per row). First-order agreement, Thm 4.5; "
    "Property 5.4 (the Jacobian of FiberPO's gating map is the identity on-policy).",
    example_property(S.batches(), check_on_policy_gradient))

ON_POLICY_GRADIENT_OUTCOME = Property(
    "on_policy_gradient_outcome", "at r = 1 the gradient is -mu A, one advantage per row",
    "Thm 4.5, App C.4",
    "`on_policy_gradient` restricted to outcome advantages: every token of a row carries the "
    "row's advantage, as outcome rewards with group-relative advantages give (GRPO, GSPO; App "
    "C.3-C.4). Sequence objectives, which pair each token with its row's mean advantage, "
    "agree with the policy gradient here; an objective that fails `on_policy_gradient` but "
    "holds this one is first-order exact for outcome rewards only.",
    example_property(S.batches(outcome=True), check_on_policy_gradient))


# --------------------------------------------------------------------- advantage scaling
def check_homogeneous(objective: Objective, example: tuple[S.Case, float]) -> None:
    case, c = example
    base = objective.evaluate(case)
    scaled = objective.evaluate(case, advantages=case.advantages * c)
    if not close(scaled.loss, c * base.loss, c * base.scale + scaled.scale):
        raise Violation(f"loss(c A) = {scaled.loss!r} differs from c loss(A) = "
                        f"{c * base.loss!r}", loss_scaled=scaled.loss, c_times_loss=c * base.loss)
    if not grad_close(scaled.grad, c * base.grad):
        raise Violation("gradient of loss(c A) differs from c times that of loss(A)",
                        **worst_entry(scaled.grad, c * base.grad))


ADVANTAGE_HOMOGENEOUS = Property(
    "advantage_homogeneous", "loss(c A) = c loss(A) for c > 0", "eq 2 (RGF)",
    "Scaling every advantage by `c > 0` scales the loss and its gradient by `c`: the gate may "
    "read the sign of `A` (PPO's and SAPO's do) but not its size, as in the RGF form "
    "`J = sum mu G(r) A` (Def 3.1, eq 2), where `G` depends on the ratios only. Checked in "
    "float64 off-policy, `c` log-uniform in [1e-3, 1e3], loss and gradient to "
    "`IDENTITY_RTOL`.",
    example_property(st.tuples(S.batches(), S.positive_scales()), check_homogeneous,
                     lambda ex: {"batch": ex[0].to_dict(), "c": ex[1]}))


# --------------------------------------------------------------------- permutation
def _with_permutation(case: S.Case):
    return st.tuples(st.just(case), st.permutations(list(range(case.rows))))


def check_permutation(objective: Objective, example: tuple[S.Case, list[int]]) -> None:
    case, perm = example
    base = objective.evaluate(case)
    moved = objective.evaluate(case.take_rows(perm))
    if not close(moved.loss, base.loss, base.scale + moved.scale):
        raise Violation(f"permuted loss {moved.loss!r} differs from {base.loss!r}",
                        loss=base.loss, permuted_loss=moved.loss)
    want = base.grad[torch.as_tensor(perm)]
    if not grad_close(moved.grad, want):
        raise Violation("the permuted batch's gradient is not the permuted gradient",
                        **worst_entry(moved.grad, want))


PERMUTATION_INVARIANT = Property(
    "permutation_invariant", "row order does not matter", "Def 3.1 (E is a set)",
    "Permuting the rows of a batch together with their group and domain ids leaves the loss "
    "unchanged and permutes its gradient the same way: the index set `E` of the RGF form "
    "(Def 3.1) and the hierarchy's nodes (Def 6.1) are sets, not sequences. Checked in float64 "
    "with a drawn permutation of at least two rows, to `IDENTITY_RTOL`.",
    example_property(S.batches(min_rows=2).flatmap(_with_permutation), check_permutation,
                     lambda ex: {"batch": ex[0].to_dict(), "permutation": list(ex[1])}))


# --------------------------------------------------------------------- extremes
def check_finite(objective: Objective, example: tuple[S.Case, torch.dtype]) -> str:
    case, dtype = example
    try:
        ev = objective.evaluate(case, dtype)
    except ValueError as exc:
        if "log_prob" not in str(exc):
            raise Violation(f"ValueError does not name log_prob: {exc}") from None
        return "error"
    bad = ~torch.isfinite(ev.grad)
    if not math.isfinite(ev.loss) or bool(bad.any()):
        at = [int(i) for i in bad.nonzero()[0]] if bool(bad.any()) else None
        raise Violation(f"non-finite result in {dtype}: loss {ev.loss!r}, gradient entries "
                        f"not finite: {int(bad.sum())}", loss=repr(ev.loss), grad_at=at)
    return "finite"


def _finite_summary(objective: Objective, observed: list[str]) -> dict[str, int]:
    return {"finite": observed.count("finite"), "log_prob_error": observed.count("error")}


FINITE_EXTREMES = Property(
    "finite_extremes", "finite or a ValueError naming log_prob, |log r| <= 1e4",
    "App E.5.2 (log space)",
    "For log-ratios up to `|log r| = 1e4` (and the overflow edges of every dtype: 11.1 for "
    "float16, 88.7 for float32 and bfloat16, 709.8 for float64), in float16, bfloat16, "
    "float32 and float64, the objective returns a finite loss and a finite gradient, or "
    "raises a `ValueError` whose message names `log_prob` (an exact value that does not fit "
    "the dtype). NaN, infinity or any other exception fails. The value counts the drawn "
    "batches of each outcome. The paper works with log-ratios throughout (the logarithmic "
    "approximation, App E.5.2); this property asks the same of the implementation.",
    example_property(st.tuples(S.batches(log_ratios=S.extreme_log_ratio_values()), S.dtypes()),
                     check_finite,
                     lambda ex: {"batch": ex[0].to_dict(), "dtype": str(ex[1])},
                     _finite_summary))


# --------------------------------------------------------------------- length bias
#: relative spread of trajectories' total weights read as "no length dependence"
LENGTH_RTOL = 1e-10

#: reference lengths at which the length exponent is fitted
REFERENCE_LENGTHS = (1, 2, 4, 8)


def total_weights(objective: Objective, case: S.Case) -> Tensor:
    """``[B]`` each trajectory's total on-policy weight ``sum_t dJ/d log r_t / A``, with the
    same advantage ``A`` on every token (``J = -loss``)."""
    c = S.on_policy(case)
    a = float(c.advantages[c.mask][0])
    return -_masked(c, objective.evaluate(c).grad).sum(1) / a


def check_length_bias(objective: Objective, case: S.Case) -> None:
    w = total_weights(objective, case)
    lengths = case.mask.sum(1)
    scale = float(w.abs().max())
    for i in range(case.rows):
        for j in range(i):
            if lengths[i] != lengths[j] and abs(float(w[i] - w[j])) > LENGTH_RTOL * scale:
                raise Violation(
                    f"a trajectory of length {int(lengths[j])} has total weight "
                    f"{float(w[j])!r}, one of length {int(lengths[i])} has {float(w[i])!r}",
                    lengths=lengths.tolist(), total_weights=w.tolist())


def length_exponent(objective: Objective, _observed: list[Any] | None = None) -> float | None:
    """``k`` in ``total weight ~ T^k``, fitted on one group with rows of the
    ``REFERENCE_LENGTHS`` (``None`` when a weight is not positive)."""
    n, width = len(REFERENCE_LENGTHS), max(REFERENCE_LENGTHS)
    mask = torch.arange(width)[None, :] < torch.tensor(REFERENCE_LENGTHS)[:, None]
    zeros = torch.zeros(n, dtype=torch.long)
    case = S.Case(torch.zeros(n, width, dtype=torch.float64),
                  torch.ones(n, width, dtype=torch.float64), mask, zeros, zeros)
    w = total_weights(objective, case).numpy()
    if not bool(np.all(w > 0)):
        return None
    k = np.polyfit(np.log(REFERENCE_LENGTHS), np.log(w), 1)[0]
    return round(float(k), 4) + 0.0


LENGTH_BIAS = Property(
    "length_bias", "a trajectory's total weight does not depend on its length",
    "eq 6 (weights 1/(|Tj| T_tau))",
    "With the same advantage on every token, on-policy, a trajectory's total weight "
    "`sum_t dJ/d log r_t / A` (for RGF objectives `sum_t mu_t`) is the same for trajectories "
    "of different lengths: the property holds when no drawn batch has two rows of different "
    "lengths whose total weights differ (beyond `LENGTH_RTOL`), and the shrunk counterexample "
    "shows two such rows otherwise. The value is the exponent `k` of `total weight ~ T^k`, "
    "fitted on rows of lengths 1, 2, 4, 8: 0 for FiberPO's weights `1/(|Tj| T_tau)` (eq 6), 1 "
    "for token-mean and Dr.GRPO's constant normalizer (a longer answer weighs more, by "
    "design in Dr.GRPO).",
    example_property(S.batches(min_rows=2, same_advantage=True,
                               advantages=st.sampled_from([1.0, -1.0, 0.5, 2.0])),
                     check_length_bias, summarize=length_exponent))
