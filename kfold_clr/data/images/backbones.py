"""Pretrained backbones: keras.applications models by name, their weights, and a frozen
backbone's pooled features computed once per image.

`model: {kind: pretrained, backbone: mobilenet_v2, weights: imagenet | null | PATH,
trainable: false | true | N, pooling: avg | max, hidden: [...], dropout: ...}` names a
keras.applications constructor in lower snake case (``mobilenet_v3_small`` for
``MobileNetV3Small``; underscores and case do not matter). Raw 0..255 pixels go through the
backbone module's own ``preprocess_input`` inside the model. With a frozen backbone and no
augmentation, :func:`prepare_pretrained` replaces the pixels by the backbone's pooled features
(cached on disk, `features.py`), so every fold and strategy trains only the head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras

from kfold_clr.config.backbones import backbone_names, canonical_name, find_backbone
from kfold_clr.errors import ConfigError
from kfold_clr.storage import provenance

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig, ModelConfig
    from kfold_clr.data.datasets import Dataset


def preprocess_function(name: str) -> Callable[..., Any]:
    """The `preprocess_input` of the keras.applications module that defines backbone `name`."""
    return importlib.import_module(find_backbone(name).__module__).preprocess_input


@keras.saving.register_keras_serializable(package="kfold_clr")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own `preprocess_input` on raw 0..255 pixels, as a layer of the model.

    Its inputs are pixels in [0, 1], as the image stream gives them under `data.scale: none`
    (uint8 / 255); they are taken back to 0..255 first:

    ```
    outputs = preprocess_input(255 * inputs)
    ```

    Args:
        backbone: str. A backbone name of :func:`backbone_names`.
    """

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = preprocess_function(backbone)

    def call(self, inputs: Any) -> Any:
        return self._preprocess(keras.ops.cast(inputs, "float32") * 255.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": self.backbone}


# ----------------------------------------------------------------------------- weights
def keras_models_folder() -> pathlib.Path:
    """Where Keras keeps downloaded application weights (`$KERAS_HOME/models`, default ~/.keras/models)."""
    from keras.src.backend import config as keras_config

    return pathlib.Path(keras_config.keras_home()).expanduser() / "models"


def weights_identity(model_cfg: ModelConfig, *, seed: int | None = None) -> str:
    """What the backbone's initial weights are, for fingerprints and the features cache: a hash of
    the weights file, `imagenet` with the Keras version that fetches it, or `null` (and the seed)."""
    if model_cfg.weights is None:
        return "null" if seed is None else f"null (seed {seed})"
    if model_cfg.weights == "imagenet":
        return f"imagenet (keras {keras.__version__})"
    digest = hashlib.sha256()
    with open(model_cfg.weights, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def resolve_weights(model_cfg: ModelConfig, base_dir: str | pathlib.Path) -> ModelConfig:
    """`model_cfg` with a weights file's path made absolute and checked: a relative path is looked up
    as `data.path` is (`kfold_clr.data.datasets.data_file`): from the working directory, else beside the config."""
    from kfold_clr.config.base import resolve_path as _resolve_path

    if model_cfg.weights in (None, "imagenet"):
        return model_cfg
    path = _resolve_path(model_cfg.weights, base_dir)
    if not path.is_file():
        given = pathlib.Path(os.path.expandvars(model_cfg.weights)).expanduser()
        places = [given] if given.is_absolute() else [pathlib.Path.cwd() / given, pathlib.Path(base_dir) / given]
        looked = " and ".join(dict.fromkeys(repr(str(place.resolve())) for place in places))
        raise ConfigError(f"model.weights: {model_cfg.weights!r} is not a file (looked for {looked}); "
                          "give the path of a .weights.h5 file, imagenet or null")
    return model_cfg.model_copy(update={"weights": str(path.resolve())})


def _offline_error(model_cfg: ModelConfig, error: Exception) -> ConfigError:
    """The one-line error for imagenet weights that are neither cached nor downloadable."""
    origin = re.search(r"URL fetch failure on (\S+?):? ", str(error) + " ")
    file_name = origin.group(1).rsplit("/", 1)[-1] if origin else "the weights file"
    source = f" (from {origin.group(1)})" if origin else ""
    return ConfigError(f"model.weights: 'imagenet' weights of backbone {model_cfg.backbone!r} are not in Keras's "
                       f"cache and cannot be downloaded; put {file_name}{source} in {keras_models_folder()}/, "
                       "or set model.weights to the path of a .weights.h5 file")


# ----------------------------------------------------------------------------- building
def build_backbone(model_cfg: ModelConfig, input_shape: Sequence[int]) -> keras.Model:
    """The backbone of `model_cfg` for images shaped `input_shape`, pooled, its weights loaded
    and `trainable` applied (no preprocessing; see :func:`apply_backbone`).

    Raises:
        ConfigError: unknown backbone, images too small, params the constructor refuses,
            a weights file that does not fit, imagenet weights offline, trainable N too large.
    """
    constructor = find_backbone(model_cfg.backbone)
    if constructor is None:
        raise ConfigError(f"model.backbone: {model_cfg.backbone!r} must be a keras.applications model, one of "
                          + ", ".join(backbone_names()))
    shape = tuple(int(side) for side in input_shape)
    try:
        backbone = constructor(include_top=False, weights="imagenet" if model_cfg.weights == "imagenet" else None,
                               input_shape=shape, pooling=model_cfg.pooling, **model_cfg.params)
    except TypeError as error:
        raise ConfigError(f"model.params: {model_cfg.params!r} are not arguments of {constructor.__name__} "
                          f"({str(error).splitlines()[0]})") from None
    except ValueError as error:
        raise _shape_error(model_cfg, shape, error) from None
    except Exception as error:
        if "URL fetch failure" in str(error):
            raise _offline_error(model_cfg, error) from None
        raise
    if model_cfg.weights not in (None, "imagenet"):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                backbone.load_weights(model_cfg.weights)
            partial = [str(warning.message) for warning in caught if "freshly-initialized" in str(warning.message)]
            if partial:
                raise ValueError(partial[0])
        except Exception as error:  # noqa: BLE001 - any failure to load is a problem of this file
            detail = (str(error).strip().splitlines() or [""])[0][:300]
            raise ConfigError(f"model.weights: {model_cfg.weights!r} does not hold weights of backbone "
                              f"{model_cfg.backbone!r} for images of {_shape_text(shape)} "
                              f"({type(error).__name__}: {detail})") from None
    _set_trainable(backbone, model_cfg)
    return backbone


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(side) for side in shape)


def _shape_error(model_cfg: ModelConfig, shape: tuple[int, ...], error: Exception) -> ConfigError:
    text = (str(error).strip().splitlines() or [""])[0]
    smallest = re.search(r"at least (\d+)x(\d+)", text)
    if smallest:
        return ConfigError(f"data.image_size: {list(shape[:2])} is too small for backbone {model_cfg.backbone!r} "
                           f"(at least {smallest.group(1)} x {smallest.group(2)})")
    return ConfigError(f"model.backbone: {model_cfg.backbone!r} cannot be built for images of {_shape_text(shape)} "
                       f"with weights {model_cfg.weights!r} and params {model_cfg.params!r} ({text[:300]})")


def _set_trainable(backbone: keras.Model, model_cfg: ModelConfig) -> None:
    """Frozen (false), all layers trainable (true), or exactly the last N layers trainable."""
    trainable = model_cfg.trainable
    if isinstance(trainable, bool) or trainable is None:
        backbone.trainable = bool(trainable)
        return
    layers = backbone.layers
    if trainable > len(layers):
        raise ConfigError(f"model.trainable: {trainable} must be at most the {len(layers)} layers of backbone "
                          f"{model_cfg.backbone!r} (or true for all of them)")
    backbone.trainable = True
    for layer in layers[:len(layers) - trainable]:
        layer.trainable = False


def apply_backbone(model_cfg: ModelConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The pooled features of raw 0..255 pixel `inputs`: the backbone's `preprocess_input`, then
    the backbone in inference mode (batch-norm statistics stay as loaded, as Keras's
    transfer-learning guide advises, also for trainable layers)."""
    backbone = build_backbone(model_cfg, inputs.shape[1:])
    pixels = BackbonePreprocess(canonical_name(model_cfg.backbone), name="preprocess_input")(inputs)
    return backbone(pixels, training=False)


def feature_extractor(model_cfg: ModelConfig, input_shape: Sequence[int]) -> keras.Model:
    """A model from raw pixels to the backbone's pooled features."""
    inputs = keras.Input(shape=tuple(input_shape))
    return keras.Model(inputs, apply_backbone(model_cfg, inputs), name="feature_extractor")


# ----------------------------------------------------------------------------- preflight
def features_once(config: ExperimentConfig) -> bool:
    """Whether the backbone runs once per image: frozen, and no augmentation of the pixels."""
    return config.model.trainable is False and not getattr(config.data, "augment", None)


def _image_shape(config: ExperimentConfig, dataset: Dataset) -> tuple[int, ...]:
    """(height, width, channels) of one image: the array's own shape, or `data.image_shape`."""
    if getattr(dataset.x, "ndim", 0) == 4:
        return tuple(int(side) for side in dataset.x.shape[1:])
    shape = config.data.image_shape
    if not shape or len(shape) != 3:
        raise ConfigError(f"data.image_shape: {shape!r} must be [height, width, channels] of images for "
                          "model.kind 'pretrained' (data.source: images fills it in)")
    return tuple(shape)


def _renewed(dataset: Dataset, *, content_hash: str, weights: dict[str, str], **changes: Any) -> Dataset:
    """A copy of `dataset` with `changes`, whose content hash is `content_hash` (made of the images'
    own hash and the backbone's weights, `weights`: {label: identity}), with those parts remembered
    for saying what changed (`provenance.remember_data_parts`)."""
    provenance.remember_data_parts(content_hash, {"the data": dataset.content_hash(), **weights})
    renewed = dataclasses.replace(dataset, **changes)
    object.__setattr__(renewed, "_content_hash", content_hash)
    return renewed


def _weights_label(model_cfg: ModelConfig) -> str:
    if model_cfg.weights in (None, "imagenet"):
        return "backbone weights"
    return f"backbone weights file {model_cfg.weights}"


def prepare_pretrained(config: ExperimentConfig, dataset: Dataset, *,
                       verbose: bool = True) -> tuple[ExperimentConfig, Dataset]:
    """Resolve a `kind: pretrained` model against its data: (config, dataset) to train on.

    The weights path is made absolute and `data.scale` resolved to none (the image stream
    then gives pixels / 255, and the backbone's own `preprocess_input` scales them). With a frozen
    backbone and no augmentation
    the backbone runs once per image: the returned dataset holds its pooled features (N, D)
    as a memory-mapped float32 array (cached, see `features.py`), `data.image_shape` is None,
    and `build_model` builds only the head on them. Otherwise the pixels stay and the whole
    model is built per fold. Either way the dataset's content hash covers the backbone and
    its weights (:func:`weights_identity`), so fingerprints change with them, and
    `provenance.remember_data_parts` tells the images and the weights apart for saying what changed.

    Args:
        config: ExperimentConfig with `model.kind: pretrained`.
        dataset: Dataset of images: x (N, H, W, C) uint8 pixels (the image cache) or floats
            in [0, 1], or either flattened with `data.image_shape`.
        verbose: bool. Print the progress of a features pass.

    Returns:
        (config, dataset).
    """
    from kfold_clr.data.images import features

    model_cfg = resolve_weights(config.model, config.base_dir)
    if "scale" in config.data.model_fields_set and config.data.scale != "none":
        warnings.warn(f"data.scale: {config.data.scale!r} is not used with model.kind 'pretrained'; the backbone's "
                      "preprocess_input scales the raw pixels", UserWarning, stacklevel=2)
    image_shape = _image_shape(config, dataset)
    seed = config.seed if model_cfg.weights is None else None
    identity = weights_identity(model_cfg, seed=seed)
    weights = {_weights_label(model_cfg): identity}
    data_cfg = config.data.model_copy(update={"scale": "none"})
    if features_once(config):
        key = features.features_key(dataset.content_hash(), model_cfg, identity=identity, image_shape=image_shape)
        path = features.features_folder(config) / f"{canonical_name(model_cfg.backbone)}-{key}.npy"
        values = features.cached_features(lambda: _seeded_extractor(model_cfg, image_shape, seed), dataset.x,
                                          image_shape=image_shape, path=path, verbose=verbose)
        description = (f"{dataset.description}; {values.shape[1]} {model_cfg.pooling}-pooled features of "
                       f"{canonical_name(model_cfg.backbone)} ({identity})")
        dataset = _renewed(dataset, content_hash=key, weights=weights, x=values, description=description)
        data_cfg = data_cfg.model_copy(update={"image_shape": None})
    else:
        digest = hashlib.sha256(f"{dataset.content_hash()}\x00{canonical_name(model_cfg.backbone)}\x00"
                                 f"{identity}".encode())
        dataset = _renewed(dataset, content_hash=digest.hexdigest()[:16], weights=weights)
    return config.model_copy(update={"data": data_cfg, "model": model_cfg}), dataset


def _seeded_extractor(model_cfg: ModelConfig, image_shape: tuple[int, ...], seed: int | None) -> keras.Model:
    """The feature extractor; random weights (weights: null) drawn from the experiment's seed
    (Keras's global seed is set: every fold sets its own before building its model)."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return feature_extractor(model_cfg, image_shape)
