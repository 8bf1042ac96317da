"""The README's example runs as written, and its two commands are the ones CI uses."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "README has no python example"
    assert len(blocks[0].strip().splitlines()) <= 5
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "tensor(" in capsys.readouterr().out


def test_readme_has_exactly_two_commands():
    text = README.read_text()
    assert text.count("<!-- main-command -->") == 1
    assert text.count("<!-- test-command -->") == 1
    ci = (README.parent / ".ci" / "run").read_text()
    assert "test-command" in ci
