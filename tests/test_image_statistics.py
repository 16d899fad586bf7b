"""Per image and channel statistics of the pixel cache: exact, computed once and kept beside it."""

import numpy as np
import pytest

from kfold_clr.data.images import statistics
from kfold_clr.data.images.cache import cached_pixels


def _naive(images):
    values = images.reshape(len(images), -1, images.shape[-1]).astype(np.float64)
    return np.stack([values.sum(axis=1), (values ** 2).sum(axis=1), values.min(axis=1), values.max(axis=1)], axis=2)


@pytest.mark.parametrize("channels", [1, 3])
def test_statistics_are_exact_over_chunk_boundaries(channels, monkeypatch):
    monkeypatch.setattr(statistics, "_CHUNK_VALUES", 5 * 7 * channels * 3)  # 3 images a chunk: partial last
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 256, (10, 5, 7, channels), dtype=np.uint8)
    images[0] = 255  # a constant image: min = max
    images[1, ..., 0] = 0
    np.testing.assert_array_equal(statistics.channel_statistics(images), _naive(images))


def _folder(tmp_path, n=6):
    from PIL import Image

    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "images", [f"a/{i}.png" for i in range(n)]


def test_statistics_are_kept_beside_the_cache_and_a_damaged_copy_is_computed_again(tmp_path, monkeypatch):
    root, files = _folder(tmp_path)
    pixels, key = cached_pixels(root, files, image_size=[8, 8], color_mode="rgb", folder=tmp_path / "cache")
    want = _naive(np.asarray(pixels))
    statistics._MEMO.clear()
    np.testing.assert_array_equal(statistics.image_statistics(pixels), want)
    kept = tmp_path / "cache" / f"{key}.stats.npy"
    assert kept.is_file()

    statistics._MEMO.clear()
    monkeypatch.setattr(statistics, "channel_statistics", lambda images: pytest.fail("computed again"))
    np.testing.assert_array_equal(statistics.image_statistics(pixels), want)  # read back, not computed

    monkeypatch.undo()
    data = bytearray(kept.read_bytes())
    data[200] ^= 0xFF  # a byte of the statistics changed
    kept.write_bytes(bytes(data))
    statistics._MEMO.clear()
    np.testing.assert_array_equal(statistics.image_statistics(pixels), want)


def test_standard_scaling_of_a_fold_uses_only_its_training_rows(tmp_path):
    from kfold_clr.data.images.streaming import fit_scaling

    root, files = _folder(tmp_path)
    pixels, _ = cached_pixels(root, files, image_size=[8, 8], color_mode="rgb", folder=tmp_path / "cache")
    statistics._MEMO.clear()
    rows = np.array([0, 2, 5])
    scaling = fit_scaling(pixels, rows, "standard")
    values = np.asarray(pixels)[rows].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(scaling.offset, values.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scaling.factor, 1 / values.std(axis=0), rtol=1e-5)


def test_a_link_at_the_statistics_file_is_never_written_through_and_failures_leave_only_others_files(
        tmp_path, monkeypatch):
    from kfold_clr.data.images import cache

    root, files = _folder(tmp_path)
    pixels, key = cached_pixels(root, files, image_size=[8, 8], color_mode="rgb", folder=tmp_path / "cache")
    want = _naive(np.asarray(pixels))
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"user data")
    kept = tmp_path / "cache" / f"{key}.stats.npy"
    kept.symlink_to(victim)
    statistics._MEMO.clear()
    np.testing.assert_array_equal(statistics.image_statistics(pixels), want)  # computed, not kept
    assert kept.is_symlink() and victim.read_bytes() == b"user data"

    kept.unlink()
    neighbours = [tmp_path / "cache" / f".{key}.stats.npy.user.tmp", tmp_path / "cache" / "notes.txt"]
    for path in neighbours:
        path.write_text("the user's")
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())

    def full_disk(temporary, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "seal_into_place", full_disk)
    statistics._MEMO.clear()
    np.testing.assert_array_equal(statistics.image_statistics(pixels), want)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before  # its temporary gone, nothing else
    assert all(path.read_text() == "the user's" for path in neighbours)


def test_a_backbone_that_fails_midway_leaves_no_temporary_and_touches_no_other_file(tmp_path):
    from types import SimpleNamespace

    from kfold_clr.data.images import features

    folder = tmp_path / "features"
    folder.mkdir()
    others = [folder / ".f.npy.user.tmp", folder / "f.npy.bak"]
    for path in others:
        path.write_text("the user's")

    def broken(batch):
        raise RuntimeError("out of memory")

    extractor = SimpleNamespace(output=SimpleNamespace(shape=(None, 4)), predict_on_batch=broken)
    pixels = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(RuntimeError, match="out of memory"):
        features._compute(extractor, pixels, image_shape=(8, 8, 3), path=folder / "f.npy", verbose=False,
                          batch_size=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in others)
    assert all(path.read_text() == "the user's" for path in others)
