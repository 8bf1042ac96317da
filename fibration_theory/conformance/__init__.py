"""Conformance suite for surrogate objectives: certify any registered objective.

A user registers an objective with :func:`fibration_theory.losses.register` in their own
module and certifies it like the toolkit's own:

>>> from fibration_theory import conformance
>>> report = conformance.certify("ppo_clip", properties=["on_policy_gradient"],
...                              max_examples=5)
>>> report.results["on_policy_gradient"].status
'holds'

Each property (:data:`PROPERTIES`, ids fixed) is a small function with its semantics in its
docstring, driven by the public Hypothesis strategies of
:mod:`fibration_theory.conformance.strategies`; a failing property carries a shrunk,
minimal counterexample. ``fibration certify`` runs them over every registered objective
and writes the matrix (``docs/properties.md``).
"""

from __future__ import annotations

from fibration_theory.conformance.certify import (
    DEFAULT_MAX_EXAMPLES,
    PROPERTIES,
    Report,
    certify,
)
from fibration_theory.conformance.properties import Property
from fibration_theory.conformance.search import Result, Violation

__all__ = ["DEFAULT_MAX_EXAMPLES", "PROPERTIES", "Property", "Report", "Result", "Violation",
           "certify"]
