"""Models and optimizers: the declarative MLP / CNN, pretrained backbones with a head, user
factories, compile settings."""

import keras

from kfold_clr.config import import_object
from kfold_clr.errors import ConfigError


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
    from kfold_clr.images.backbones import apply_backbone

    return _mlp(cfg, apply_backbone(cfg, inputs))


_KINDS = {"mlp": _mlp, "cnn": _cnn, "pretrained": _pretrained}


def build_model(cfg, *, input_shape, n_outputs, task):
    """Build the uncompiled model a `model:` section describes.

    A factory is called as ``factory(input_shape, n_outputs, **params)`` and must
    return an uncompiled Keras model (softmax outputs for classification). A pretrained
    backbone (`kind: pretrained`) on images of `input_shape` (height, width, channels) is
    built with its weights and `trainable` applied, followed by the head (`hidden`,
    `dropout`); on 1-D samples (its pooled features) only the head is built.

    Args:
        cfg: ModelConfig.
        input_shape: tuple. Shape of one sample.
        n_outputs: int. Classes, or 1 for regression.
        task: str. "classification" or "regression".
    """
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
    inputs = keras.Input(shape=tuple(input_shape))
    features = _KINDS[cfg.kind](cfg, inputs)
    activation = "softmax" if task == "classification" else None
    outputs = keras.layers.Dense(n_outputs, activation=activation)(features)
    return keras.Model(inputs, outputs, name=f"{cfg.kind}")


def make_optimizer(cfg, learning_rate):
    """The optimizer of `training.optimizer` driven by `learning_rate` (float or schedule)."""
    common = {"learning_rate": learning_rate}
    if cfg.weight_decay is not None:
        common["weight_decay"] = cfg.weight_decay
    if cfg.clipnorm is not None:
        common["clipnorm"] = cfg.clipnorm
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "adam":
        return keras.optimizers.Adam(beta_1=cfg.beta_1, beta_2=cfg.beta_2, **common)
    return keras.optimizers.RMSprop(rho=cfg.rho, momentum=0.0, **common)


def compile_model(model, optimizer, *, loss, metrics, steps_per_execution=1):
    """Compile `model` with the resolved loss and metrics (the config's task defaults filled in)."""
    try:
        model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics),
                      steps_per_execution=steps_per_execution)
    except ValueError as error:
        raise ConfigError(f"training: loss {loss!r} / metrics {list(metrics)!r} rejected by Keras: "
                          f"{str(error).splitlines()[0]}") from None
    return model
