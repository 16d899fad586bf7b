"""Per image and channel statistics of the pixel cache (sum, sum of squares, minimum, maximum),
from which every fold's channel scaling is fitted on its training rows (`streaming.fit_scaling`).

They are exact (integer counts of the 256 levels per image and channel), computed in one pass
over the cache and kept beside it (`<key>.stats.npy`, checksummed like the cache itself), so a
later run, `validate` included, reads a few kilobytes instead of every pixel again.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

_CHUNK_VALUES = 2**25  # pixels values per histogram pass (int32 indices: 128 MiB)
_LEVELS = np.arange(256, dtype=np.float64)
_MEMO = {}  # cache file -> its statistics (one data set at a time)


def channel_statistics(images: np.ndarray) -> np.ndarray:
    """(n, channels, 4) float64: per image and channel the sum, the sum of squares, the minimum and
    the maximum of its uint8 values, exact (from each channel's histogram of the 256 levels)."""
    n, channels = len(images), images.shape[-1]
    per_image = int(np.prod(images.shape[1:]))
    found = np.empty((n, channels, 4))
    rows_per_chunk = max(1, _CHUNK_VALUES // max(per_image, 1))
    for start in range(0, n, rows_per_chunk):
        chunk = np.asarray(images[start:start + rows_per_chunk])
        rows = len(chunk)
        # Value v of row r, channel c counts in bin ((r * channels + c) * 256 + v).
        bins = chunk.reshape(rows, -1, channels).astype(np.int32)
        bins += (np.arange(rows * channels, dtype=np.int32) * 256).reshape(rows, 1, channels)
        counts = np.bincount(bins.reshape(-1), minlength=rows * channels * 256).reshape(rows, channels, 256)
        present = counts > 0
        found[start:start + rows, :, 0] = counts @ _LEVELS
        found[start:start + rows, :, 1] = counts @ _LEVELS ** 2
        found[start:start + rows, :, 2] = present.argmax(axis=2)
        found[start:start + rows, :, 3] = 255 - present[:, :, ::-1].argmax(axis=2)
    return found


def image_statistics(pixels: np.ndarray) -> np.ndarray:
    """`channel_statistics` of the pixel cache `pixels`: read from beside the cache file when it was
    computed before, else computed and kept there (in-memory arrays: computed, once per process)."""
    filename = getattr(pixels, "filename", None)
    key = (str(filename), len(pixels)) if filename else id(pixels)
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = _stored(pathlib.Path(filename), pixels) if filename else channel_statistics(pixels)
    return _MEMO[key]


def _stored(cache_file: pathlib.Path, pixels: np.ndarray) -> np.ndarray:
    from kfold_clr.data.images.cache import open_sealed, seal_into_place
    from kfold_clr.storage.ownership import guard

    path = cache_file.with_name(cache_file.stem + ".stats.npy")
    shape = (len(pixels), pixels.shape[-1], 4)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return channel_statistics(pixels)  # not ours to replace: computed, not kept
    values, _ = open_sealed(path, expected=lambda v: None if v.shape == shape and v.dtype == np.float64 else "shape")
    if values is not None:
        return np.array(values)
    values = channel_statistics(pixels)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return values  # a read-only cache folder: computed, not kept
    try:
        with os.fdopen(descriptor, "wb") as stream:
            np.save(stream, values, allow_pickle=False)
        guard(path)
        seal_into_place(temporary, path)
    except OSError:
        pass
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return values
