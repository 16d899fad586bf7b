"""Damaged .npz files and the notebook's array cache (issue 23)."""

import copy
import gc
import io
import os
import pathlib
import re
import time

import numpy as np
import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.api import cross_validate
from kfold_clr.cli.main import main
from kfold_clr.data import array_cache
from kfold_clr.errors import ConfigError, DataError
from kfold_clr.storage.npzfile import load_npz


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def damaged_files(folder):
    """{kind: path} of .npz files a user might hand over: truncated, not a zip, pickled objects."""
    content = npz_bytes(x=np.ones((20, 3)), y=np.arange(20) % 2)
    files = {"truncated": content[: len(content) // 2], "not a zip": b"x,y\n1,2\n",
             "empty": b"", "objects": npz_bytes(x=np.array([{"a": 1}] * 20, dtype=object), y=np.arange(20))}
    paths = {}
    for kind, data in files.items():
        paths[kind] = pathlib.Path(folder) / f"{kind.replace(' ', '_')}.npz"
        paths[kind].write_bytes(data)
    return paths


@pytest.mark.parametrize("kind, says", [("truncated", "is not an .npz archive (not a zip file: truncated"),
                                        ("not a zip", "is not an .npz archive"),
                                        ("empty", "is not an .npz archive"),
                                        ("objects", "holds arrays of Python objects, which kfold_clr never unpickles")])
def test_a_damaged_npz_is_one_data_error_naming_the_file(tmp_path, kind, says):
    path = damaged_files(tmp_path)[kind]
    with pytest.raises(DataError) as error:
        load_npz(path, what="data.path")
    message = str(error.value)
    assert message.startswith(f"data.path: {str(path)!r} ") and says in message
    assert "allow_pickle" not in message and "\n" not in message


def test_a_member_damaged_inside_a_whole_zip_is_a_data_error(tmp_path):
    content = bytearray(npz_bytes(x=np.arange(400.0), y=np.arange(400)))
    content[200:260] = b"\0" * 60  # inside the first member's data: the archive still opens
    path = tmp_path / "bitrot.npz"
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"is a damaged .npz archive \(.*\); write it again with numpy.savez"):
        load_npz(path, what="data.path")


@pytest.mark.parametrize("kind", ["truncated", "not a zip"])
def test_the_cli_names_a_damaged_data_file_exit_2(tmp_path, capsys, kind):
    path = damaged_files(tmp_path)[kind]
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["data"] = {"source": "npz", "path": str(path)}
    experiment["output"] = {"dir": str(tmp_path / "results")}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    assert main(["validate", str(tmp_path / "experiment.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kfold-clr: error: data.path: {str(path)!r} ") and err.count("\n") == 1
    assert "allow_pickle" not in err


# ----------------------------------------------------------------------------- the notebook cache
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(array_cache.MAX_BYTES_VARIABLE, raising=False)
    return tmp_path / "cache" / "arrays"


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    return rng.normal(size=(60, 4)).astype("float32"), np.arange(60) % 2


def run(x, y, out, **extra):
    return cross_validate("helpers:tiny_model", x, y, cv=2, epochs=1, batch_size=16, verbose=0,
                          strategies={"constant": {"schedule": "constant", "lr": 0.05}}, output_dir=out, **extra)


@pytest.mark.parametrize("damage", ["other arrays", "truncated"])
def test_a_replaced_or_damaged_cache_file_is_written_again(cache, arrays, tmp_path, capsys, damage):
    """Issue 23: a cached file replaced by other arrays was used silently (here: the resume is
    refused as other data), and a truncated one failed with a raw BadZipFile."""
    x, y = arrays
    first = run(x, y, tmp_path / "results")
    (data_file,) = cache.glob("data-*.npz")
    original = data_file.read_bytes()
    data_file.write_bytes(npz_bytes(x=x[::-1].copy(), y=y[::-1].copy()) if damage == "other arrays"
                          else original[:100])
    capsys.readouterr()
    again = run(x, y, tmp_path / "results")  # resumes: the same data, so nothing to train
    assert f"cache file {data_file} was damaged or replaced; writing it again" in capsys.readouterr().err
    assert data_file.read_bytes() == original
    assert again.folds["val_loss"].tolist() == first.folds["val_loss"].tolist()


def write_cache_file(prefix, seed, size):
    return array_cache.cached(prefix, lambda stream: np.savez(stream, x=np.random.default_rng(seed).normal(size=size)))


def test_the_cache_is_bounded_oldest_first_and_only_its_own_files_go(cache, monkeypatch):
    paths = []
    for seed in range(3):
        paths.append(write_cache_file("data", seed, 1000))  # about 8 kB each
        os.utime(paths[-1], (time.time() - 100 + seed, time.time() - 100 + seed))
    others = [cache / "notes.txt", cache.parent / "images" / "data-0123456789abcdef01234567.npz"]
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 50_000)
    monkeypatch.setenv(array_cache.MAX_BYTES_VARIABLE, str(2 * paths[0].stat().st_size + 2000))
    newest = write_cache_file("splits", 7, 10)  # small; the bound then keeps two of the three
    assert [path.exists() for path in paths] == [False, True, True] and newest.exists()
    assert all(path.exists() for path in others)
    monkeypatch.setenv(array_cache.MAX_BYTES_VARIABLE, "0")
    kept = write_cache_file("data", 9, 10)  # a bound below one file keeps the file in use
    assert sorted(cache.glob("*.npz")) == [kept] and all(path.exists() for path in others)


def test_reusing_a_cache_file_makes_it_the_newest(cache):
    old = write_cache_file("data", 0, 10)
    os.utime(old, (1, 1))
    assert write_cache_file("data", 0, 10) == old and old.stat().st_mtime > 1000


@pytest.mark.parametrize("value", ["2GB", "-1", ""])
def test_a_bad_cache_size_bound_is_a_config_error(cache, monkeypatch, value):
    monkeypatch.setenv(array_cache.MAX_BYTES_VARIABLE, value)
    with pytest.raises(ConfigError, match=rf"^KFOLD_CLR_CACHE_MAX_BYTES: {re.escape(repr(value))} must be a number"):
        write_cache_file("data", 0, 10)


def test_the_temporary_results_folder_goes_with_the_results_object(cache, arrays, capsys):
    x, y = arrays
    results = run(x, y, None)
    printed = re.search(r"results go to (\S+), a temporary folder deleted with the returned Results",
                        capsys.readouterr().err)
    folder = pathlib.Path(printed.group(1))
    assert folder == results.directory and (folder / "folds.csv").is_file()
    del results
    gc.collect()
    assert not folder.exists() and not folder.parent.exists()
