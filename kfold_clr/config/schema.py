"""The experiment schema: one strict pydantic model per YAML section.

Owns the section models (data, model, cross-validation, range test, execution, output,
compare) and the whole `ExperimentConfig` with the cross-field rules they check; the
`training:` section lives in `training.py`, the strategy entries in `strategies.py`, the shared ground
(the frozen section, `_KeyError`, safe names, `expand_path`) in `base.py`. Nothing
here reads YAML or formats pydantic's errors.
"""

import math
import pathlib
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from kfold_clr.config.base import (
    IMPORT_PATH,
    MAX_COUNT,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_LR,
    MAX_REPEATS,
    MAX_SPLITS,
    SAFE_NAME_RULE,
    SKLEARN_DATASETS,
    SYNTHETIC_DATASETS,
    _key_text,
    _KeyError,
    _Section,
    expand_path,
    is_safe_name,
)
from kfold_clr.config.optimizers import momentum_key
from kfold_clr.config.strategies import Strategy
from kfold_clr.config.training import EarlyStoppingConfig, OptimizerConfig, TrainingConfig  # noqa: F401  (re-exported)

# ----------------------------------------------------------------------------- data
IMAGE_CHANNELS = {"rgb": 3, "grayscale": 1}  # channels per pixel of each `color_mode`
FILE_SOURCES = ("csv", "parquet", "npz", "images")  # the sources that read `path`
TABLE_SOURCES = ("csv", "parquet")  # the sources with `target`, `features` and `groups` columns
IMAGE_KEYS = ("table", "file_column", "cache", "augment")  # keys only `source: images` reads


MAX_IMAGE_SIDE = 4096  # pixels per side of a resized image (a 4096 x 4096 RGB image is 48 MiB)


class AugmentConfig(_Section):
    """Augmentation of image training batches (Keras's preprocessing layers), drawn from the
    fold's seed, the epoch and the batch: every strategy sees the same augmented images."""

    flip: Optional[Literal["horizontal", "vertical", "horizontal_and_vertical"]] = None
    rotation: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None  # fraction of a full turn
    zoom: Optional[Annotated[float, Field(ge=0.0, lt=1.0)]] = None
    translation: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None  # fraction of height / width
    contrast: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None


