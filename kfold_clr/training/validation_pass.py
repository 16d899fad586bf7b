"""Scoring a fold's validation rows and keeping what the model predicted, in one pass.

Keras's `fit(validation_data=...)` scores the validation rows after every epoch and throws the
predictions away, so `predictions.csv` used to cost a second pass over them. `ValidationPass`
runs Keras's own test step (the forward pass, `_compute_loss`, the loss tracker and
`compute_metrics`, in one traced graph, XLA when the model compiles so) and also returns the
outputs: the scores are those of `evaluate`, bit for bit (tests compare them), and the last
epoch's outputs are the fold's predictions. Models with their own `test_step` or
`compute_metrics`, eager models and other backends keep Keras's validation (`supported`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    import tensorflow as tf

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its compiled state, traced step)
_KERAS_HOOKS = ("test_step", "compute_loss", "compute_metrics", "get_metrics_result")


def supported(model: keras.Model) -> bool:
    """Whether `score` computes exactly what Keras's `evaluate` does for `model`: the TensorFlow
    backend, a compiled graph (not `run_eagerly`) and Keras's own test step and metrics."""
    if keras.backend.backend() != "tensorflow" or model.run_eagerly:
        return False
    if not all(hasattr(model, name) for name in ("_compute_loss", "_loss_tracker", "_compile_metrics",
                                               "_call_has_training_arg")):
        return False
    return all(getattr(type(model), name) is getattr(keras.Model, name) for name in _KERAS_HOOKS)


def score(model: keras.Model, data: tf.data.Dataset) -> tuple[dict[str, float], np.ndarray]:
    """The model's scores on the (x, y) batches of `data`, as `model.evaluate(data,
    return_dict=True)` gives them, and its outputs on every row (float32, (rows, outputs))."""
    from keras.src.utils.python_utils import pythonify_logs

    step = _step(model)
    model.reset_metrics()
    outputs = [step(x, y).numpy() for x, y in data]
    scores = pythonify_logs(model.get_metrics_result())
    width = int(np.prod(model.output_shape[1:]))
    found = np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)
    return scores, found.reshape(len(found), width).astype(np.float32, copy=False)


def _step(model: keras.Model) -> Callable:
    """Keras's test step that also returns the outputs, traced once per compiled model (a new
    compile makes new metrics and a new step). Kept beside the model, not on it (Keras's saving
    walks a model's attributes), and holding it only weakly: the step goes with the model."""
    import tensorflow as tf
    from keras.src.losses import loss as loss_module

    compiled = (model._loss_tracker, model._compile_metrics, getattr(model, "_compile_loss", None))
    cached = _STEPS.get(model)
    if cached is not None and all(a is b for a, b in zip(cached[0], compiled)):
        return cached[1]
    owner = weakref.ref(model)

    def test_step(x, y):
        model = owner()
        y_pred = model(x, training=False) if model._call_has_training_arg else model(x)
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=False)
        model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                         sample_weight=tf.shape(x)[0])
        model.compute_metrics(x, y, y_pred, sample_weight=None)
        return y_pred

    step = tf.function(test_step, reduce_retracing=True, jit_compile=bool(model.jit_compile))
    _STEPS[model] = (compiled, step)
    return step


class ValidationPass(keras.callbacks.Callback):
    """Validation after every epoch, in place of Keras's `validation_data`: adds `val_<metric>` to
    the epoch's logs (first in the callback list, so every later callback and the history see
    them, in Keras's sorted order) and keeps the outputs of the latest pass (`outputs`).

    Args:
        data: tf.data.Dataset. The validation (x, y) batches, read anew by every pass.
    """

    def __init__(self, data: tf.data.Dataset) -> None:
        super().__init__()
        self.data = data
        self.outputs: np.ndarray | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.outputs = None  # the weights change: the previous pass's outputs are not theirs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores, self.outputs = score(self.model, self.data)
        merged = sorted({**logs, **{f"val_{name}": value for name, value in scores.items()}}.items())
        logs.clear()
        logs.update(merged)
