"""Folds of an image cache, streamed: rows read from the memory-mapped uint8 pixels a batch at
a time, scaled per channel on the fly, augmented for training; never a copy of a fold.

`image_fold` is what `trainer.prepare_fold` returns for images: `PixelRows` in place of the
feature arrays. `PixelRows` behaves like a read-only float32 array for what the trainer asks
of one (shape, len, slicing and row indexing, each returning a small in-memory array), and the
trainer, the fused trainer and the range test feed it through `row_batches` (tf.data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing import TypeVar

    import tensorflow as tf

    from kfold_clr.config import DataConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.data.images.augment import Augmenter
    from kfold_clr.data.splits import Split

    _T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class ChannelScaling:
    """`(pixel - offset) * factor` per channel, fitted on a fold's training rows.

    `standard`: offset the channel mean, factor 1 / its standard deviation; `minmax`: the
    channel's minimum and 1 / its range; `none`: pixels / 255 (values in [0, 1]).
    """

    offset: np.ndarray
    factor: np.ndarray

    def __call__(self, images: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Scaled float32 images (into `out` when given)."""
        out = np.empty(images.shape, dtype=np.float32) if out is None else out
        np.subtract(images, self.offset, out=out, dtype=np.float32)
        out *= self.factor
        return out


def is_pixels(x: object) -> bool:
    """True for an image cache: a (n, height, width, channels) uint8 array."""
    return getattr(x, "dtype", None) == np.uint8 and getattr(x, "ndim", 0) == 4


def is_lazy(x: object) -> bool:
    """True for rows read on demand (`PixelRows`) rather than an array in memory."""
    return isinstance(x, PixelRows)


def fit_scaling(pixels: np.ndarray, rows: np.ndarray, kind: str) -> ChannelScaling:
    """The per-channel scaling `kind` ("standard", "minmax" or "none") fitted on `pixels[rows]`."""
    channels = pixels.shape[-1]
    if kind == "none" or len(rows) == 0:
        return ChannelScaling(np.zeros(channels, np.float32), np.full(channels, 1 / 255, np.float32))
    from kfold_clr.data.images.statistics import image_statistics

    sums, squares, low, high = np.moveaxis(image_statistics(pixels), 2, 0)
    if kind == "minmax":
        lowest, span = low[rows].min(axis=0), high[rows].max(axis=0) - low[rows].min(axis=0)
        return ChannelScaling(lowest.astype(np.float32), (1 / np.where(span > 0, span, 1.0)).astype(np.float32))
    count = len(rows) * pixels.shape[1] * pixels.shape[2]
    mean = sums[rows].sum(axis=0) / count
    std = np.sqrt(np.maximum(squares[rows].sum(axis=0) / count - mean ** 2, 0.0))
    return ChannelScaling(mean.astype(np.float32), (1 / np.where(std > 0, std, 1.0)).astype(np.float32))