class DataConfig(_Section):
    """Where the samples come from and how they are preprocessed (per fold).

    `source: images` reads a folder of class folders: `image_size` [height, width] is
    required, `color_mode` defaults to rgb, and `image_shape` defaults to
    [height, width, channels] (filled in here, so a CNN needs nothing more). With `table`
    (a CSV, one row per image; `file_column`, default "file", names the image) the labels
    may come from its `target` column and the groups from its `groups` column. `cache` is
    where decoded pixels live; `augment` augments training batches.
    """

    source: Literal["sklearn", "synthetic", "csv", "parquet", "npz", "images"]
    name: Optional[str] = None
    path: Optional[str] = None
    target: Optional[str] = None
    features: Optional[list[str]] = None
    groups: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)
    task: Literal["auto", "classification", "regression"] = "auto"
    scale: Literal["none", "standard", "minmax"] = "standard"
    scale_target: bool = True
    image_shape: Optional[list[Annotated[int, Field(ge=1)]]] = None
    image_size: Optional[Annotated[list[Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]],
                                   Field(min_length=2, max_length=2)]] = None
    color_mode: Optional[Literal["rgb", "grayscale"]] = None
    table: Optional[str] = None
    file_column: Optional[str] = None
    cache: Optional[str] = None
    augment: Optional[AugmentConfig] = None

    @field_validator("augment")
    @classmethod
    def _no_empty_augment(cls, augment):
        """`augment: {}` augments nothing: the same as no `augment` (features stay cacheable)."""
        return None if augment is not None and not augment.model_dump(exclude_none=True) else augment

    @model_validator(mode="before")
    @classmethod
    def _image_defaults(cls, data):
        """Images: color_mode rgb and image_shape [height, width, channels] unless given."""
        if not isinstance(data, dict) or data.get("source") != "images":
            return data
        data = {**data, "color_mode": data.get("color_mode", "rgb")}
        if data.get("table") is not None and data.get("file_column") is None:
            data["file_column"] = "file"
        size, channels = data.get("image_size"), IMAGE_CHANNELS.get(data["color_mode"])
        valid_size = (isinstance(size, list) and len(size) == 2
                      and all(type(side) is int and side >= 1 for side in size))
        if data.get("image_shape") is None and valid_size and channels is not None:
            data["image_shape"] = [*size, channels]
        return data

    @model_validator(mode="after")
    def _check_source_fields(self):
        if self.source == "sklearn" and self.name not in SKLEARN_DATASETS:
            raise _KeyError("name", self.name, "one of " + ", ".join(SKLEARN_DATASETS))
        if self.source == "synthetic" and self.name not in SYNTHETIC_DATASETS:
            raise _KeyError("name", self.name, "one of " + ", ".join(SYNTHETIC_DATASETS))
        if self.source in FILE_SOURCES and not self.path:
            what = "a folder of class folders" if self.source == "images" else "a file path"
            raise _KeyError("path", self.path, f"{what} (required when source is {self.source!r})")
        if self.source in TABLE_SOURCES and not self.target:
            raise _KeyError("target", self.target, f"the name of the target column (required for {self.source})")
        if self.source in ("sklearn", "synthetic") and self.path is not None:
            raise _KeyError("path", self.path, f"not used with source {self.source!r}; remove it")
        if self.source == "images":
            self._check_images()
        else:
            for key in ("image_size", "color_mode", *IMAGE_KEYS):
                if getattr(self, key) is not None:
                    raise _KeyError(key, getattr(self, key), "omitted unless source is 'images'")
        return self

    def _check_images(self):
        if self.features is not None:
            raise _KeyError("features", self.features, "omitted when source is 'images' (the pixels are the features)")
        for key in ("target", "groups", "file_column"):
            if getattr(self, key) is not None and self.table is None:
                raise _KeyError(key, getattr(self, key), "omitted unless data.table names a CSV of the images "
                                "(without one, the class folders are the labels)")
        if self.table is not None and self.target is None and self.groups is None:
            raise _KeyError("table", self.table, "used with data.target (labels) and/or data.groups (groups) "
                            "of its columns; name one, or remove table")
        for key in ("table", "file_column", "cache"):
            if getattr(self, key) is not None and not str(getattr(self, key)).strip():
                raise _KeyError(key, getattr(self, key), "a non-empty " + ("column name" if key == "file_column"
                                                                           else "path"))
        if self.image_size is None:
            raise _KeyError("image_size", None, "[height, width], the size every image is resized to "
                            "(required when source is 'images')")
        if self.color_mode is None:
            raise _KeyError("color_mode", None, "one of " + ", ".join(IMAGE_CHANNELS))
        if self.task == "regression":
            raise _KeyError("task", self.task, "auto or classification for source 'images' "
                            "(the class folders are the labels)")


