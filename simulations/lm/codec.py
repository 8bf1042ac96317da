"""Tokenizers behind one small interface: text <-> ids, a pad id and the stop ids.

:class:`CharCodec` is the project's own character-level tokenizer for the from-scratch
model (every character of its alphabet is one token; ids 0 and 1 are ``<pad>`` and
``<eos>``). :class:`HFCodec` wraps a Hugging Face tokenizer of a pretrained checkpoint; its
stop ids are the end-of-sequence ids and every token whose text holds a newline, because the
few-shot prompts of :mod:`.tasks` end an answer with a line break.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

#: every character the tasks of :mod:`.tasks` write in the compact format
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCPRS+=:?. "


class Codec(Protocol):
    """What sampling, training and rewards need from a tokenizer."""

    pad_id: int
    stop_ids: frozenset[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class CharCodec:
    """Character-level tokenizer: ``<pad>`` = 0, ``<eos>`` = 1, then one id per character."""

    PAD, EOS = "<pad>", "<eos>"

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet must be non-empty and hold each character once")
        self.alphabet = alphabet
        self.pad_id, self.eos_id = 0, 1
        self.stop_ids = frozenset({self.eos_id})
        self._index = {c: i + 2 for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 2

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise ValueError(f"text: character {err.args[0]!r} is not in the alphabet "
                             f"{self.alphabet!r}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Characters of ``ids`` up to the first ``<eos>``; ``<pad>`` is skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i == self.pad_id:
                continue
            if not 2 <= i < self.vocab_size:
                raise ValueError(f"ids: {i} is outside the vocabulary (size {self.vocab_size})")
            out.append(self.alphabet[i - 2])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        from fibration_theory.atomic import write_text

        write_text(path, json.dumps({"kind": "char", "alphabet": self.alphabet}))

    @classmethod
    def load(cls, path: str | Path) -> CharCodec:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        if spec.get("kind") != "char":
            raise ValueError(f"path: {path} does not hold a character tokenizer")
        return cls(spec["alphabet"])


class HFCodec:
    """A Hugging Face tokenizer; no special tokens are added when encoding."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("tokenizer: has no eos_token_id; cannot tell where answers end")
        pad = tokenizer.pad_token_id
        self.pad_id = int(eos if pad is None else pad)
        newline = [i for i in range(len(tokenizer))
                   if "\n" in tokenizer.decode([i], skip_special_tokens=False)]
        self.stop_ids = frozenset({int(eos), *newline})

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` up to (without) the first stop token."""
        kept = []
        for i in ids:
            if int(i) in self.stop_ids:
                break
            kept.append(int(i))
        return self.tok.decode(kept, skip_special_tokens=True)
