"""Experiment configuration: YAML in, validated typed objects out.

The YAML is read with a safe loader only. Every section is a strict pydantic
model: unknown keys and wrong types are errors, and every error becomes one
line naming the key path, the value received and what is allowed, e.g.::

    strategies.clr_reset.policy: 'triangle' is not one of triangular, triangular2, exp_range

Code is imported from a config only through an explicit import path
(``model.factory`` or a CLR strategy's ``scale_fn``), never through YAML tags.
"""

import copy
import importlib
import os
import pathlib
import re
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kfold_clr.errors import ConfigError

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
SAFE_NAME_RULE = ("a safe file name: up to 100 letters, digits, '_', '-' or '.', not starting or ending "
                  "with '.', without '..', and not a reserved device name (CON, NUL, COM1, ...)")
MAX_DEPTH = 32  # nesting levels of a config; real ones use 5
MAX_VALUES = 100_000  # values of a config once YAML aliases are expanded; real ones hold a few hundred
SYNTHETIC_DATASETS = ("classification", "regression")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_safe_name(name) -> bool:
    """Whether `name` can be a file or folder name on every system (see SAFE_NAME_RULE)."""
    return (isinstance(name, str) and bool(SAFE_NAME.match(name)) and ".." not in name
            and not name.endswith(".") and name.split(".")[0].lower() not in RESERVED_NAMES)


def expand_path(text: str, *, key: str) -> str:
    """`~` and environment variables expanded, as a shell would; an unset variable is an error."""
    expanded = os.path.expanduser(os.path.expandvars(text))
    unset = re.search(r"\$(\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)", expanded)
    if unset:
        raise _KeyError(key, text, f"a path whose environment variables are set ({unset.group(0)} is not)",
                        absolute=True)
    return expanded


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- data
class DataConfig(_Section):
    """Where the samples come from and how they are preprocessed (per fold)."""

    source: Literal["sklearn", "synthetic", "csv", "npz"]
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

    @model_validator(mode="after")
    def _check_source_fields(self):
        if self.source == "sklearn" and self.name not in SKLEARN_DATASETS:
            raise _KeyError("name", self.name, "one of " + ", ".join(SKLEARN_DATASETS))
        if self.source == "synthetic" and self.name not in SYNTHETIC_DATASETS:
            raise _KeyError("name", self.name, "one of " + ", ".join(SYNTHETIC_DATASETS))
        if self.source in ("csv", "npz") and not self.path:
            raise _KeyError("path", self.path, f"a file path (required when source is {self.source!r})")
        if self.source == "csv" and not self.target:
            raise _KeyError("target", self.target, "the name of the target column (required for csv)")
        if self.source in ("sklearn", "synthetic") and self.path is not None:
            raise _KeyError("path", self.path, f"not used with source {self.source!r}; remove it")
        return self


# ----------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """A declarative MLP or CNN, or an import path to a factory function."""

    kind: Optional[Literal["mlp", "cnn"]] = None
    factory: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64])
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    batch_norm: bool = False
    filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [16, 32])
    kernel_size: Annotated[int, Field(ge=1)] = 3

    @model_validator(mode="after")
    def _check_kind(self):
        if self.factory is not None:
            if self.kind is not None:
                raise _KeyError("kind", self.kind, "omitted when `factory` is given")
            if not IMPORT_PATH.match(self.factory):
                raise _KeyError("factory", self.factory, "an import path like 'package.module:function'")
        elif self.kind is None:
            self.kind = "mlp"
        return self


# ----------------------------------------------------------------------------- training
class OptimizerConfig(_Section):
    name: Literal["sgd", "adam", "rmsprop"] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = False
    beta_1: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    beta_2: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    rho: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    weight_decay: Optional[Annotated[float, Field(ge=0.0)]] = None
    clipnorm: Optional[Annotated[float, Field(gt=0.0)]] = None


class EarlyStoppingConfig(_Section):
    """Early stopping on the validation fold. Marks results as optimistic."""

    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=1)] = 5
    restore_best_weights: bool = True


