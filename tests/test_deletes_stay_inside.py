"""Every delete kfold_clr does stays inside what it created: the notebook's temporary folder
(`api.cross_validate`), the array cache's own files (`array_cache`), and the results
directory (`ownership.remove`). Each test plants user files and links to outside and shows
they survive."""

import gc
import hashlib
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest

import kfold_clr.execution.experiment
from kfold_clr.api import cross_validate
from kfold_clr.data import array_cache
from kfold_clr.errors import DataError, ResultsError
from kfold_clr.storage import ownership


def snapshot(folder) -> dict:
    """{relative path: bytes, or 'dir', or 'link -> target'} of everything under `folder`."""
    folder = pathlib.Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            found[relative] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[relative] = "dir"
        else:
            found[relative] = path.read_bytes()
    return found


def user_files(folder) -> dict:
    """A folder of the user's with a file, a subfolder and a file named like a results file."""
    folder = pathlib.Path(folder)
    (folder / "notes").mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("do not lose me")
    (folder / "notes" / "todo.txt").write_text("call home")
    (folder / "folds.csv").write_text("mine")
    return snapshot(folder)


# ----------------------------------------------------------------------- api: the temporary folder
@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """The folders mkdtemp made and rmtree was asked to delete; run_experiment replaced by a fake
    that writes a file into its results directory, then returns a Results stand-in or raises."""
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    record = {"made": [], "deleted": [], "dirs": [], "raise": None}
    real_mkdtemp, real_rmtree = tempfile.mkdtemp, shutil.rmtree

    def mkdtemp(*args, **kwargs):
        folder = real_mkdtemp(*args, **kwargs)
        record["made"].append(pathlib.Path(folder))
        return folder

    def rmtree(path, *args, **kwargs):
        record["deleted"].append(pathlib.Path(path))
        return real_rmtree(path, *args, **kwargs)

    class Results:  # weakref-able, as the real one is
        pass

    def run_experiment(experiment, **_):
        directory = pathlib.Path(experiment["output"]["dir"])
        record["dirs"].append(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "run.txt").write_text("written by the run")
        if record["raise"] is not None:
            raise record["raise"]
        return Results()

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(kfold_clr.execution.experiment, "run_experiment", run_experiment)
    return record


def call(output_dir=None, **settings):
    x, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    return cross_validate("helpers:tiny_model", x, y, cv=2, epochs=1, batch_size=4,
                          strategies={"constant": {"schedule": "constant", "lr": 0.05}},
                          output_dir=output_dir, **settings)


def finish(record, outcome, run):
    """`run()` to success (then drop the Results, so its finalizer runs) or to the failure `outcome`."""
    record["raise"] = outcome
    if outcome is None:
        results = run()
        del results
        gc.collect()
    else:
        with pytest.raises(type(outcome)):
            run()

OUTCOMES = [None, RuntimeError("a fold broke"), KeyboardInterrupt(), DataError("data.path: damaged")]
OUTCOME_IDS = ["success+finalize", "failure", "interrupt", "data-error"]


@pytest.mark.parametrize("outcome", OUTCOMES, ids=OUTCOME_IDS)
def test_the_temporary_folder_is_the_only_thing_deleted_and_it_goes(recorded, outcome):
    finish(recorded, outcome, call)
    (made,) = recorded["made"]
    assert recorded["dirs"] == [made / "results"]
    assert recorded["deleted"] == [made] and not made.exists()


@pytest.mark.parametrize("outcome", OUTCOMES, ids=OUTCOME_IDS)
@pytest.mark.parametrize("how", ["output_dir", "settings"])
@pytest.mark.parametrize("where", ["relative", ".", "..", "absolute with files", "absolute new"])
def test_a_users_output_dir_is_never_deleted(recorded, tmp_path, monkeypatch, outcome, how, where):
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    given = {"relative": "results/mine", ".": ".", "..": "..", "absolute with files": str(tmp_path / "mine"),
             "absolute new": str(tmp_path / "new")}[where]
    before = {"home": user_files(tmp_path / "home"),  # '.', '..' and the relative folder lie in here
              "mine": user_files(tmp_path / "mine") if where == "absolute with files" else {}}
    finish(recorded, outcome, (lambda: call(given)) if how == "output_dir" else (lambda: call(output={"dir": given})))
    assert recorded["made"] == [] and recorded["deleted"] == []
    assert recorded["dirs"] == [pathlib.Path(given)]
    for name, files in before.items():
        after = snapshot(tmp_path / name)
        assert {key: value for key, value in after.items() if key in files} == files
    assert (pathlib.Path(given) / "run.txt").read_text() == "written by the run"


# ------------------------------------------------------------------------------- the array cache
def content_name(prefix, content: bytes) -> str:
    return f"{prefix}-{hashlib.sha256(content).hexdigest()[:24]}.npz"


def cached(content: bytes) -> pathlib.Path:
    return array_cache.cached("data", lambda stream: stream.write(content))