# ----------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """A declarative MLP or CNN, a pretrained keras.applications backbone with a head, or an
    import path to a factory function.

    `kind: pretrained` takes `backbone` (a keras.applications name such as mobilenet_v2),
    `weights` (imagenet, filled in; null; or a weights file, a relative path looked up like
    `data.path`: the working directory, then beside the config), `trainable` (false, filled in;
    true; or the last N layers), `pooling` (avg, filled in; or max), `params` (more keyword
    arguments of the backbone's constructor, e.g. alpha) and a head of `hidden` + `dropout`.
    """

    kind: Optional[Literal["mlp", "cnn", "pretrained"]] = None
    factory: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)
    hidden: list[Annotated[int, Field(ge=1, le=MAX_COUNT * 10)]] = Field(default_factory=lambda: [64])
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    batch_norm: bool = False
    filters: list[Annotated[int, Field(ge=1, le=MAX_COUNT * 10)]] = Field(default_factory=lambda: [16, 32])
    kernel_size: Annotated[int, Field(ge=1, le=1000)] = 3
    backbone: Optional[str] = None
    weights: Optional[str] = None
    trainable: Optional[Union[bool, Annotated[int, Field(ge=1)]]] = None
    pooling: Optional[Literal["avg", "max"]] = None

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data):
        """The declarative MLP unless a factory or another kind is named; a pretrained
        backbone's defaults (imagenet weights, frozen, average pooling) filled in."""
        if isinstance(data, dict) and data.get("factory") is None and data.get("kind") is None:
            return {**data, "kind": "mlp"}
        if isinstance(data, dict) and data.get("kind") == "pretrained":
            return {"weights": "imagenet", "trainable": False, "pooling": "avg", **data}
        return data

    @model_validator(mode="after")
    def _check_kind(self):
        if self.factory is not None:
            if self.kind is not None:
                raise _KeyError("kind", self.kind, "omitted when `factory` is given")
            if not IMPORT_PATH.match(self.factory):
                raise _KeyError("factory", self.factory, "an import path like 'package.module:function'")
        if self.kind == "pretrained":
            self._check_backbone()
        else:
            for key in ("backbone", "weights", "trainable", "pooling"):
                if getattr(self, key) is not None:
                    raise _KeyError(key, getattr(self, key), "omitted unless kind is 'pretrained'")
        return self

    def _check_backbone(self):
        from kfold_clr.config.backbones import CONSTRUCTOR_KEYS, backbone_names, find_backbone

        if find_backbone(self.backbone) is None:
            raise _KeyError("backbone", self.backbone, "a keras.applications model, one of "
                            + ", ".join(backbone_names()))
        if self.weights is not None and self.weights != "imagenet" and not self.weights.endswith(".h5"):
            raise _KeyError("weights", self.weights, "imagenet, null (random weights) or the path of a "
                            ".weights.h5 / .h5 file")
        taken = sorted(set(self.params) & set(CONSTRUCTOR_KEYS))
        if taken:
            raise _KeyError("params", self.params, f"free of {', '.join(taken)} (set by kfold_clr; "
                            "params are the backbone constructor's other arguments, e.g. alpha)")


# ----------------------------------------------------------------------------- cross-validation
class CVConfig(_Section):
    """The splits: a scikit-learn splitter by name, or `given` splits read from an .npz file
    (`path`, arrays train_0, val_0, train_1, ...; what `kfold_clr.cross_validate` writes for any
    splitter object). n_splits, n_repeats and shuffle are not used with `given`."""

    splitter: Literal["auto", "kfold", "stratified", "group", "stratified_group", "given"] = "auto"
    n_splits: Annotated[int, Field(ge=2, le=MAX_SPLITS)] = 5
    n_repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 1
    shuffle: bool = True
    path: Optional[str] = None

    @model_validator(mode="after")
    def _check_path(self):
        if self.splitter == "given" and not self.path:
            raise _KeyError("path", self.path, "an .npz file of splits (required when splitter is 'given')")
        if self.splitter != "given" and self.path is not None:
            raise _KeyError("path", self.path, "only used with splitter 'given'")
        return self


class RangeTestConfig(_Section):
    """Settings of the LR range test used by `bounds: *_range_test` and `range-test`."""

    min_lr: Annotated[float, Field(gt=0.0, le=MAX_LR)] = 1e-5
    max_lr: Annotated[float, Field(gt=0.0, le=MAX_LR)] = 1.0
    epochs: Optional[Annotated[float, Field(gt=0.0, le=MAX_EPOCHS)]] = None
    iterations: Optional[Annotated[int, Field(ge=2, le=MAX_ITERATIONS)]] = None
    mode: Literal["exponential", "linear"] = "exponential"
    monitor: str = "loss"
    method: Literal["regime", "steepest", "valley", "min_div"] = "regime"
    smoothing: Literal["ema", "window"] = "ema"
    beta: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = None  # None: fit to the sweep length
    window: Optional[Annotated[int, Field(ge=2, le=MAX_ITERATIONS)]] = None
    divergence_threshold: Annotated[float, Field(gt=1.0)] = 4.0
    holdout: Optional[Annotated[float, Field(gt=0.0, lt=0.5)]] = None
    reserve: Optional[Annotated[float, Field(gt=0.0, lt=0.5)]] = None  # rows set aside for the shared test
    eval_every: Optional[Annotated[int, Field(ge=1, le=MAX_ITERATIONS)]] = None

    @model_validator(mode="after")
    def _check_bounds(self):
        if self.min_lr >= self.max_lr:
            raise _KeyError("max_lr", self.max_lr, f"greater than min_lr ({self.min_lr})")
        if self.epochs is not None and self.iterations is not None:
            raise _KeyError("iterations", self.iterations, "omitted when `epochs` is given (one or the other)")
        return self


# ----------------------------------------------------------------------------- execution, output
class ExecutionConfig(_Section):
    """Where folds run: this process, worker processes, or a Ray cluster."""

    executor: Literal["local", "processes", "ray"] = "local"
    fused_folds: Union[Literal["auto"], bool] = "auto"  # auto: fused where the model allows it
    fused_group_size: Optional[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = None  # most folds in one fused model
    workers: Optional[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = None
    threads_per_worker: Optional[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = None
    address: Optional[str] = None
    num_cpus: Annotated[float, Field(gt=0.0, le=MAX_COUNT)] = 1.0
    num_gpus: Annotated[float, Field(ge=0.0, le=MAX_COUNT)] = 0.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1  # runs of a job again after its worker died
    # seconds of training between two checkpoints of a job (saved at an epoch's end); 0: none
    checkpoint_every: Annotated[float, Field(ge=0.0, le=10_000_000.0)] = 60.0

    @model_validator(mode="after")
    def _check(self):
        if self.address is not None and self.executor != "ray":
            raise _KeyError("address", self.address, "only used with executor 'ray'")
        return self


class MlflowConfig(_Section):
    """Where MLflow logs a run: `tracking_uri` (default: MLflow's own) and the experiment's name."""

    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None


class OutputConfig(_Section):
    """Where results go: the results directory, and optionally TensorBoard logs and MLflow runs."""

    dir: Optional[str] = None
    tensorboard: bool = False
    mlflow: Optional[MlflowConfig] = None


ROPE_DESCRIPTION = (
    "Region of practical equivalence (half-width, in the metric's units): a number sets the primary metric's, "
    "a mapping sets one per metric ({accuracy: 0.005, loss: 0.02}). A metric it does not set gets 0.01 when it "
    "is a fraction (accuracy, auc, precision, recall, f1, iou) and no rope otherwise (loss, mae, mse, ...: no "
    "'practically equivalent' verdict unless the scores are identical).")
ROPE_RULE = "a finite number >= 0 (the half-width of no practical difference, in the metric's units)"


def is_rope(value: object) -> bool:
    """Whether `value` is a rope: a finite number >= 0 (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


class CompareConfig(_Section):
    """Which strategies are compared: every pair, each against a `reference`, or the `pairs` listed."""

    reference: Optional[str] = None
    pairs: Optional[list[Annotated[list[str], Field(min_length=2, max_length=2)]]] = None
    rope: Optional[Union[Annotated[float, Field(ge=0.0)], dict[str, Annotated[float, Field(ge=0.0)]]]] = Field(
        default=None, description=ROPE_DESCRIPTION)
    metrics: Optional[list[str]] = None

    @model_validator(mode="before")
    @classmethod
    def _check_rope(cls, data):
        """`rope`: a finite number >= 0, or a mapping of metric names to such numbers."""
        rope = data.get("rope") if isinstance(data, dict) else None
        if rope is None:
            return data
        if isinstance(rope, dict):
            for metric, value in rope.items():
                if not isinstance(metric, str) or not is_rope(value):
                    raise _KeyError(f"rope.{_key_text(metric)}", value, ROPE_RULE)
        elif not is_rope(rope):
            raise _KeyError("rope", rope, f"{ROPE_RULE}, or a mapping of metric names to such numbers")
        return data

    def check_rope_metrics(self, allowed: list[str]) -> None:
        """A rope mapping names only metrics of the run (`allowed`)."""
        if isinstance(self.rope, dict):
            for metric, value in self.rope.items():
                if metric not in allowed:
                    raise _KeyError(f"compare.rope.{_key_text(metric)}", value,
                                    "keyed by a metric of the run: " + ", ".join(allowed), absolute=True)

    @model_validator(mode="after")
    def _check(self):
        if self.pairs is not None and self.reference is not None:
            raise _KeyError("pairs", self.pairs, "omitted when `reference` is given (one or the other)")
        if self.pairs is not None and not self.pairs:
            raise _KeyError("pairs", self.pairs, "a list of [A, B] strategy pairs, or omitted")
        return self


class ExperimentConfig(_Section):
    """A whole experiment: data, model, training, cross-validation and strategies."""

    name: str
    seed: Annotated[int, Field(ge=0)] = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    range_test: RangeTestConfig = Field(default_factory=RangeTestConfig)
    strategies: Annotated[dict[str, Strategy], Field(min_length=1)]
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _check_cross_references(self):
        if not is_safe_name(self.name):
            raise _KeyError("name", self.name, SAFE_NAME_RULE, absolute=True)
        for name in self.strategies:
            if not is_safe_name(name):
                raise _KeyError(f"strategies.{_key_text(name)}", name, SAFE_NAME_RULE, absolute=True)
        momentum_free = momentum_key(self.training.optimizer) is None
        for name, strategy in self.strategies.items():
            if strategy.momentum_cycle is not None and momentum_free:
                raise _KeyError(f"strategies.{name}.cycle_momentum", strategy.momentum_cycle.model_dump(),
                                "used with sgd (momentum > 0) or adam; training.optimizer is "
                                f"{self.training.optimizer.name!r} with no momentum to cycle", absolute=True)
        self.compare.check_rope_metrics(list(dict.fromkeys(
            ["loss", *(self.training.metrics or ["accuracy", "mae"]), *(self.compare.metrics or [])])))
        if self.compare.reference is not None and self.compare.reference not in self.strategies:
            raise _KeyError("compare.reference", self.compare.reference,
                            "one of the strategies: " + ", ".join(self.strategies), absolute=True)
        for index, pair in enumerate(self.compare.pairs or ()):
            for name in pair:
                if name not in self.strategies:
                    raise _KeyError(f"compare.pairs.{index}", pair, "two of the strategies: "
                                    + ", ".join(self.strategies), absolute=True)
            if pair[0] == pair[1]:
                raise _KeyError(f"compare.pairs.{index}", pair, "two different strategies", absolute=True)
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_output_dir(cls, data):
        """`output.dir`: results/NAME when omitted, `~` and environment variables expanded."""
        if not isinstance(data, dict) or not isinstance(data.get("output", {}), dict):
            return data  # the section checks say what is wrong
        output = dict(data.get("output") or {})
        folder = output.get("dir")
        if folder is None:
            if not isinstance(data.get("name"), str):
                return data
            output["dir"] = f"results/{data['name']}"
        elif isinstance(folder, str):
            if not folder.strip():
                raise _KeyError("output.dir", folder, "a folder path, or omitted for results/NAME", absolute=True)
            output["dir"] = expand_path(folder, key="output.dir")
        return {**data, "output": output}

    _base_dir: Optional[pathlib.Path] = PrivateAttr(default=None)

    @property
    def output_dir(self) -> pathlib.Path:
        return pathlib.Path(self.output.dir)

    @property
    def base_dir(self) -> pathlib.Path:
        """Where relative paths of the config (`data.path`) are looked up: the YAML's folder."""
        return self._base_dir if self._base_dir is not None else pathlib.Path.cwd()

    def located(self, base_dir: Union[str, pathlib.Path]) -> "ExperimentConfig":
        """This config with relative paths looked up in `base_dir`."""
        config = self.model_copy()
        config._base_dir = pathlib.Path(base_dir)
        return config

    def with_training(self, **changes: Any) -> "ExperimentConfig":
        """This config with `training` settings replaced (the task's loss and metrics filled in)."""
        return self.model_copy(update={"training": self.training.model_copy(update=changes)})

    def with_output_dir(self, directory: Union[str, pathlib.Path]) -> "ExperimentConfig":
        """This config writing to `directory` (a worker gets the driver's absolute folder)."""
        return self.model_copy(update={"output": self.output.model_copy(update={"dir": str(directory)})})

    def to_dict(self) -> dict:
        """The resolved config as plain YAML-able data, defaults filled in."""
        return self.model_dump(mode="json")
