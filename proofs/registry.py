"""Registry and record type shared by every certificate.

A certificate is a function ``check(rng: np.random.Generator, **overrides) -> Outcome``.
``overrides`` lets a test swap the object under test (a solver, a gate) for a deliberately
broken one and see the certificate fail: a certificate that cannot fail certifies nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

Method = Literal["symbolic", "smt", "convex", "property", "numeric"]
Status = Literal["pass", "fail", "skip"]
#: what a finding's passing check establishes about the paper: a real issue (``confirmed``),
#: no consequence (``harmless``), or a claim of the audit shown wrong (``refuted``)
Verdict = Literal["confirmed", "harmless", "refuted"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a check measured.

    ``residual`` is the worst violation seen (0 for an exact symbolic identity); the check
    passes when ``residual <= tol`` and ``ok`` is not False. ``skip_reason`` marks a check that
    could not run (a missing optional solver), never a silent pass.
    """

    residual: float
    tol: float
    detail: str = ""
    ok: bool | None = None
    skip_reason: str | None = None

    @property
    def status(self) -> Status:
        if self.skip_reason is not None:
            return "skip"
        if (self.ok is not None and not self.ok) or not np.isfinite(self.residual) or self.residual > self.tol:
            return "fail"
        return "pass"


@dataclasses.dataclass(frozen=True)
class Record:
    """One row of ``fibration verify``'s table and JSON."""

    id: str
    paper_ref: str
    statement: str
    method: Method
    status: Status
    residual: float
    tol: float
    seconds: float
    detail: str = ""
    name: str = ""
    verdict: str = ""  # findings only: Verdict when the check passes, "not reproduced" else


@dataclasses.dataclass(frozen=True)
class Certificate:
    id: str
    paper_ref: str
    statement: str
    method: Method
    check: Callable[..., Outcome]
    finding: Verdict | None = None

    @property
    def name(self) -> str:
        return f"{self.check.__module__.rsplit('.', 1)[-1]}.{self.check.__name__}"

    @property
    def has_thorough(self) -> bool:
        """Whether the check takes ``thorough=True`` (bigger sizes, more instances)."""
        return "thorough" in inspect.signature(self.check).parameters

    def run(self, rng: np.random.Generator, *, thorough: bool = False, **overrides) -> Record:
        if thorough and self.has_thorough:
            overrides = {**overrides, "thorough": True}
        start = time.perf_counter()
        try:
            out = self.check(rng, **overrides)
        except Exception as exc:  # a crash is a failure, reported with its cause
            out = Outcome(residual=float("inf"), tol=0.0, detail=f"raised {exc!r}", ok=False)
        return Record(
            id=self.id,
            paper_ref=self.paper_ref,
            statement=self.statement,
            method=self.method,
            status=out.status,
            residual=float(out.residual),
            tol=float(out.tol),
            seconds=time.perf_counter() - start,
            detail=out.detail or (out.skip_reason or ""),
            name=self.name,
            verdict=self.verdict(out.status),
        )

    def verdict(self, status: Status) -> str:
        """A finding's reading: its verdict when the evidence is reproduced, else says so."""
        if self.finding is None:
            return ""
        return self.finding if status == "pass" else f"not reproduced ({status})"


CERTIFICATES: dict[str, Certificate] = {}


def certificate(id: str, paper_ref: str, statement: str, method: Method,
                finding: Verdict | None = None):
    """Register ``check`` under its qualified name; refuse duplicates. A finding (id ``F..``)
    states what its passing check establishes (``finding``)."""
    if id.startswith("F") != (finding is not None):
        raise ValueError(f"certificate {id}: findings (ids F..) and only they take a verdict")

    def wrap(check: Callable[..., Outcome]) -> Callable[..., Outcome]:
        cert = Certificate(id, paper_ref, statement, method, check, finding)
        if cert.name in CERTIFICATES:
            raise ValueError(f"certificate {cert.name!r} is registered twice")
        CERTIFICATES[cert.name] = cert
        check.certificate = cert  # type: ignore[attr-defined]
        return check

    return wrap


def load_all() -> dict[str, Certificate]:
    """Import every ``proofs/cert_*.py`` module so that their certificates register."""
    import importlib
    import pkgutil

    import fibration_theory.proofs

    package = fibration_theory.proofs
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cert_"):
            importlib.import_module(f"fibration_theory.proofs.{info.name}")
    return dict(sorted(CERTIFICATES.items(), key=lambda kv: (_id_key(kv[1].id), kv[0])))


def _id_key(id_: str) -> tuple[str, int]:
    head = id_.rstrip("0123456789")
    tail = id_[len(head):]
    return (head, int(tail) if tail else 0)