def plant(root, outside):
    """User files in the cache root and in arrays/, a link named like a cache file to outside, and
    the outside target; returns (paths that must survive as they are, the link, its target)."""
    arrays = root / "arrays"
    (root / "images").mkdir(parents=True, exist_ok=True)
    arrays.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / "precious.npz"
    target.write_bytes(b"the user's own data" * 100)
    survivors = [root / "my_notes.txt", root / "images" / "data-0123456789abcdef01234567.npz",
                 root / "data-0123456789abcdef01234567.npz",  # a cache name, but not in arrays/
                 arrays / "notes.txt", arrays / "data-0123456789ABCDEF01234567.npz",  # upper case: not ours
                 arrays / "data-0123456789abcdef0123456.npz", arrays / "model-0123456789abcdef01234567.npz",
                 arrays / "data-0123456789abcdef01234567.npz.bak",
                 arrays / "sub" / "splits-0123456789abcdef01234567.npz"]
    for path in survivors:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 5000)
    (arrays / "data-aaaaaaaaaaaaaaaaaaaaaaaa.npz").mkdir()  # a folder named like a cache file
    survivors.append(arrays / "data-aaaaaaaaaaaaaaaaaaaaaaaa.npz")
    link = arrays / content_name("data", b"planted")
    link.symlink_to(target)
    other_link = arrays / "splits-bbbbbbbbbbbbbbbbbbbbbbbb.npz"
    other_link.symlink_to(target)
    survivors.append(other_link)
    return survivors, link, target


def states(paths) -> list:
    return [(path.is_symlink(), path.is_dir() or path.read_bytes()) for path in paths]


@pytest.mark.parametrize("where", ["tmp", ".", "user folder", "relative"])
def test_the_cache_deletes_only_its_own_files_in_arrays(tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    variable = {"tmp": str(tmp_path / "cache"), ".": ".", "user folder": str(tmp_path / "documents"),
                "relative": "cache"}[where]
    root = pathlib.Path(os.path.abspath(variable))
    monkeypatch.setenv("KFOLD_CLR_CACHE", variable)
    monkeypatch.delenv(array_cache.MAX_BYTES_VARIABLE, raising=False)
    if where == "user folder":
        user_files(root)
    survivors, link, target = plant(root, tmp_path / "outside")
    before, target_bytes = states(survivors), target.read_bytes()
    everything_else = {key: value for key, value in snapshot(root).items() if not key.startswith("arrays")}

    old = [cached(bytes([n]) * 3000) for n in range(3)]
    monkeypatch.setenv(array_cache.MAX_BYTES_VARIABLE, "0")
    kept = cached(b"newest")  # evicts every older cache file
    assert [path.exists() for path in old] == [False, False, False] and kept.is_file()
    assert array_cache.evict(limit=0) == [kept]

    rewritten = cached(b"planted")  # the link at its name is replaced, its target untouched
    assert rewritten == link and not link.is_symlink() and link.read_bytes() == b"planted"
    assert target.read_bytes() == target_bytes
    assert states(survivors) == before
    assert {key: value for key, value in snapshot(root).items() if not key.startswith("arrays")} == everything_else
    assert sorted(path.name for path in root.joinpath("arrays").iterdir()
                  if array_cache._OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink()) \
        == [link.name]


def test_a_damaged_cache_file_is_rewritten_in_place_and_nothing_else_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    survivors, _, target = plant(tmp_path / "cache", tmp_path / "outside")
    before, target_bytes = states(survivors), target.read_bytes()
    path = cached(b"content")
    path.write_bytes(b"damaged")
    assert cached(b"content") == path and path.read_bytes() == b"content"
    assert states(survivors) == before and target.read_bytes() == target_bytes


# ----------------------------------------------------------------------- ownership.remove
@pytest.fixture
def planted(tmp_path):
    """A claimed results directory holding links to a file and a folder outside it."""
    results = ownership.claim(tmp_path / "results")
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "file.txt").write_text("outside")
    (outside / "folder" / "inner.txt").write_text("inner")
    (results / "file_link").symlink_to(outside / "file.txt")
    (results / "folder_link").symlink_to(outside / "folder")
    (results / "fold").mkdir()
    (results / "fold" / "weights.h5").write_text("ours")
    (results / "fold" / "file_link").symlink_to(outside / "file.txt")
    (results / "fold" / "folder_link").symlink_to(outside / "folder")
    return results, outside


@pytest.mark.parametrize("relative", ["file_link", "folder_link", "folder_link/inner.txt", "folder_link/missing"])
def test_remove_refuses_a_path_through_a_link(planted, relative):
    results, outside = planted
    before = snapshot(outside)
    with pytest.raises(ResultsError, match="is a symbolic link"):
        ownership.remove(results / relative)
    assert snapshot(outside) == before
    assert (results / relative.split("/")[0]).is_symlink()


def test_removing_a_folder_removes_its_links_never_their_targets(planted):
    results, outside = planted
    before = snapshot(outside)
    ownership.remove(results / "fold")
    assert not (results / "fold").exists() and snapshot(outside) == before


def test_remove_refuses_a_results_directory_entered_through_a_link(planted):
    results, outside = planted
    (outside / "folder" / ownership.MARKER).write_text("{}")  # even a marked folder outside
    before = snapshot(outside)
    with pytest.raises(ResultsError, match="is a symbolic link"):
        ownership.remove(results / "folder_link" / "inner.txt")
    assert snapshot(outside) == before


def test_an_array_cache_folder_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, monkeypatch):
    from kfold_clr.data import array_cache
    from kfold_clr.errors import ConfigError

    user = tmp_path / "user"
    user.mkdir()
    (user / "data-0123456789abcdef01234567.npz").write_bytes(b"user file named like a cache file")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "arrays").symlink_to(user)
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="symbolic link"):
        array_cache.evict(limit=0)
    assert (user / "data-0123456789abcdef01234567.npz").exists()
