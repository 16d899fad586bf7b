"""Models and optimizers: the declarative MLP / CNN, pretrained backbones with a head, user
factories, compile settings, and the dtype policy (`training.precision`) models are built under."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Optional

import keras

from kfold_clr.config import import_object
from kfold_clr.config.optimizers import make_optimizer  # noqa: F401  (its callers' import path)
from kfold_clr.errors import ConfigError

if TYPE_CHECKING:
    from kfold_clr.config import ModelConfig


def default_loss(task: str) -> str:
    return "sparse_categorical_crossentropy" if task == "classification" else "mse"


def default_metrics(task: str) -> list:
    return ["accuracy"] if task == "classification" else ["mae"]


def _mlp(cfg, inputs):
    x = keras.layers.Flatten()(inputs) if len(inputs.shape) > 2 else inputs
    for units in cfg.hidden:
        x = keras.layers.Dense(units, use_bias=not cfg.batch_norm)(x)
        if cfg.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(cfg.activation)(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout)(x)
    return x


def _cnn(cfg, inputs):
    rank = len(inputs.shape) - 2  # spatial dimensions
    if rank not in (1, 2):
        raise ConfigError(f"model.kind: 'cnn' needs samples shaped (length, channels) or "
                          f"(height, width, channels); set data.image_shape (got {tuple(inputs.shape[1:])})")
    conv = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling1D if rank == 1 else keras.layers.MaxPooling2D
    x = inputs
    for filters in cfg.filters:
        x = conv(filters, cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm)(x)
        if cfg.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(cfg.activation)(x)
        if x.shape[1] >= 2:
            x = pool(2)(x)
    x = keras.layers.Flatten()(x)
    for units in cfg.hidden:
        x = keras.layers.Dense(units, activation=cfg.activation)(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout)(x)
    return x


def _pretrained(cfg, inputs):
    """Pooled features (1-D samples, what `prepare_pretrained` caches): the head alone;
    images: the backbone (its own preprocess_input on raw 0..255 pixels) and the head."""
    if len(inputs.shape) == 2:
        return _mlp(cfg, inputs)
    from kfold_clr.data.images.backbones import apply_backbone

    return _mlp(cfg, apply_backbone(cfg, inputs))


_KINDS = {"mlp": _mlp, "cnn": _cnn, "pretrained": _pretrained}


_precision = "float32"  # the dtype policy of the models built now: `precision_policy` sets it


def current_precision() -> str:
    """The dtype policy models are built under now (`precision_policy` sets it; float32 outside)."""
    return _precision


@contextlib.contextmanager
def precision_policy(precision: str, *, log: Optional[Callable[[str], None]] = None) -> Iterator[str]:
    """Models built inside the block compute under Keras's dtype policy `precision`.

    Keras's global policy is set only while `build_model` builds (so `clear_session`
    between folds cannot forget it, and nothing outside a model sees it) and is float32
    again after; the previous setting is put back when the block ends, whatever happens.
    Layers keep the policy they were built with: float32 weights, float16 / bfloat16
    computations, float32 outputs. Under mixed_float16 `compile` wraps the optimizer in
    Keras's `LossScaleOptimizer`.

    Args:
        precision: str. "float32", "mixed_float16" or "mixed_bfloat16" (`training.precision`).
        log: callable(str) or None. Told the policy once when it is not float32.

    Example:

    ```python
    with precision_policy("mixed_bfloat16"):
        model = build_model(config.model, input_shape=(64,), n_outputs=10, task="classification")
    ```
    """
    global _precision
    previous = _precision
    if precision != "float32" and log is not None:
        log(f"training in mixed precision: Keras dtype policy {precision!r} (float32 weights and outputs)")
    _precision = precision
    try:
        yield precision
    finally:
        _precision = previous


@contextlib.contextmanager
def _keras_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(cfg: "ModelConfig", *, input_shape: tuple, n_outputs: int, task: str) -> keras.Model:
    """Build the uncompiled model a `model:` section describes.

    A factory is called as ``factory(input_shape, n_outputs, **params)`` and must
    return an uncompiled Keras model (softmax outputs for classification). A pretrained
    backbone (`kind: pretrained`) on images of `input_shape` (height, width, channels) is
    built with its weights and `trainable` applied, followed by the head (`hidden`,
    `dropout`); on 1-D samples (its pooled features) only the head is built. Under
    `precision_policy` the model is built with that dtype policy, its outputs in float32.

    Args:
        cfg: ModelConfig.
        input_shape: tuple. Shape of one sample.
        n_outputs: int. Classes, or 1 for regression.
        task: str. "classification" or "regression".
    """
    if _precision == "float32":
        return _build(cfg, tuple(input_shape), n_outputs, task)
    with _keras_policy(_precision):
        return _float32_outputs(_build(cfg, tuple(input_shape), n_outputs, task), cfg)


def _build(cfg, input_shape, n_outputs, task):
    if cfg.factory is not None:
        factory = import_object(cfg.factory, key="model.factory")
        try:
            model = factory(tuple(input_shape), n_outputs, **cfg.params)
        except TypeError as error:
            raise ConfigError(f"model.factory: {cfg.factory!r} could not be called as "
                              f"factory(input_shape, n_outputs, **params): {error}") from None
        if not isinstance(model, keras.Model):
            raise ConfigError(f"model.factory: {cfg.factory!r} returned "
                              f"{type(model).__name__}, not a keras.Model")
        return model
    inputs = keras.Input(shape=input_shape)
    features = _KINDS[cfg.kind](cfg, inputs)
    activation = "softmax" if task == "classification" else None
    if _precision == "float32":
        outputs = keras.layers.Dense(n_outputs, activation=activation)(features)
    else:  # softmax in float32, as Keras's mixed-precision guide asks
        logits = keras.layers.Dense(n_outputs)(features)
        outputs = keras.layers.Activation(activation or "linear", dtype="float32", name="outputs")(logits)
    return keras.Model(inputs, outputs, name=f"{cfg.kind}")


def _float32_outputs(model, cfg):
    """`model` with float32 outputs: a factory's functional model gets a final cast."""
    dtypes = {keras.backend.standardize_dtype(output.dtype) for output in getattr(model, "outputs", None) or []}
    if dtypes <= {"float32"}:  # float32, or a subclassed model whose outputs are known only when called
        return model
    if len(model.inputs) == 1 and len(model.outputs) == 1:
        outputs = keras.layers.Activation("linear", dtype="float32", name="float32_outputs")(model.outputs[0])
        return keras.Model(model.inputs[0], outputs, name=model.name)
    raise ConfigError(f"model.factory: {cfg.factory!r} must return a model with float32 outputs under "
                      f"training.precision {_precision!r}: give its last layer dtype=\"float32\"")


def reset_optimizer(optimizer: keras.optimizers.Optimizer) -> None:
    """An optimizer's state as a fresh one starts: slots and step counters zero, and a
    `LossScaleOptimizer`'s scale (mixed_float16) back at its initial value."""
    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros_like(variable))
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and optimizer.built:
        optimizer.dynamic_scale.assign(optimizer.initial_scale)


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, *, loss: str, metrics: list,
                  steps_per_execution: int = 1) -> keras.Model:
    """Compile `model` with the resolved loss and metrics (the config's task defaults filled in)."""
    try:
        model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics),
                      steps_per_execution=steps_per_execution)
    except ValueError as error:
        raise ConfigError(f"training: loss {loss!r} / metrics {list(metrics)!r} rejected by Keras: "
                          f"{str(error).splitlines()[0]}") from None
    return model