class PixelRows:
    """Rows `rows` of a uint8 pixel array as scaled float32 samples, read only when asked for.

    Args:
        pixels: (n, height, width, channels) uint8 array (the memory-mapped cache).
        rows: int array. The data set rows, in fold order.
        scaling: ChannelScaling.
        shape: tuple or None. Per-sample shape (`data.image_shape`; default the image's).
        augmenter: `Augmenter` or None. Applied by `take(..., key=...)` (training batches).
    """

    dtype = np.dtype(np.float32)

    def __init__(self, pixels: np.ndarray, rows: Sequence[int] | np.ndarray, scaling: ChannelScaling, *,
                 shape: Sequence[int] | None = None, augmenter: Augmenter | None = None) -> None:
        self.pixels, self.rows, self.scaling = pixels, np.asarray(rows, dtype=np.int64), scaling
        self.sample_shape = tuple(shape) if shape else tuple(pixels.shape[1:])
        self.augmenter = augmenter or None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def sample_bytes(self) -> int:
        return 4 * int(np.prod(self.sample_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def raw(self, positions: Sequence[int] | np.ndarray, *, key: tuple[int, ...] | None = None) -> np.ndarray:
        """The images at `positions` of this fold before scaling: uint8 pixels, or float32 ones
        augmented as `key` draws when given (and the rows have an augmenter)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")  # sorted reads: neighbouring pages of the cache
        raw = np.empty((len(rows), *self.pixels.shape[1:]), dtype=np.uint8)
        raw[order] = self.pixels[rows[order]]
        if key is not None and self.augmenter is not None:
            raw = self.augmenter(raw.astype(np.float32), key=key)
        return raw

    def take(self, positions: Sequence[int] | np.ndarray, *, key: tuple[int, ...] | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Samples at `positions` of this fold as float32 (written to `out` when given); augmented
        as `key` draws when given."""
        raw = self.raw(positions, key=key)
        if out is None:
            out = np.empty((len(raw), *self.sample_shape), dtype=np.float32)
        self.scaling(raw, out=out.reshape(raw.shape))
        return out

    def __getitem__(self, item: int | np.integer | slice | np.ndarray) -> np.ndarray:
        if isinstance(item, tuple):
            raise TypeError("PixelRows takes one index: an int, a slice or an array of positions")
        if isinstance(item, (int, np.integer)):
            return self.take([np.arange(len(self))[item]])[0]
        return self.take(np.arange(len(self))[item])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        values = self.take(np.arange(len(self)))
        return values if dtype is None else values.astype(dtype)


def image_fold(dataset: Dataset, split: Split,
               data_cfg: DataConfig) -> tuple[PixelRows, np.ndarray, PixelRows, np.ndarray]:
    """(x_train, y_train, x_val, y_val) of an image data set: `PixelRows` scaled with the
    training rows' channel statistics; the training rows augmented (`data.augment`)."""
    augmenter = None
    if getattr(data_cfg, "augment", None) is not None:
        from kfold_clr.data.images.augment import Augmenter

        augmenter = Augmenter(data_cfg.augment)
    scaling = fit_scaling(dataset.x, split.train, data_cfg.scale)
    shape = data_cfg.image_shape
    return (PixelRows(dataset.x, split.train, scaling, shape=shape, augmenter=augmenter), dataset.y[split.train],
            PixelRows(dataset.x, split.val, scaling, shape=shape), dataset.y[split.val])


def row_batches(x: PixelRows, y: np.ndarray,
                batches: Callable[[], Iterable[tuple[np.ndarray, tuple[int, ...] | None]]]) -> tf.data.Dataset:
    """A tf.data pipeline of (x, y) batches read from `x` (PixelRows) as `batches` lists them,
    prefetched (`steady_prefetch`).

    Args:
        x: PixelRows. y: array of the targets of the same rows.
        batches: callable returning an iterable of (positions, key): the fold positions of a
            batch and its augmentation key (None: not augmented). Called for every pass.
    """
    import tensorflow as tf

    from kfold_clr.data.pipelines import steady_prefetch

    y = np.asarray(y)
    pixels = np.float32 if x.augmenter is not None else np.uint8  # augmented pixels are float32

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for positions, key in batches():
            yield x.raw(positions, key=key).astype(pixels, copy=False), y[positions]

    # The scaling runs in the graph, on TensorFlow's threads: the same float32 operations as
    # `ChannelScaling` (a subtraction, then a product), so the same values bit for bit.
    offset, factor, shape = tf.constant(x.scaling.offset), tf.constant(x.scaling.factor), x.sample_shape

    def scale(raw, target):
        return tf.reshape((tf.cast(raw, tf.float32) - offset) * factor, (-1, *shape)), target

    signature = (tf.TensorSpec((None, *x.pixels.shape[1:]), tf.as_dtype(pixels)),
                 tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)))
    return steady_prefetch(tf.data.Dataset.from_generator(generate, output_signature=signature).map(scale))


def prefetched(thunks: Iterable[Callable[[], _T]]) -> Iterator[_T]:
    """Results of the callables `thunks`, in order, each computed in a background thread while the
    previous one is used (the fused trainer's next batches are read while a step runs)."""
    import concurrent.futures

    thunks = iter(thunks)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for thunk in thunks:
            future = pool.submit(thunk)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()
