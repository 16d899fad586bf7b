"""Every batch pipeline the trainers and the range test build reads a fixed number of batches
ahead with tf.data's autotuning off: its thread made each `fit` whose epochs end in a validation
pass wait up to a second before returning (docs/benchmarks.md, where a fold's time goes)."""

import numpy as np
import pytest

from kfold_clr.data.images.streaming import ChannelScaling, PixelRows
from kfold_clr.data.pipelines import PREFETCH, steady_prefetch
from kfold_clr.range_test import runner
from kfold_clr.training import trainer

ROWS = 10


def _features(kind):
    rng = np.random.default_rng(0)
    if kind == "pixels":
        pixels = rng.integers(0, 256, (ROWS, 4, 4, 3), dtype=np.uint8)
        return PixelRows(pixels, np.arange(ROWS), ChannelScaling(np.zeros(3, np.float32), np.ones(3, np.float32)))
    return rng.standard_normal((ROWS, 3)).astype(np.float32)


def _pipelines(kind):
    x, y = _features(kind), np.arange(ROWS) % 2
    order = np.stack([np.random.default_rng(epoch).permutation(ROWS) for epoch in range(2)])
    yield trainer.batches(x, y, 4)
    yield trainer.training_batches(x, y, 4, order=order)
    yield runner._sweep_dataset(x, y, np.arange(ROWS), iterations=5, batch_size=4, rng=np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["arrays", "pixels"])
def test_batch_pipelines_prefetch_a_fixed_number_without_autotuning(kind):
    for dataset in _pipelines(kind):
        assert dataset.options().autotune.enabled is False
        assert sum(1 for _ in dataset) > 0  # and still yield their batches


def test_steady_prefetch_keeps_the_batches_and_their_order():
    import tensorflow as tf

    plain = tf.data.Dataset.range(7).batch(3)
    steady = steady_prefetch(plain)
    assert [b.numpy().tolist() for b in steady] == [b.numpy().tolist() for b in plain]
    assert steady.options().autotune.enabled is False and PREFETCH >= 1
