"""A study's hyperparameters from the command line or a config file (``--config FILE``).

Each :class:`Setting` is a flag (``--lr``), the same key in a JSON or YAML config file
(``lr: 0.1``; a flag given on the command line wins over the file) and, for a setting of the
runs themselves, a short tag that goes into the plan's name (``-lr0.1``), so runs made with
other settings are kept apart in one results folder. Values are checked here: a bad one
raises ``ValueError`` naming its flag. What was used is saved with the results
(``plan.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    """One settable hyperparameter."""

    #: the key (``lr``; the flag is ``--lr``, dashes for underscores)
    key: str
    type: type
    help: str
    #: tag in the plan's name (``""``: the setting does not change the runs' identity,
    #: e.g. a number of seeds)
    tag: str = ""
    #: smallest allowed value
    minimum: float = 1

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.flag} must be a number, got {value!r}")  # noqa: TRY004
        if self.type is int and value != int(value):
            raise ValueError(f"{self.flag} must be an integer, got {value!r}")
        value = self.type(value)
        if not (math.isfinite(value) and value >= self.minimum):
            raise ValueError(f"{self.flag} must be >= {self.minimum:g} and finite, got {value}")
        if self.type is float and self.minimum == 0 and value == 0:
            raise ValueError(f"{self.flag} must be > 0, got {value}")
        return value


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """``--config FILE`` and one flag per setting (default: the plan's value)."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="a JSON or YAML file of settings (keys: "
                             + ", ".join(s.key for s in settings) + "); flags win over it")
    for s in settings:
        parser.add_argument(s.flag, type=s.type, default=None, dest=s.key,
                            help=s.help + " (plan default)")


def load_config(path: Path | None, settings: Sequence[Setting]) -> dict[str, Any]:
    """The settings of a JSON (``.json``) or YAML file; unknown keys are refused."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"--config: cannot read {path} ({err.strerror})") from None
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ImportError:
        raise ValueError("--config: a YAML file needs PyYAML (pip install pyyaml), or "
                         "give a .json file") from None
    except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise ValueError(f"--config: {path} does not parse ({err})") from None
    except Exception as err:  # noqa: BLE001 - yaml.YAMLError without importing yaml here
        raise ValueError(f"--config: {path} does not parse ({type(err).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of settings")  # noqa: TRY004
    known = {s.key for s in settings}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config: unknown settings {unknown}; known: {sorted(known)}")
    return data


def collect(args: argparse.Namespace, settings: Sequence[Setting]) -> dict[str, Any]:
    """The settings given (config file first, flags over it), each checked."""
    given = load_config(getattr(args, "config", None), settings)
    for s in settings:
        if getattr(args, s.key, None) is not None:
            given[s.key] = getattr(args, s.key)
    by = {s.key: s for s in settings}
    return {k: by[k].check(v) for k, v in given.items()}


def suffix(values: Mapping[str, Any], settings: Sequence[Setting]) -> str:
    """The plan-name suffix of the run-changing settings in ``values``, e.g. ``-lr0.1-g4``."""
    return "".join(f"-{s.tag}{values[s.key]:g}" for s in settings
                   if s.tag and s.key in values)
