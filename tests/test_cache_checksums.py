"""Issue 24, a damaged cache rebuilt: a byte changed anywhere inside the cached pixels (or backbone
features) is found by the checksum written after them, and the cache is built again."""

import numpy as np
import pytest
from PIL import Image

from kfold_clr.data.images import cache as cache_lib
from kfold_clr.data.images import features


def make_folder(root, *, per_class=6, size=(8, 8)):
    rng = np.random.default_rng(1)
    for label in range(2):
        for i in range(per_class):
            path = root / f"c{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3)).astype(np.uint8)).save(path)
    return root


def flip_byte(path, position):
    with open(path, "r+b") as stream:
        stream.seek(position)
        value = stream.read(1)[0]
        stream.seek(position)
        stream.write(bytes([value ^ 0x10]))


def pixels_of(folder, cache):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    return cache_lib.cached_pixels(folder, files, image_size=[8, 8], color_mode="rgb", folder=cache, workers=1)[0]


@pytest.fixture
def decodes(monkeypatch):
    counted = []
    original = cache_lib._decode_chunk
    monkeypatch.setattr(cache_lib, "_decode_chunk",
                        lambda pixels, root, start, names, *rest: counted.extend(names)
                        or original(pixels, root, start, names, *rest))
    return counted


@pytest.mark.parametrize("where", ["middle", "last byte"])
def test_a_byte_flipped_inside_the_pixels_is_found_and_the_cache_rebuilt(tmp_path, decodes, capsys, where):
    folder = make_folder(tmp_path / "imgs")
    first = pixels_of(folder, tmp_path / "cache")
    good, offset, size = np.array(first), first.offset, first.nbytes
    del first
    (path,) = (tmp_path / "cache").glob("*.npy")
    flip_byte(path, offset + (size // 2 if where == "middle" else size - 1))
    assert not np.array_equal(np.load(path, mmap_mode="r"), good)  # numpy alone reads the damage as pixels
    assert len(decodes) == 12
    again = pixels_of(folder, tmp_path / "cache")
    assert len(decodes) == 24  # decoded again
    np.testing.assert_array_equal(again, good)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert str(path) in line and "checksum does not match" in line
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]


def test_the_checksum_is_computed_once_per_file_per_process(tmp_path, decodes, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    calls = []
    real = cache_lib.checksum
    monkeypatch.setattr(cache_lib, "checksum", lambda values: calls.append(1) or real(values))
    pixels_of(folder, tmp_path / "cache")
    assert calls == [1]  # sealed when written, trusted by the process that wrote it
    cache_lib._VERIFIED.clear()  # as a later run
    pixels_of(folder, tmp_path / "cache")
    pixels_of(folder, tmp_path / "cache")
    assert calls == [1, 1] and len(decodes) == 12


@pytest.mark.parametrize("damage", ["no checksum (older cache)", "cut inside the checksum", "bytes appended"])
def test_a_cache_without_its_whole_checksum_is_decoded_again(tmp_path, decodes, capsys, damage):
    folder = make_folder(tmp_path / "imgs")
    good = np.array(pixels_of(folder, tmp_path / "cache"))
    (path,) = (tmp_path / "cache").glob("*.npy")
    if damage == "no checksum (older cache)":
        np.save(path, good)
    elif damage == "cut inside the checksum":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        path.write_bytes(path.read_bytes() + b"\x00")
    np.testing.assert_array_equal(pixels_of(folder, tmp_path / "cache"), good)
    assert len(decodes) == 24 and "damaged" in capsys.readouterr().err


def test_a_byte_flipped_inside_cached_features_runs_the_backbone_again(tmp_path, capsys):
    import keras

    pixels = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3)).astype(np.uint8)
    built = []

    def extractor():
        built.append(1)
        inputs = keras.Input((4, 4, 3))
        return keras.Model(inputs, keras.layers.Flatten()(inputs))

    path = tmp_path / "features" / "f.npy"
    good = np.array(features.cached_features(extractor, pixels, image_shape=(4, 4, 3), path=path, verbose=False))
    np.testing.assert_allclose(good, pixels.reshape(10, -1) / 255.0, rtol=1e-6)
    cache_lib._VERIFIED.clear()
    assert built == [1]
    np.testing.assert_array_equal(features.cached_features(extractor, pixels, image_shape=(4, 4, 3), path=path), good)
    assert built == [1]  # sound: read
    values = np.load(path, mmap_mode="r")
    middle = values.offset + values.nbytes // 2
    del values
    flip_byte(path, middle)
    again = features.cached_features(extractor, pixels, image_shape=(4, 4, 3), path=path, verbose=True)
    assert built == [1, 1]
    np.testing.assert_array_equal(again, good)
    assert "checksum does not match" in capsys.readouterr().err
