"""Paired augmentation: Keras's preprocessing layers, each batch drawn from a key of the
fold's seed, the epoch and the batch, so every strategy (fused or not) sees the same images.

The layers are applied to raw pixel values (0-255, before the fold's scaling) in the order
flip, rotation, zoom, translation, contrast, each with its own seed derived from the key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kfold_clr.config.schema import AugmentConfig


class Augmenter:
    """The `data.augment` section as a function of (images, key).

    Args:
        cfg: AugmentConfig. The layers' factors (None: that layer is left out).

    Example:

    ```python
    augment = Augmenter(config.data.augment)
    batch = augment(pixels.astype("float32"), key=(batch_seed, epoch, step))
    ```
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        import keras

        layers = keras.layers
        self.layers = []
        if cfg.flip is not None:
            self.layers.append(layers.RandomFlip(cfg.flip))
        if cfg.rotation:
            self.layers.append(layers.RandomRotation(cfg.rotation))
        if cfg.zoom:
            self.layers.append(layers.RandomZoom(cfg.zoom))
        if cfg.translation:
            self.layers.append(layers.RandomTranslation(cfg.translation, cfg.translation))
        if cfg.contrast:
            self.layers.append(layers.RandomContrast(cfg.contrast, value_range=(0, 255)))

    def __bool__(self) -> bool:
        return bool(self.layers)

    def __call__(self, images: np.ndarray, *, key: tuple[int, ...]) -> np.ndarray:
        """`images` (n, height, width, channels) float32 transformed as `key` draws; a numpy array."""
        import keras

        for index, layer in enumerate(self.layers):
            seed = key_seed(*key, index)
            transformation = layer.get_random_transformation(images, training=True, seed=seed)
            images = layer.transform_images(keras.ops.convert_to_tensor(images), transformation, training=True)
        return keras.ops.convert_to_numpy(images).astype(np.float32, copy=False)


def key_seed(*parts: int) -> int:
    """A 31-bit seed from integers (the same in every process: no Python hash randomisation)."""
    text = ",".join(str(int(part)) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "little") & 0x7FFFFFFF