class TrainingConfig(_Section):
    epochs: Annotated[int, Field(ge=1)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 32
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: Optional[str] = None
    metrics: Optional[list[str]] = None
    early_stopping: Optional[EarlyStoppingConfig] = None


# ----------------------------------------------------------------------------- cross-validation
class CVConfig(_Section):
    splitter: Literal["auto", "kfold", "stratified", "group", "stratified_group"] = "auto"
    n_splits: Annotated[int, Field(ge=2)] = 5
    n_repeats: Annotated[int, Field(ge=1)] = 1
    shuffle: bool = True


class RangeTestConfig(_Section):
    """Settings of the LR range test used by `bounds: *_range_test` and `range-test`."""

    min_lr: Annotated[float, Field(gt=0.0)] = 1e-5
    max_lr: Annotated[float, Field(gt=0.0)] = 1.0
    epochs: Optional[Annotated[float, Field(gt=0.0)]] = None
    iterations: Optional[Annotated[int, Field(ge=2)]] = None
    mode: Literal["exponential", "linear"] = "exponential"
    monitor: str = "loss"
    method: Literal["regime", "steepest", "valley", "min_div"] = "regime"
    smoothing: Literal["ema", "window"] = "ema"
    beta: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = None  # None: fit to the sweep length
    window: Optional[Annotated[int, Field(ge=2)]] = None
    divergence_threshold: Annotated[float, Field(gt=1.0)] = 4.0
    holdout: Optional[Annotated[float, Field(gt=0.0, lt=0.5)]] = None
    reserve: Optional[Annotated[float, Field(gt=0.0, lt=0.5)]] = None  # rows set aside for the shared test
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None

    @model_validator(mode="after")
    def _check_bounds(self):
        if self.min_lr >= self.max_lr:
            raise _KeyError("max_lr", self.max_lr, f"greater than min_lr ({self.min_lr})")
        if self.epochs is not None and self.iterations is not None:
            raise _KeyError("iterations", self.iterations, "omitted when `epochs` is given (one or the other)")
        return self


# ----------------------------------------------------------------------------- strategies
class SnapshotConfig(_Section):
    keep: Annotated[int, Field(ge=1)] = 3
    save_weights: bool = False


class MomentumCycleConfig(_Section):
    base_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.85
    max_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.95

    @model_validator(mode="after")
    def _check_order(self):
        if self.base_momentum >= self.max_momentum:
            raise _KeyError("max_momentum", self.max_momentum,
                            f"greater than base_momentum ({self.base_momentum})")
        return self


PositiveFloat = Annotated[float, Field(gt=0.0)]


class ConstantStrategy(_Section):
    schedule: Literal["constant"]
    lr: PositiveFloat


class StepStrategy(_Section):
    """Manual annealing: the LR is multiplied by `factor` every `every_epochs` epochs."""

    schedule: Literal["step"]
    lr: PositiveFloat
    factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    every_epochs: Annotated[int, Field(ge=1)] = 10


class ExponentialStrategy(_Section):
    """The LR is multiplied by `decay_rate` per epoch, smoothly."""

    schedule: Literal["exponential"]
    lr: PositiveFloat
    decay_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9


class CosineStrategy(_Section):
    schedule: Literal["cosine"]
    lr: PositiveFloat
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class CosineRestartsStrategy(_Section):
    """Cyclic cosine annealing with warm restarts (the schedule of snapshot ensembles)."""

    schedule: Literal["cosine_restarts"]
    lr: PositiveFloat
    cycle_epochs: Annotated[int, Field(ge=1)] = 5
    t_mul: Annotated[float, Field(ge=1.0)] = 1.0
    m_mul: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    snapshots: Optional[SnapshotConfig] = None


class ClrStrategy(_Section):
    """Cyclical learning rate (Smith 2017)."""

    schedule: Literal["clr"]
    policy: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    bounds: Literal["fixed", "shared_range_test", "per_fold_range_test"] = "fixed"
    base_lr: Optional[PositiveFloat] = None
    max_lr: Optional[PositiveFloat] = None
    step_size: Optional[Annotated[int, Field(ge=1)]] = None
    step_size_epochs: Optional[PositiveFloat] = None
    step_size_down: Optional[Annotated[int, Field(ge=1)]] = None
    step_size_down_epochs: Optional[PositiveFloat] = None
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    scale_fn: Optional[str] = None
    scale_mode: Literal["cycle", "iterations"] = "cycle"
    across_folds: Literal["reset", "continue"] = "reset"
    carry_weights: bool = False
    cycle_momentum: Optional[MomentumCycleConfig] = None
    snapshots: Optional[SnapshotConfig] = None

    @model_validator(mode="after")
    def _check(self):
        if self.bounds == "fixed":
            if self.base_lr is None:
                raise _KeyError("base_lr", None, "a positive number (required when bounds is 'fixed')")
            if self.max_lr is None:
                raise _KeyError("max_lr", None, "a positive number (required when bounds is 'fixed')")
            if self.base_lr >= self.max_lr:
                raise _KeyError("max_lr", self.max_lr, f"greater than base_lr ({self.base_lr})")
        else:
            for key in ("base_lr", "max_lr"):
                if getattr(self, key) is not None:
                    raise _KeyError(key, getattr(self, key),
                                    f"omitted when bounds is {self.bounds!r} (the range test sets it)")
        if (self.step_size is None) == (self.step_size_epochs is None):
            raise _KeyError("step_size_epochs", self.step_size_epochs,
                            "exactly one of step_size (iterations) or step_size_epochs")
        if self.step_size_down is not None and self.step_size_down_epochs is not None:
            raise _KeyError("step_size_down_epochs", self.step_size_down_epochs,
                            "omitted when step_size_down is given (one or the other)")
        if self.policy == "exp_range" and self.gamma >= 1.0:
            raise _KeyError("gamma", self.gamma, "a number in (0, 1) for policy 'exp_range'")
        if self.scale_fn is not None and not IMPORT_PATH.match(self.scale_fn):
            raise _KeyError("scale_fn", self.scale_fn, "an import path like 'package.module:function'")
        if self.carry_weights and self.across_folds != "continue":
            raise _KeyError("carry_weights", True, "only with across_folds: continue")
        return self


class OneCycleStrategy(_Section):
    """One cycle (Smith 2018): warm up to max_lr, then anneal far below the start."""

    schedule: Literal["one_cycle"]
    max_lr: Optional[PositiveFloat] = None
    bounds: Literal["fixed", "shared_range_test", "per_fold_range_test"] = "fixed"
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    div_factor: Annotated[float, Field(gt=1.0)] = 25.0
    final_div_factor: Annotated[float, Field(gt=1.0)] = 1e4
    anneal: Literal["cos", "linear"] = "cos"
    cycle_momentum: Optional[MomentumCycleConfig] = None

    @model_validator(mode="after")
    def _check(self):
        if self.bounds == "fixed" and self.max_lr is None:
            raise _KeyError("max_lr", None, "a positive number (required when bounds is 'fixed')")
        if self.bounds != "fixed" and self.max_lr is not None:
            raise _KeyError("max_lr", self.max_lr, f"omitted when bounds is {self.bounds!r}")
        return self


STRATEGY_CLASSES = {
    "constant": ConstantStrategy, "step": StepStrategy, "exponential": ExponentialStrategy,
    "cosine": CosineStrategy, "cosine_restarts": CosineRestartsStrategy, "clr": ClrStrategy,
    "one_cycle": OneCycleStrategy,
}
SCHEDULES = tuple(STRATEGY_CLASSES)
Strategy = Annotated[Union[tuple(STRATEGY_CLASSES.values())], Field(discriminator="schedule")]


# ----------------------------------------------------------------------------- execution, output
class ExecutionConfig(_Section):
    """Where folds run: this process, worker processes, or a Ray cluster."""

    executor: Literal["local", "processes", "ray"] = "local"
    fused_folds: Union[Literal["auto"], bool] = False
    workers: Optional[Annotated[int, Field(ge=1)]] = None
    threads_per_worker: Optional[Annotated[int, Field(ge=1)]] = None
    address: Optional[str] = None
    num_cpus: Annotated[float, Field(gt=0.0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0.0)] = 0.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1  # runs of a job again after its worker died

    @model_validator(mode="after")
    def _check(self):
        if self.address is not None and self.executor != "ray":
            raise _KeyError("address", self.address, "only used with executor 'ray'")
        return self


class OutputConfig(_Section):
    dir: Optional[str] = None


class CompareConfig(_Section):
    """Which strategies are compared: every pair, each against a `reference`, or the `pairs` listed."""

    reference: Optional[str] = None
    pairs: Optional[list[Annotated[list[str], Field(min_length=2, max_length=2)]]] = None
    rope: Annotated[float, Field(ge=0.0)] = 0.01
    metrics: Optional[list[str]] = None

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
        momentum_free = self.training.optimizer.name == "rmsprop" or (
            self.training.optimizer.name == "sgd" and self.training.optimizer.momentum == 0)
        for name, strategy in self.strategies.items():
            if getattr(strategy, "cycle_momentum", None) is not None and momentum_free:
                raise _KeyError(f"strategies.{name}.cycle_momentum", strategy.cycle_momentum.model_dump(),
                                "used with sgd (momentum > 0) or adam; training.optimizer is "
                                f"{self.training.optimizer.name!r} with no momentum to cycle", absolute=True)
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
        if self.output.dir is None:
            self.output.dir = f"results/{self.name}"
        elif not self.output.dir.strip():
            raise _KeyError("output.dir", self.output.dir, "a folder path, or omitted for results/NAME",
                            absolute=True)
        else:
            self.output.dir = expand_path(self.output.dir, key="output.dir")
        return self

    @property
    def output_dir(self) -> pathlib.Path:
        return pathlib.Path(self.output.dir)

    def to_dict(self) -> dict:
        """The resolved config as plain YAML-able data, defaults filled in."""
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- errors
class _KeyError(ValueError):
    """A cross-field rule failed: carries the key, value and what is allowed."""

    def __init__(self, key, value, allowed, *, absolute=False):
        super().__init__(f"{key}: {value!r} must be {allowed}")
        self.key, self.value, self.allowed, self.absolute = key, value, allowed, absolute


def _describe_allowed(error) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'|(\b\w+\b)", ctx.get("expected", ""))
        names = [a or b for a, b in options if (a or b) not in ("or",)]
        return "is not one of " + ", ".join(names)
    if kind == "union_tag_invalid":
        return "is not a known schedule; use one of " + ", ".join(SCHEDULES)
    if kind == "union_tag_not_found":
        return "has no `schedule` key; add one of " + ", ".join(SCHEDULES)
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} entry"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping (key: value entries)"
    message = error["msg"]
    if message.startswith("Input should be "):
        message = "must be " + message[len("Input should be "):]
    return message


