"""The machinery every property shares: evaluate an objective, search for a counterexample.

An objective under test is a registered name and its hyperparameters (:class:`Objective`);
it is only ever called through :func:`fibration_theory.losses.compute`. A property's check
raises :class:`Violation` on a bad example; :func:`search` drives it with a Hypothesis
strategy and returns the shrunk (minimal) counterexample, or ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from fibration_theory import losses
from fibration_theory.conformance.strategies import Case

Tensor = torch.Tensor
Status = Literal["holds", "fails", "n/a"]


class Violation(AssertionError):
    """A drawn example on which a property fails; ``details`` say how (JSON-ready)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = {"message": message, **details}


@dataclasses.dataclass(frozen=True)
class Result:
    """One property of one objective: ``status``, the measured ``value`` (level and class
    properties) and, on failure, a minimal ``counterexample`` (JSON-ready)."""

    status: Status
    value: Any = None
    counterexample: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "value": self.value, "counterexample": self.counterexample}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How hard to search: examples per property and the Hypothesis seed."""

    max_examples: int = 25
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """``loss`` (float), ``grad`` (``[B, T]`` float64, ``d loss / d log_prob``), the
    objective's weights ``mu`` (``[B, T]`` float64) and ``scale = sum |mu G A|``, the size
    of the terms the loss sums (eq 2), against which its rounding is measured."""

    loss: float
    grad: Tensor
    weights: Tensor
    scale: float


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered objective with fixed hyperparameters (its defaults where not given)."""

    name: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def evaluate(self, case: Case, dtype: torch.dtype = torch.float64,
                 advantages: Tensor | None = None) -> Evaluation:
        """Loss and gradient at ``case`` with inputs in ``dtype``.

        ``log_prob = min(x, 0)`` and ``old_log_prob = min(-x, 0)`` for the drawn log-ratio
        ``x``: both are valid log-probabilities and their difference is exactly ``x``.
        """
        x = case.log_ratio
        lp = x.clamp(max=0).to(dtype).requires_grad_(True)
        old = (-x).clamp(max=0).to(dtype)
        adv = (case.advantages if advantages is None else advantages).to(dtype)
        out = losses.compute(self.name, lp, old, adv, case.mask, hierarchy=case.hierarchy(),
                             metrics=False, **self.params)
        if out.loss.requires_grad:
            (grad,) = torch.autograd.grad(out.loss, lp, allow_unused=True)
        else:
            grad = None
        grad = torch.zeros_like(x) if grad is None else grad.to(torch.float64)
        rgf = out.rgf
        with torch.no_grad():
            scale = float((rgf.weights * rgf.gated_ratio * rgf.advantages).abs().sum())
        return Evaluation(float(out.loss.detach()), grad,
                          rgf.weights.detach().to(torch.float64), scale)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def search(strategy: st.SearchStrategy, check: Callable[[Any], Any], budget: Budget,
           describe: Callable[[Any], dict[str, Any]]) -> tuple[dict[str, Any] | None, list[Any]]:
    """Run ``check`` on up to ``budget.max_examples`` examples of ``strategy``.

    Returns ``(counterexample, observations)``: ``counterexample`` is ``None`` when no
    example failed, else ``describe(example)`` of the shrunk example merged with the
    :class:`Violation`'s details (any other exception counts as a failure and is named);
    ``observations`` are the values ``check`` returned, over every example it passed.
    """
    observed: list[Any] = []
    last: dict[str, Any] = {}

    @settings(max_examples=budget.max_examples, database=None, deadline=None,
              derandomize=False, verbosity=Verbosity.quiet, report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @hyp_seed(budget.seed)
    @given(strategy)
    def run(example):
        try:
            obs = check(example)
        except Violation as v:
            last["failure"] = (example, v.details)
            raise
        except Exception as exc:  # an objective that raises on valid input fails the property
            last["failure"] = (example, {"message": error_text(exc)})
            raise
        observed.append(obs)

    try:
        run()
    except Exception:
        if "failure" not in last:
            raise
        example, details = last["failure"]
        return {**describe(example), **details}, observed
    return None, observed
