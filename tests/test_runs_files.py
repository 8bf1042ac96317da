"""Runs that survive: corrupt or truncated run files are set aside and recomputed, result
folders are reused after a move or a copy, configs store folder-relative paths.

The experiment ``fake`` is this module's ``run_one`` (patched into ``EXPERIMENT_MODULES``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from fibration_theory.simulations import runner as rn

from fibration_theory.outputs import SetAsideWarning, relative_to, resolve_under

CALLS: list[int] = []


@dataclasses.dataclass(frozen=True)
class FolderConfig:
    """A config naming a folder inside the results folder (like ``RLConfig``)."""

    folder: str
    scale: int = 2

    def at(self, root):
        return dataclasses.replace(self, folder=str(resolve_under(self.folder, root)))


def run_one(config, spec):
    CALLS.append(spec.seed)
    folder = Path(config.folder) if hasattr(config, "folder") else None
    if folder is not None and not folder.is_absolute():
        raise AssertionError("run_one must get the resolved folder")
    scale = config.scale if hasattr(config, "scale") else config["scale"]
    return rn.RunResult([{"x": spec.seed}], {"value": float(scale * spec.seed)})


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(rn.EXPERIMENT_MODULES, "fake", __name__)
    CALLS.clear()
    yield


def jobs(n: int, config=None):
    config = {"scale": 2} if config is None else config
    return [(rn.RunSpec("fake", "m", "v", "eval", s, (("p", 1),)), config) for s in range(n)]


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "truncated":  # killed mid-write without the atomic replace: half a last line
        path.write_text(text[: text.rindex("{") + 7])
    elif how == "no-final":  # whole lines, but the final one is missing
        path.write_text("".join(text.splitlines(keepends=True)[:-1]))
    elif how == "garbage":
        path.write_bytes(b"\x00\xff\xfe not json at all")
    elif how == "empty":
        path.write_text("")


@pytest.mark.parametrize("how", ["truncated", "no-final", "garbage", "empty"])
def test_a_damaged_run_file_is_set_aside_and_recomputed(tmp_path, fake, how):
    rn.run_all(tmp_path, jobs(3), workers=1, progress=False)
    path = tmp_path / jobs(3)[1][0].relpath()
    _damage(path, how)
    with pytest.raises(rn.IncompleteRunFile, match=str(path)):
        rn.read_run(path)
    CALLS.clear()
    with pytest.warns(SetAsideWarning, match=str(path)):
        counts = rn.run_all(tmp_path, jobs(3), workers=1, progress=False)
    assert counts == {"done": 1, "skipped": 2, "failed": 0} and CALLS == [1]
    aside = path.with_name(path.name + ".corrupt")
    assert aside.exists(), "the damaged file is kept under another name, not deleted"
    assert rn.read_run(path)["final"]["value"] == 2.0
    assert len(rn.load_runs(tmp_path, "fake")) == 3  # the set-aside copy is not a run


def test_loading_a_damaged_file_sets_it_aside_and_a_second_copy_gets_its_own_name(tmp_path,
                                                                                  fake):
    rn.run_all(tmp_path, jobs(2), workers=1, progress=False)
    path = tmp_path / jobs(2)[0][0].relpath()
    for k, suffix in enumerate((".corrupt", ".corrupt2")):
        _damage(path, "truncated")
        with pytest.warns(SetAsideWarning, match="set aside as " + path.name + suffix):
            runs = rn.load_runs(tmp_path, "fake")
        assert [r["spec"]["seed"] for r in runs] == [1]
        assert path.with_name(path.name + suffix).exists()
        rn.run_all(tmp_path, jobs(2), workers=1, progress=False)  # recomputes seed 0
        assert len(rn.load_runs(tmp_path, "fake")) == 2


def test_a_config_path_inside_the_folder_is_stored_relative_and_resolved_for_the_run(tmp_path,
                                                                                   fake):
    root = tmp_path / "results"
    cfg = FolderConfig(folder="warmstart")
    rn.run_all(root, jobs(2, cfg), workers=1, progress=False)
    head = json.loads((root / jobs(1, cfg)[0][0].relpath()).open().readline())
    assert head["config"]["folder"] == "warmstart"
    # an absolute path inside the folder is written relative to it as well
    absolute = FolderConfig(folder=str(root.resolve() / "warmstart"))
    assert rn.stored_config(absolute, root) == {"folder": "warmstart", "scale": 2}
    CALLS.clear()
    assert rn.run_all(root, jobs(2, absolute), workers=1, progress=False)["skipped"] == 2


@pytest.mark.parametrize("move", [shutil.move, shutil.copytree])
def test_a_moved_or_copied_results_folder_is_reused(tmp_path, fake, move):
    old = tmp_path / "old"
    cfg_old = FolderConfig(folder=str(old.resolve() / "ckpt"))  # as a plan made for ``old``
    rn.run_all(old, jobs(3, cfg_old), workers=1, progress=False)
    new = tmp_path / "elsewhere" / "new"
    new.parent.mkdir()
    move(str(old), str(new))
    cfg_new = FolderConfig(folder=str(new.resolve() / "ckpt"))
    CALLS.clear()
    counts = rn.run_all(new, jobs(3, cfg_new), workers=1, progress=False)
    assert counts == {"done": 0, "skipped": 3, "failed": 0} and CALLS == []


def test_relative_to_rewrites_only_paths_inside_the_root(tmp_path):
    root = tmp_path / "r"
    obj = {"a": f"warm:{root}/warmstart", "b": [str(root / "x" / "y"), "/elsewhere/z"],
           "c": str(root), "d": f"model:{tmp_path}/rr/m", "e": 3}
    assert relative_to(obj, root) == {"a": "warm:warmstart", "b": ["x/y", "/elsewhere/z"],
                                      "c": ".", "d": f"model:{tmp_path}/rr/m", "e": 3}