def _allowed_keys(model_cls, loc) -> list[str]:
    """Field names of the section that `loc` (up to its last element) points into."""
    current = model_cls
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            current = _section_class(fields[part].annotation)
        elif part in SCHEDULES:
            current = STRATEGY_CLASSES[part]
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _section_class(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_class(arg)
        if found is not None:
            return found
    return None


def _key_text(part) -> str:
    """A key as it reads in a path: plain when it is a simple name, quoted otherwise."""
    text = str(part)
    return text if re.fullmatch(r"[\w-]+", text) else repr(text)


def _format_error(error) -> str:
    loc = [_key_text(part) for part in error["loc"]]
    # Drop the discriminator tag pydantic inserts after a strategy's name.
    if len(loc) >= 3 and loc[0] == "strategies" and loc[2] in SCHEDULES:
        loc = loc[:2] + loc[3:]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyError):
        key = cause.key if cause.absolute else ".".join([*loc, cause.key]) if loc else cause.key
        return f"{key}: {cause.value!r} must be {cause.allowed}"
    path = ".".join(loc) or "<top level>"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(ExperimentConfig, error["loc"])
        hint = f"; allowed keys are {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    value = error.get("input")
    if error["type"] == "union_tag_invalid":
        value = value.get("schedule") if isinstance(value, dict) else value
    return f"{path}: {value!r} {_describe_allowed(error)}"


