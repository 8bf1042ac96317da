"""``fibration certify``: a user's module, the JSON schema, early path errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

USER_MODULE = textwrap.dedent('''
    from fibration_theory import aggregation
    from fibration_theory.losses import Batch, Surrogate, register
    from fibration_theory.rgf import RGF

    @register("user_is", "a user's unclipped importance sampling", coupling="token")
    def user_is(batch: Batch) -> Surrogate:
        mu = aggregation.weights(batch.hierarchy, "seq-mean-token-mean", batch.dtype)
        return Surrogate(RGF(mu, batch.log_ratio.exp(), batch.advantages))
''')


def _certify(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fibration_theory", "certify", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def test_user_module_is_certified_with_the_schema(tmp_path):
    """Property: --module imports a user's file; its objective is certified; the JSON has
    exactly the documented schema; the Markdown holds the matrix; stdout ends by saying
    where both were written."""
    mod = tmp_path / "my_objectives.py"
    mod.write_text(USER_MODULE)
    out_json, out_md = tmp_path / "out" / "r.json", tmp_path / "r.md"
    res = _certify("user_is", "--module", str(mod), "--json", str(out_json), "--markdown",
                   str(out_md), "--max-examples", "5")
    assert res.returncode == 0, res.stderr
    data = json.loads(out_json.read_text())
    assert list(data) == ["objectives"] and list(data["objectives"]) == ["user_is"]
    props = data["objectives"]["user_is"]["properties"]
    assert all(set(e) == {"status", "value", "counterexample"} for e in props.values())
    assert props["trust_region"]["status"] == "fails"  # unclipped: no trust region
    assert props["trust_region"]["value"]["class"] == "none"
    assert props["on_policy_gradient"]["status"] == "holds"
    assert props["coupling"]["value"] == "token"
    assert "| user_is |" in out_md.read_text()
    assert res.stdout.strip().splitlines()[-1] == f"Written: {out_json}, {out_md}"
    assert "user_is" in res.stdout.splitlines()[1]  # the matrix summary
    assert "check" in res.stderr  # the progress bar


def test_dotted_module_from_the_working_directory(tmp_path):
    """Property: --module also takes a dotted name importable from the working directory."""
    (tmp_path / "my_objectives.py").write_text(USER_MODULE)
    res = _certify("user_is", "--module", "my_objectives", "--max-examples", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Nothing written" in res.stdout


def test_errors_are_one_line_and_early(tmp_path):
    """Property: an output path that is a directory, an unknown objective or a module that
    does not import: exit 2, one line on stderr, before any certification (no progress)."""
    for args in (["--json", str(tmp_path)], ["--markdown", str(tmp_path)], ["no_such_objective"],
                 ["--module", str(tmp_path / "missing.py")], ["--module", "no.such.module"]):
        res = _certify(*args)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fibration certify: "), (args, lines)
        assert res.stdout == ""


def test_docs_api_example_runs(tmp_path):
    """Property: the certify example of docs/api.md prints what its comments say."""
    from docs_examples import run_example

    proc = run_example("api.md", "certify", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["holds", "none"]
