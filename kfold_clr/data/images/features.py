"""A frozen backbone's pooled features, computed once per image and cached on disk.

The cache is one float32 ``.npy`` file per (pixels, backbone, weights, image shape, pooling,
constructor params, Keras version), read memory-mapped, written atomically (a temporary file
renamed into place), in ``features/`` of the images cache (``data.cache`` when given, else
``$KFOLD_CLR_CACHE/images``, default ``~/.cache/kfold_clr/images``; never inside the image
folder). The file ends with a checksum of the features (`kfold_clr.data.images.cache.seal_into_place`,
checked once per file per process): a damaged or mismatched file is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.data.images.cache import (
    Progress,
    announce,
    cache_folder,
    open_sealed,
    seal_into_place,
)

if TYPE_CHECKING:
    import keras

    from kfold_clr.config import ExperimentConfig, ModelConfig

FEATURES_BATCH = 32  # images per backbone call: activations of a large backbone stay well under a GiB


def features_folder(config: ExperimentConfig) -> pathlib.Path:
    """Where backbone features are cached: `features/` in the images cache
    (`kfold_clr.data.images.cache.cache_folder`: `data.cache`, else `$KFOLD_CLR_CACHE/images`,
    never inside the image folder)."""
    image_folder = config.base_dir / pathlib.Path(os.path.expandvars(config.data.path or ".")).expanduser()
    return cache_folder(getattr(config.data, "cache", None), base_dir=config.base_dir,
                        image_folder=image_folder) / "features"


def features_key(pixels_hash: str, model_cfg: ModelConfig, *, identity: str, image_shape: Sequence[int]) -> str:
    """The cache key of one features array: what its values depend on."""
    import keras

    parts = {"pixels": pixels_hash, "backbone": str(model_cfg.backbone).lower().replace("_", ""),
             "weights": identity, "image_shape": list(image_shape), "pooling": model_cfg.pooling,
             "params": model_cfg.params, "keras": keras.__version__, "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_features(make_extractor: Callable[[], keras.Model], pixels: np.ndarray, *, image_shape: Sequence[int],
                    path: pathlib.Path, verbose: bool = True, batch_size: int = FEATURES_BATCH) -> np.ndarray:
    """The extractor's output for every image, memory-mapped from `path`; computed first (once, in
    batches, with a progress line) when `path` does not hold a sound array of them.

    Args:
        make_extractor: callable. Returns a Keras model from raw pixels to features (built only
            when the features are computed).
        pixels: array-like (N, H, W, C), or (N, H*W*C) with `image_shape`: uint8 pixels, or
            floats in [0, 1] (:func:`model_inputs`).
        image_shape: tuple. (H, W, C).
        path: pathlib.Path. The cache file.
    """
    found, problem = _load(path, len(pixels))
    if found is not None:
        return found
    if path.exists():
        _log(f"the cached features in {path} are damaged ({problem}); running the backbone again", verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    _compute(make_extractor(), pixels, image_shape=image_shape, path=path, verbose=verbose, batch_size=batch_size)
    return np.load(path, mmap_mode="r")


def _load(path: pathlib.Path, n_images: int) -> tuple[np.memmap, None] | tuple[None, str]:
    """(values, None) if `path` holds a sound float32 (n_images, D) array, else (None, what is wrong)."""
    if not path.is_file():
        return None, "not a file"

    def expected(values: np.ndarray) -> str | None:
        if values.dtype != np.float32 or values.ndim != 2 or values.shape[0] != n_images or values.shape[1] < 1:
            return f"{values.shape} {values.dtype}, not ({n_images}, features) float32"
        return None

    return open_sealed(path, expected=expected)


def model_inputs(batch: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Images as the model receives them under `data.scale: none`: float32 in [0, 1] (uint8
    pixels divided by 255; float pixels as they are), shaped (n, *image_shape)."""
    values = np.asarray(batch)
    scaled = values.astype(np.float32) / 255.0 if values.dtype == np.uint8 else values.astype(np.float32)
    return scaled.reshape((-1, *image_shape))


def _compute(extractor, pixels, *, image_shape, path, verbose, batch_size):
    """Run the extractor over every image once and write the features atomically to `path`."""
    n_images, width = len(pixels), int(extractor.output.shape[-1])
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o644)  # readable like the pixel cache, for a cache folder shared by several users
    started = time.perf_counter()
    try:
        values = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(n_images, width))
        with Progress(n_images, label="backbone features", log=announce if verbose else None,
                      announcement=f"running the backbone on {n_images:,} images (once; later runs read the "
                                   "cached features)") as progress:
            for start in range(0, n_images, batch_size):
                batch = model_inputs(pixels[start:start + batch_size], image_shape)
                values[start:start + len(batch)] = extractor.predict_on_batch(batch)
                progress.advance(len(batch))
        values.flush()
        del values
        seal_into_place(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    seconds = time.perf_counter() - started
    _log(f"backbone features of {n_images:,} images in {seconds:.1f} s ({n_images / max(seconds, 1e-9):,.0f} "
         f"images/s) into {path}", verbose=verbose)


def _log(message: str, *, verbose: bool) -> None:
    if verbose:
        announce(message)
