"""Verifiable task domains, their prompts and their rewards.

Each domain draws a problem ``(key, question, answer)`` from a generator; the reward of a
response is 1 when its text, stripped of surrounding white space, equals the answer and 0
otherwise (exact match, nothing partial). Two prompt formats:

* ``compact`` (the from-scratch model, :class:`~.codec.CharCodec`): ``TAG + key + "="``,
  for example ``"A12+34="``; the target response is the answer followed by ``<eos>``;
* ``fewshot`` (pretrained models): ``shots`` solved examples of the same domain, one
  ``"Q: ...\\nA: ...\\n"`` block each, then the question and ``"A:"``; an answer ends at the
  line break (see :class:`~.codec.HFCodec`).

Train and evaluation problems never overlap: a problem belongs to the evaluation pool when
the CRC32 of its key is divisible by ``EVAL_MODULUS``, and each split draws from its pool
by rejection. Few-shot examples come from the training pool.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from fibration_theory.simulations.streams import numpy_rng

Format = Literal["compact", "fewshot"]
Split = Literal["train", "eval"]

#: one problem in ``EVAL_MODULUS`` (by key hash) is held out for evaluation
EVAL_MODULUS = 4


@dataclasses.dataclass(frozen=True)
class Domain:
    """A task family. ``make(rng) -> (key, question, answer)``; ``key`` is compact text."""

    name: str
    tag: str
    make: Callable[[np.random.Generator], tuple[str, str, str]]


def _add(rng: np.random.Generator) -> tuple[str, str, str]:
    a, b = (int(x) for x in rng.integers(10, 100, size=2))
    return f"{a}+{b}", f"What is {a} + {b}?", str(a + b)


def _add1(rng: np.random.Generator) -> tuple[str, str, str]:
    a, b = (int(x) for x in rng.integers(1, 10, size=2))
    return f"{a}+{b}", f"What is {a} + {b}?", str(a + b)


def _reverse(rng: np.random.Generator) -> tuple[str, str, str]:
    s = "".join(rng.choice(list("abcdef"), size=4))
    return s, f"Write the letters {s} in reverse order.", s[::-1]


def _count(rng: np.random.Generator) -> tuple[str, str, str]:
    s = "".join(rng.choice(list("abc"), size=10))
    return s, f"How many times does the letter a occur in {s}?", str(s.count("a"))


def _sort(rng: np.random.Generator) -> tuple[str, str, str]:
    s = "".join(str(int(d)) for d in rng.integers(0, 10, size=4))
    return s, f"Sort the digits {s} in increasing order.", "".join(sorted(s))


def _copy(rng: np.random.Generator) -> tuple[str, str, str]:
    s = "".join(rng.choice(list("abcdefgh"), size=3))
    return s, f"Repeat the word {s}.", s


#: every domain, by name
DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("add", "A", _add),
    Domain("add1", "B", _add1),
    Domain("reverse", "R", _reverse),
    Domain("count", "C", _count),
    Domain("sort", "S", _sort),
    Domain("copy", "P", _copy),
)}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One prompt: its domain (index into the task set's domains), key and answer."""

    domain: int
    key: str
    question: str
    answer: str


def in_eval_pool(domain: str, key: str) -> bool:
    return zlib.crc32(f"{domain}:{key}".encode()) % EVAL_MODULUS == 0


def reward(response: str, answer: str) -> float:
    """1.0 when ``response`` stripped equals ``answer``, else 0.0."""
    return 1.0 if response.strip() == answer else 0.0


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The domains of a run and their prompt format."""

    domains: tuple[str, ...] = ("add", "reverse", "count")
    fmt: Format = "compact"
    shots: int = 3

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("domains: needs at least one domain")
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"domains: unknown {unknown}; choose from {sorted(DOMAINS)}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domains: repeated names in {self.domains}")
        if self.fmt not in ("compact", "fewshot"):
            raise ValueError(f"fmt must be 'compact' or 'fewshot', got {self.fmt!r}")
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")

    def draw(self, rng: np.random.Generator, per_domain: int | Sequence[int], split: Split
             ) -> list[Problem]:
        """``per_domain`` problems of each domain (one count, or one per domain) from
        ``split``'s pool, in domain-major order."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        counts = ([per_domain] * len(self.domains) if isinstance(per_domain, (int, np.integer))
                  else list(per_domain))
        if len(counts) != len(self.domains) or any(c < 0 for c in counts):
            raise ValueError(f"per_domain: needs one count >= 0 per domain, got {per_domain}")
        want_eval = split == "eval"
        out = []
        for d, (name, n) in enumerate(zip(self.domains, counts)):
            make = DOMAINS[name].make
            got = 0
            while got < n:
                key, question, answer = make(rng)
                if in_eval_pool(name, key) == want_eval:
                    out.append(Problem(d, key, question, answer))
                    got += 1
        return out

    def prompt(self, p: Problem) -> str:
        """The prompt text of ``p`` in this set's format."""
        if self.fmt == "compact":
            return f"{DOMAINS[self.domains[p.domain]].tag}{p.key}="
        shots = "".join(f"Q: {q.question}\nA: {q.answer}\n" for q in self._shots(p.domain))
        return f"{shots}Q: {p.question}\nA:"

    def target(self, p: Problem) -> str:
        """The response that earns reward 1 (without the stop token)."""
        return p.answer if self.fmt == "compact" else f" {p.answer}"

    def _shots(self, domain: int) -> Sequence[Problem]:
        rng = numpy_rng("lm/shots", step=domain)
        only = TaskSet((self.domains[domain],), "compact")
        return [dataclasses.replace(q, domain=domain) for q in only.draw(rng, self.shots, "train")]
