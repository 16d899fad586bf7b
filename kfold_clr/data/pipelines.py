"""The end of every tf.data batch pipeline the trainers and the range test build: a fixed
read-ahead, without tf.data's autotuning."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

PREFETCH = 2  # batches read ahead while a step runs


def steady_prefetch(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` reading `PREFETCH` batches ahead, with autotuning off.

    The pipelines' buffers are fixed, so autotuning has nothing to tune, and its background
    thread made deleting an iterator wait for it: up to a second at the end of every Keras `fit`
    whose epochs end with a validation pass (every fold trained one by one).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH).with_options(options)
