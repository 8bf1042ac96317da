"""Commands that fail early and stop cleanly: every output path is checked before any work
(one line, exit status 2), a failing command removes the empty folder it created, and
SIGINT/SIGTERM end with one line saying what was kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fibration_theory import cli
from fibration_theory.outputs import OutputPathError, check_path, output_folder

ROOT = Path(__file__).resolve().parents[1]

#: every command and its output flags: (argv before the path, flag, kind)
OUTPUTS = [
    (["reproduce", "--quick"], "--out", "dir"),
    (["lm", "--quick"], "--out", "dir"),
    (["figures", "--paper"], "--out", "dir"),
    (["verify"], "--json", "file"),
    (["verify"], "--markdown", "file"),
    (["bench", "--quick"], "--json", "file"),
    (["bench", "--quick"], "--markdown", "file"),
]


def _bad_paths(tmp_path: Path, kind: str) -> dict[str, Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    paths = {"under a file": blocker / "sub" / "x"}
    paths["in the way"] = blocker if kind == "dir" else folder
    if os.geteuid() != 0:  # root writes anywhere: the permission case cannot fail for root
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        paths["not writable"] = locked / "x"
    return paths


@pytest.mark.parametrize(("argv", "flag", "kind"), OUTPUTS)
def test_every_output_path_is_checked_before_any_work(tmp_path, capsys, monkeypatch, argv,
                                                      flag, kind):
    import importlib

    def no_work(*a, **k):
        pytest.fail("the command started although its output path is unusable")

    module = importlib.import_module(cli.SUBCOMMANDS[argv[0]][0])
    monkeypatch.setattr(module, "run", no_work)
    for why, path in _bad_paths(tmp_path, kind).items():
        with pytest.raises(SystemExit) as exc:
            cli.main([*argv, flag, str(path)])
        assert exc.value.code == 2, why
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{flag} {path}" in err, (why, err)
        assert err.startswith(f"fibration {argv[0]}: ")
    assert not (tmp_path / "a-file" / "sub").exists()


def test_check_path_accepts_what_can_be_written(tmp_path):
    check_path(tmp_path / "new" / "deeper", "dir", "--out")
    check_path(tmp_path, "dir", "--out")
    check_path(tmp_path / "new" / "f.json", "file", "--json")
    (tmp_path / "old.json").write_text("{}")
    check_path(tmp_path / "old.json", "file", "--json")
    with pytest.raises(OutputPathError, match="--out"):
        check_path(tmp_path / "old.json", "dir", "--out")


def test_a_failing_command_removes_only_the_empty_folders_it_created(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), output_folder(target):
        assert target.is_dir()
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
    with pytest.raises(KeyboardInterrupt), output_folder(target):
        (target / "plan.json").write_text("{}")
        raise KeyboardInterrupt
    assert (target / "plan.json").exists()  # something was kept: the folder stays
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), output_folder(existing):
        raise RuntimeError("boom")
    assert existing.is_dir()  # not created by the command: never removed


def test_reproduce_with_bad_arguments_leaves_no_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SystemExit, match="workers"):
        cli.main(["reproduce", "--quick", "--workers", "3", "--out", str(out)])
    assert not out.exists()


def _start(tmp_path: Path, workers: int) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "res"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fibration_theory.cli", "reproduce", "--quick", "--only",
         "exact", "--no-figures", "--no-progress", "--workers", str(workers), "--out",
         str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("runs/*/*/*/*.jsonl")):  # the runs are under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, out


@pytest.mark.parametrize(("sig", "workers", "group"), [(signal.SIGTERM, 1, False),
                                                         (signal.SIGINT, 2, True)])
def test_a_signal_ends_the_command_with_one_line_saying_what_was_kept(tmp_path, sig,
                                                                       workers, group):
    """SIGTERM to the command; SIGINT to its whole process group (Ctrl-C in a terminal,
    which also reaches the worker processes)."""
    proc, out = _start(tmp_path, workers)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    kept = sum(1 for _ in (out / "runs").rglob("*.jsonl")) if (out / "runs").exists() else 0
    assert lines[0] == (f"fibration reproduce: stopped by {signal.Signals(sig).name}; kept "
                        f"{kept} finished run files under {out}; the same command resumes "
                        "from them")


def test_a_failing_figures_command_removes_the_folder_it_created(tmp_path, capsys):
    out = tmp_path / "figs"
    assert cli.main(["figures", "--from", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert not out.exists()
