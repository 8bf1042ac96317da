"""``certify``: run the properties on one registered objective and return its report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fibration_theory import losses
from fibration_theory.conformance.coupling import COUPLING
from fibration_theory.conformance.parallel import DATA_PARALLEL_EXACT
from fibration_theory.conformance.properties import (
    ADVANTAGE_HOMOGENEOUS,
    FINITE_EXTREMES,
    LENGTH_BIAS,
    ON_POLICY_GRADIENT,
    ON_POLICY_GRADIENT_OUTCOME,
    ON_POLICY_VALUE,
    PERMUTATION_INVARIANT,
    Property,
)
from fibration_theory.conformance.search import Budget, Objective, Result
from fibration_theory.conformance.trust_region import TRUST_REGION

#: every property, in report order; ids are fixed
PROPERTIES: dict[str, Property] = {p.id: p for p in (
    ON_POLICY_VALUE, ON_POLICY_GRADIENT, ON_POLICY_GRADIENT_OUTCOME, ADVANTAGE_HOMOGENEOUS,
    COUPLING, TRUST_REGION, FINITE_EXTREMES, PERMUTATION_INVARIANT, DATA_PARALLEL_EXACT,
    LENGTH_BIAS)}

#: examples per example-driven property when not told otherwise
DEFAULT_MAX_EXAMPLES = 25


@dataclasses.dataclass(frozen=True)
class Report:
    """The properties of one objective: ``results[id]`` for each property certified."""

    name: str
    params: Mapping[str, Any]
    results: Mapping[str, Result]

    def to_json(self) -> dict[str, Any]:
        """``{"properties": {id: {"status", "value", "counterexample"}}}``."""
        return {"properties": {k: r.to_json() for k, r in self.results.items()}}

    @property
    def failed(self) -> list[str]:
        return [k for k, r in self.results.items() if r.status == "fails"]


def _property_ids(properties: Iterable[str] | None) -> list[str]:
    if properties is None:
        return list(PROPERTIES)
    ids = list(properties)
    unknown = [p for p in ids if p not in PROPERTIES]
    if unknown:
        raise ValueError(f"properties: unknown property {unknown[0]!r}; known: "
                         f"{', '.join(PROPERTIES)}")
    return ids


def certify(name: str, *, properties: Sequence[str] | None = None,
            max_examples: int = DEFAULT_MAX_EXAMPLES, seed: int = 0,
            params: Mapping[str, Any] | None = None,
            progress: Callable[[str], None] | None = None) -> Report:
    """Certify the registered objective ``name``.

    Args:
        name: a name from :func:`fibration_theory.losses.available` (a user's objective,
            registered with :func:`fibration_theory.losses.register`, included).
        properties: ids from :data:`PROPERTIES` (default: all).
        max_examples: drawn examples per example-driven property (Hypothesis).
        seed: Hypothesis seed; the same seed gives the same report.
        params: hyperparameters passed to the objective (default: its defaults).
        progress: called with each property's id once it has run.

    Returns:
        :class:`Report`; a failed property carries its shrunk counterexample.

    Raises:
        ValueError: naming the argument, for an unknown objective or property, or
            ``max_examples < 1``.
    """
    losses.describe(name)  # unknown names raise, listing the valid ones
    ids = _property_ids(properties)
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an integer >= 1, got {max_examples!r}")
    objective = Objective(name, dict(params or {}))
    budget = Budget(max_examples, seed)
    results = {}
    for pid in ids:
        results[pid] = PROPERTIES[pid].run(objective, budget)
        if progress is not None:
            progress(pid)
    return Report(name, objective.params, results)
