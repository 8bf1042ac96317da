"""Run the examples of the docs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def doc_example(page: str, name: str) -> str:
    """The python block after ``<!-- example: name -->`` in ``docs/<page>``."""
    text = (DOCS / page).read_text()
    marker = f"<!-- example: {name} -->\n```python\n"
    start = text.index(marker) + len(marker)
    return text[start:text.index("\n```", start)] + "\n"


def run_example(page: str, name: str, tmp_path: Path, timeout: int = 300
                ) -> subprocess.CompletedProcess:
    """Write the example to a file and run it in a fresh interpreter."""
    script = tmp_path / f"example_{name}.py"
    script.write_text(doc_example(page, name))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, check=False)
    return proc