# ----------------------------------------------------------------------------- loading
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` (no dot) as a float, as YAML 1.2 does."""


def _construct_mapping_without_duplicates(loader, node, deep=False):
    """A mapping whose explicit keys are unique; `<<: *base` merge keys work (explicit keys win)."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (the second would silently replace the first)", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path) -> dict:
    """Read an experiment YAML file with a safe loader; one-line errors."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error.__class__.__name__}: {error})") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, *, source="<string>") -> dict:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; "
                          "an experiment needs about 5") from None
    check_size(data, source=source)
    if data is None:
        raise ConfigError(f"{source}: the file is empty; an experiment needs at least "
                          "`name`, `data` and `strategies`")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, "
                          f"got {type(data).__name__}")
    return data


def check_size(data, *, source="<config>"):
    """Refuse a config nested more than MAX_DEPTH levels or holding more than MAX_VALUES values
    once YAML aliases are expanded (a "billion laughs" file), before anything copies it."""
    sizes = {}  # id -> expanded size of a container seen before (aliases share one object)

    def size(node, depth):
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; an experiment needs about 5")
        if id(node) not in sizes:
            sizes[id(node)] = None  # a cycle (a YAML alias inside its own anchor) counts as too deep
            children = node.values() if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(child, depth + 1) for child in children)
        elif sizes[id(node)] is None:
            raise ConfigError(f"{source}: a YAML alias refers to the mapping or list that contains it")
        total = sizes[id(node)]
        if total > MAX_VALUES:
            raise ConfigError(f"{source}: expands to more than {MAX_VALUES:,} values through YAML aliases "
                              "(a 'billion laughs' file?); an experiment holds a few hundred")
        return total

    size(data, 0)


def apply_overrides(data: dict, overrides) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML scalars)."""
    data = copy.deepcopy(data)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set: {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = [part for part in key.strip().split(".") if part]
        if not parts:
            raise ConfigError(f"--set: {item!r} has an empty key path")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else None  # noqa: S506
        except yaml.YAMLError:
            value = raw
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set: {'.'.join(parts[:depth + 1])} is "
                                  f"{child!r}, not a section; cannot set {key}")
            node = child
        node[parts[-1]] = value
    return data


def validate_config(data: dict) -> ExperimentConfig:
    """Validate plain data into an ExperimentConfig, or raise a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"<top level>: {type(data).__name__} must be a mapping of sections")
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"<top level>: key {bad_keys[0]!r} must be a string")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        message = _format_error(errors[0])
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
            if len(errors) > 1 else ""
        one_line = (message + more).replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(one_line) from None
    except RecursionError:
        raise ConfigError("<top level>: the config is nested too deeply") from None


def load_config(source, *, overrides=None, base_dir=None) -> ExperimentConfig:
    """Load and validate an experiment from a YAML path or a dict.

    Args:
        source: str, path or dict. A YAML file, or the same content as a dict.
        overrides: list of str. ``key.path=value`` items applied before validation.
        base_dir: path or None. Where relative `data.path` values are looked up;
            default: the YAML file's directory, or the working directory for a dict.

    Returns:
        ExperimentConfig with defaults filled in; `config_base_dir(config)` gives `base_dir`.
    """
    if isinstance(source, dict):
        check_size(source)
        data, default_dir = copy.deepcopy(source), pathlib.Path.cwd()
        data.setdefault("name", "experiment")
    else:
        path = pathlib.Path(source)
        data, default_dir = read_yaml(path), path.resolve().parent
        if "name" not in data and not is_safe_name(path.stem):
            raise ConfigError(f"name: {path.stem!r} (taken from the file name) must be {SAFE_NAME_RULE}; "
                              "set `name:` in the YAML")
        data.setdefault("name", path.stem)
    data = apply_overrides(data, overrides)
    config = validate_config(data)
    object.__setattr__(config, "_base_dir", pathlib.Path(base_dir) if base_dir is not None else default_dir)
    return config


def config_base_dir(config: ExperimentConfig) -> pathlib.Path:
    return getattr(config, "_base_dir", None) or pathlib.Path.cwd()


def import_object(path: str, *, key: str):
    """Import ``package.module:attribute``; ConfigError naming `key` if it fails."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is a config problem
        raise ConfigError(f"{key}: {path!r} cannot be imported ({error.__class__.__name__}: {error})") from None
    target = getattr(module, attribute, None)
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} must name a callable in module {module_name!r}")
    return target


def dump_yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
