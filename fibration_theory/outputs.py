"""Where commands write: output paths checked before any work, folders that are cleaned up
when a command fails, result files that can be set aside, and folder-relative paths.

* :func:`check_paths` refuses an output path that cannot be written (a file where a folder
  is wanted, a folder where a file is wanted, a path under a file, a place without write
  permission) with one line naming the flag; ``fibration`` calls it for every ``--out``,
  ``--json`` and ``--markdown`` before it runs a command, and exits with status 2.
* :func:`output_folder` creates a results folder and removes it again if the command fails
  (or is stopped) while the folder is still empty.
* :func:`set_aside` renames a result file that cannot be read (never deletes it) and warns,
  so the run that wrote it is recomputed.
* :func:`relative_to` / :func:`resolve_under` store paths inside a results folder relative
  to it, so a moved or copied folder is still recognised and reused.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

Kind = Literal["dir", "file"]

#: the output flags of every ``fibration`` command: attribute -> what the path must be
OUTPUT_FLAGS: dict[str, Kind] = {"out": "dir", "json": "file", "markdown": "file"}


class OutputPathError(ValueError):
    """An output path that cannot be written; the message is one line naming the flag."""


class SetAsideWarning(UserWarning):
    """A result file that does not load was renamed and its run will be recomputed."""


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: the name is taken
            return p
        p = p.parent
    return p


def check_path(path: str | os.PathLike, kind: Kind, flag: str) -> None:
    """Raise :class:`OutputPathError` unless ``path`` can be written as a ``kind``.

    ``kind="dir"``: ``path`` is a folder or can be created as one; ``kind="file"``: ``path``
    is not a folder and its parent is (or can be created as) a writable folder.
    """
    p = Path(path).expanduser().absolute()
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {path}: a file is in the way (a folder is needed)")
    if kind == "file" and p.is_dir():
        raise OutputPathError(f"{flag} {path}: is a folder (a file path is needed)")
    base = _nearest_existing(p if kind == "dir" else p.parent)
    if not base.is_dir():
        raise OutputPathError(f"{flag} {path}: {base} is a file, so nothing can be created "
                              "under it")
    target = p if kind == "dir" and p.exists() else base
    if kind == "file" and p.exists():
        target = p
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise OutputPathError(f"{flag} {path}: {target} is not writable")


def check_paths(args: Any, command: str) -> None:
    """Check every output flag of :data:`OUTPUT_FLAGS` set on ``args``; on a bad one print
    ``fibration COMMAND: --flag PATH: why`` to stderr and exit with status 2."""
    import sys

    for attr, kind in OUTPUT_FLAGS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        try:
            check_path(value, kind, "--" + attr.replace("_", "-"))
        except OutputPathError as err:
            print(f"fibration {command}: {err}", file=sys.stderr)
            raise SystemExit(2) from None


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create the results folder ``path`` (and missing parents); if the body raises (a
    failure, Ctrl-C, SIGTERM) the folders created here that are still empty are removed."""
    p = Path(path)
    created = []
    q = p.absolute()
    while not q.exists():
        created.append(q)
        q = q.parent
    p.mkdir(parents=True, exist_ok=True)
    try:
        yield p
    except BaseException:
        for folder in created:  # innermost first
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def set_aside(path: str | os.PathLike, reason: str) -> Path:
    """Rename the unreadable result file ``path`` to ``NAME.corrupt`` (``NAME.corrupt2``, ...
    if taken), warn with both names and ``reason``, and return the new path."""
    p = Path(path)
    k, new = 1, p.with_name(p.name + ".corrupt")
    while new.exists():
        k += 1
        new = p.with_name(f"{p.name}.corrupt{k}")
    os.replace(p, new)
    warnings.warn(f"{p}: {reason}; set aside as {new.name}, recomputing", SetAsideWarning,
                  stacklevel=2)
    return new


def relative_to(obj: Any, root: str | os.PathLike) -> Any:
    """``obj`` (nested dicts, lists, strings) with every absolute path inside ``root`` written
    relative to it: ``"warm:/res/warmstart"`` becomes ``"warm:warmstart"`` for root
    ``/res``. A string is rewritten where ``root/`` starts it or follows a ``kind:`` prefix."""
    base = str(Path(root).absolute())
    if isinstance(obj, dict):
        return {k: relative_to(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(relative_to(v, root) for v in obj)
    if isinstance(obj, str):
        prefix, sep, rest = obj.rpartition(":") if ":" in obj else ("", "", obj)
        for candidate in (base, str(Path(base).resolve())):
            if rest == candidate:
                return prefix + sep + "."
            if rest.startswith(candidate + os.sep):
                return prefix + sep + rest[len(candidate) + 1:]
    return obj


def resolve_under(path: str, root: str | os.PathLike) -> Path:
    """``path`` itself when absolute, else ``root / path``."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p
