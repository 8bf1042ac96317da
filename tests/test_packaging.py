"""Packaging: one top-level import name, and no stray imports of the repository's folders.

The repository keeps ``proofs/``, ``simulations/`` and ``benchmarks/`` at its top level;
installed, they are ``fibration_theory.proofs``, ``.simulations`` and ``.benchmarks``
(``pyproject.toml``'s ``package-dir``).
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"proofs": "fibration_theory.proofs", "simulations": "fibration_theory.simulations",
          "benchmarks": "fibration_theory.benchmarks"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_of(folder: Path) -> str:
    rel = folder.relative_to(ROOT).parts
    head = MAPPED.get(rel[0], rel[0])
    return ".".join((head, *rel[1:]))


def test_every_package_folder_is_installed():
    """Property: every folder with an ``__init__.py`` under the installed roots is listed in
    ``pyproject.toml``, under the name its ``package-dir`` mapping gives it."""
    listed = set(_config()["packages"])
    found = {_package_of(p.parent) for root in ("fibration_theory", *MAPPED)
             for p in (ROOT / root).rglob("__init__.py")}
    assert found == listed, (sorted(found - listed), sorted(listed - found))
    assert _config()["package-dir"] == {"fibration_theory": "fibration_theory",
                                        **{v: k for k, v in MAPPED.items()}}


def test_no_bare_imports_of_the_mapped_folders():
    """Property: no module or test imports ``proofs``, ``simulations`` or ``benchmarks`` as a
    top-level name (that would be a second copy of the module, and collide with other
    projects' packages once installed)."""
    bare = re.compile(r"^\s*(from|import)\s+(proofs|simulations|benchmarks)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for root in ("fibration_theory", "tests", *MAPPED)
                 for p in (ROOT / root).rglob("*.py") if bare.search(p.read_text())]
    assert offenders == []


def test_installed_names_resolve_to_the_repository_folders():
    """Property: the mapped packages import from this checkout's top-level folders."""
    import fibration_theory.benchmarks
    import fibration_theory.proofs
    import fibration_theory.simulations

    for name, mod in (("proofs", fibration_theory.proofs),
                      ("simulations", fibration_theory.simulations),
                      ("benchmarks", fibration_theory.benchmarks)):
        assert Path(mod.__file__).resolve().parent == ROOT / name


def test_license_and_citation_match_the_project():
    """Property: LICENSE is the Apache-2.0 text pyproject declares, and CITATION.cff names the
    toolkit's version and cites the paper (arXiv 2603.08239)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    cff = (ROOT / "CITATION.cff").read_text()
    assert f"version: {project['version']}" in cff
    assert "license: Apache-2.0" in cff
    assert 'value: "arXiv:2603.08239"' in cff and 'title: "Fibration Policy Optimization"' in cff
    assert (ROOT / "fibration_theory" / "py.typed").exists()
