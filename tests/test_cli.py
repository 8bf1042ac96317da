"""The ``fibration`` command."""

from __future__ import annotations

import subprocess
import sys

from fibration_theory import losses


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fibration_theory", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_lists_subcommands():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("losses", "verify", "figures", "reproduce", "bench"):
        assert cmd in out.stdout


def test_losses_lists_registry_one_line_each():
    out = _run("losses")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == losses.available()


def test_version_matches_the_package():
    """Property: ``fibration --version`` prints the installed distribution's version, which is
    the package's ``__version__`` and pyproject's."""
    from pathlib import Path

    import tomllib

    import fibration_theory

    out = _run("--version")
    assert out.returncode == 0, out.stderr
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert out.stdout.strip() == f"fibration {fibration_theory.__version__}"
    assert fibration_theory.__version__ == project["project"]["version"]
