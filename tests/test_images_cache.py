"""The image cache: decoded once, reused, rebuilt when the images change or the file is damaged,
never written inside the image folder; the data set's pixels are a read-only memmap."""

import numpy as np
import pytest
from PIL import Image

from kfold_clr.config import DataConfig
from kfold_clr.data.datasets import load_dataset
from kfold_clr.data.images import cache as cache_lib
from kfold_clr.errors import DataError


def make_folder(root, *, per_class=20, size=(8, 8)):
    rng = np.random.default_rng(0)
    for label in range(2):
        for i in range(per_class):
            path = root / f"c{label}" / f"{i:02d}{'.png' if i % 2 else '.jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.integers(0, 120, (*size, 3)) + 100 * label).astype(np.uint8)).save(path)
    return root


def cfg(folder, cache, **changes):
    return DataConfig.model_validate({"source": "images", "path": str(folder), "image_size": [8, 8],
                                      "cache": str(cache), **changes})


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images decoded in this process."""
    counted = []
    original = cache_lib._decode_chunk

    def counting(pixels, root, start, names, size, mode):
        counted.extend(names)
        return original(pixels, root, start, names, size, mode)

    monkeypatch.setattr(cache_lib, "_decode_chunk", counting)
    return counted


def tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*"))


def test_a_second_load_reads_the_cache_without_decoding(tmp_path, decodes):
    folder = make_folder(tmp_path / "imgs")
    first = load_dataset(cfg(folder, tmp_path / "cache"))
    assert len(decodes) == 40
    second = load_dataset(cfg(folder, tmp_path / "cache"))
    assert len(decodes) == 40  # nothing decoded again
    assert isinstance(second.x, np.memmap) and not second.x.flags.writeable and second.x.dtype == np.uint8
    np.testing.assert_array_equal(first.x, second.x)
    assert first.content_hash() == second.content_hash()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{first.source_digest}.npy"]


def test_the_pixels_are_pillows_own_and_a_pool_of_threads_writes_the_same(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*"))
    alone, key = cache_lib.cached_pixels(folder, files, image_size=[8, 8], color_mode="rgb",
                                         folder=tmp_path / "a", workers=1)
    monkeypatch.setattr(cache_lib, "_IN_PROCESS", 0)
    monkeypatch.setattr(cache_lib, "_CHUNK", 3)  # 14 chunks on 4 threads
    pooled, pooled_key = cache_lib.cached_pixels(folder, files, image_size=[8, 8], color_mode="rgb",
                                                 folder=tmp_path / "b", workers=4)
    assert pooled_key == key
    np.testing.assert_array_equal(pooled, alone)
    np.testing.assert_array_equal(alone[1], np.asarray(Image.open(folder / files[1]).convert("RGB")))


def test_a_script_without_a_main_guard_can_decode_a_large_folder(tmp_path):
    """Decoding starts no process: a user's script that calls the package at top level works."""
    import subprocess
    import sys

    folder = make_folder(tmp_path / "imgs", per_class=140)  # 280 images: more than decode in the caller
    script = tmp_path / "script.py"
    script.write_text("from kfold_clr.config import DataConfig\nfrom kfold_clr.data.datasets import load_dataset\n"
                      f"cfg = DataConfig.model_validate({{'source': 'images', 'path': {str(folder)!r}, "
                      f"'image_size': [8, 8], 'cache': {str(tmp_path / 'cache')!r}}})\n"
                      "print(load_dataset(cfg).x.shape)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(280, 8, 8, 3)" in done.stdout and "decoded 280 images" in done.stderr


def test_a_changed_image_makes_a_new_key(tmp_path, decodes):
    folder = make_folder(tmp_path / "imgs")
    before = load_dataset(cfg(folder, tmp_path / "cache"))
    path = folder / "c1" / "03.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(path)
    after = load_dataset(cfg(folder, tmp_path / "cache"))
    assert after.source_digest != before.source_digest and after.content_hash() != before.content_hash()
    assert after.x[list(after.files).index("c1/03.png"), 0, 0, 0] == pixels[0, 0, 0]
    assert len(decodes) == 80
    other = load_dataset(cfg(folder, tmp_path / "cache", image_size=[4, 4]))
    assert other.x.shape == (40, 4, 4, 3) and other.source_digest != after.source_digest
    gray = load_dataset(cfg(folder, tmp_path / "cache", color_mode="grayscale"))
    assert gray.x.shape == (40, 8, 8, 1) and gray.source_digest != after.source_digest


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "garbage"])
def test_a_damaged_cache_is_decoded_again(tmp_path, decodes, damage, capsys):
    folder = make_folder(tmp_path / "imgs")
    good = np.array(load_dataset(cfg(folder, tmp_path / "cache")).x)
    path = next((tmp_path / "cache").glob("*.npy"))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "wrong shape":
        np.save(path, np.zeros((40, 8, 8, 1), np.uint8))
    else:
        path.write_bytes(b"not an array")
    path.with_name(f".{path.name}.999999999.tmp").write_bytes(b"left by a killed run")
    again = load_dataset(cfg(folder, tmp_path / "cache"))
    assert len(decodes) == 80
    np.testing.assert_array_equal(again.x, good)
    assert "damaged" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]  # no temporary left, ours or stale


def test_nothing_is_written_inside_the_image_folder(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    before = tree(folder)
    load_dataset(cfg(folder, tmp_path / "cache"))
    assert tree(folder) == before
    for inside in (folder, folder / "c0" / "cache"):
        with pytest.raises(DataError, match=r"^data.cache: .* is inside the image folder .*; decoded pixels are never"):
            load_dataset(cfg(folder, inside))
    assert tree(folder) == before


def test_the_default_cache_is_under_kfold_clr_cache(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "home_cache"))
    dataset = load_dataset(DataConfig.model_validate({"source": "images", "path": str(folder), "image_size": [8, 8]}))
    assert (tmp_path / "home_cache" / "images" / f"{dataset.source_digest}.npy").is_file()
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(folder / "c0"))
    with pytest.raises(DataError, match="^KFOLD_CLR_CACHE: .* is inside the image folder"):
        load_dataset(DataConfig.model_validate({"source": "images", "path": str(folder), "image_size": [8, 8]}))


def test_a_cache_inside_the_image_folder_exits_2_from_the_command_line(tmp_path, capsys):
    import yaml

    from kfold_clr.cli.main import main

    folder = make_folder(tmp_path / "imgs")
    experiment = {"name": "x", "data": {"source": "images", "path": "imgs", "image_size": [8, 8], "cache": "imgs/c"},
                  "strategies": {"a": {"schedule": "constant", "lr": 0.01}}}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(experiment))
    assert main(["validate", str(tmp_path / "x.yaml")]) == 2
    assert "data.cache: " in capsys.readouterr().err and not (folder / "c").exists()


def test_content_hash_does_not_read_the_pixels(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    dataset = load_dataset(cfg(folder, tmp_path / "cache"))
    monkeypatch.setattr(np.memmap, "tobytes", lambda self, *a: pytest.fail("the pixels were read"))
    assert len(dataset.content_hash()) == 16


def test_no_disk_space_is_a_data_error(tmp_path, monkeypatch):
    import collections
    import shutil

    folder = make_folder(tmp_path / "imgs")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(DataError, match=r"^data.cache: .* has 0 MiB free; the decoded images need"):
        load_dataset(cfg(folder, tmp_path / "cache"))


@pytest.mark.parametrize("tty", [False, True])
def test_one_progress_display_for_decoding_and_backbone_features(monkeypatch, tty):
    """The shared `Progress`: off a terminal one announcement through `log`; on a terminal a bar
    and no announcement; with `log=None` (a quiet features pass) nothing at all."""
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    logged = []
    with cache_lib.Progress(5, label="decoding images", announcement="decoding 5 images", log=logged.append) as bar:
        bar.advance(5)
        assert (bar._bar is not None) == tty
    assert logged == ([] if tty else ["decoding 5 images"])
    with cache_lib.Progress(5, label="backbone features", announcement="unused", log=None) as quiet:
        quiet.advance(5)
        assert quiet._bar is None
