"""Experiment configuration: YAML in, validated typed objects out.

The YAML is read with a safe loader only. Every section is a strict pydantic
model: unknown keys and wrong types are errors, and every error becomes one
line naming the key path, the value received and what is allowed, e.g.::

    strategies.clr_reset.policy: 'triangle' is not one of triangular, triangular2, exp_range

Code is imported from a config only through an explicit import path
(``model.factory`` or a CLR strategy's ``scale_fn``), never through YAML tags.

- `schema`: the section models, `ExperimentConfig` and their cross-field rules.
- `errors`: `validate_config`, which turns pydantic's errors into one line.
- `yaml_io`: the safe loader, `read_yaml`, `parse_yaml`, `check_size`, `dump_yaml`.
- `overrides`: `apply_overrides`, the ``--set key.path=value`` items.
- here: `load_config`, `import_object`, and the public names of the rest.
"""

import copy
import importlib
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from kfold_clr.config.base import (
    IMPORT_PATH,
    RESERVED_NAMES,
    SAFE_NAME,
    SAFE_NAME_RULE,
    SKLEARN_DATASETS,
    SYNTHETIC_DATASETS,
    expand_path,
    is_safe_name,
)
from kfold_clr.config.errors import validate_config
from kfold_clr.config.overrides import apply_overrides
from kfold_clr.config.schema import (
    CompareConfig,
    CVConfig,
    DataConfig,
    EarlyStoppingConfig,
    ExecutionConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    RangeTestConfig,
    TrainingConfig,
)
from kfold_clr.config.strategies import (
    SCHEDULES,
    STRATEGY_CLASSES,
    ClrStrategy,
    ConstantStrategy,
    CosineRestartsStrategy,
    CosineStrategy,
    ExponentialStrategy,
    MomentumCycleConfig,
    OneCycleStrategy,
    PositiveFloat,
    SnapshotConfig,
    StepStrategy,
    Strategy,
)
from kfold_clr.config.yaml_io import MAX_DEPTH, MAX_VALUES, check_size, dump_yaml, parse_yaml, read_yaml
from kfold_clr.errors import ConfigError

__all__ = [
    # loading
    "load_config", "import_object",
    # YAML
    "read_yaml", "parse_yaml", "check_size", "dump_yaml", "MAX_DEPTH", "MAX_VALUES",
    # overrides and validation
    "apply_overrides", "validate_config",
    # names, paths and import paths
    "SAFE_NAME", "RESERVED_NAMES", "SAFE_NAME_RULE", "is_safe_name", "expand_path", "IMPORT_PATH",
    "SKLEARN_DATASETS", "SYNTHETIC_DATASETS",
    # sections
    "ExperimentConfig", "DataConfig", "ModelConfig", "OptimizerConfig", "EarlyStoppingConfig",
    "TrainingConfig", "CVConfig", "RangeTestConfig", "ExecutionConfig", "OutputConfig", "CompareConfig",
    # strategies
    "Strategy", "STRATEGY_CLASSES", "SCHEDULES", "PositiveFloat", "SnapshotConfig", "MomentumCycleConfig",
    "ConstantStrategy", "StepStrategy", "ExponentialStrategy", "CosineStrategy", "CosineRestartsStrategy",
    "ClrStrategy", "OneCycleStrategy",
]


def load_config(source: Union[str, pathlib.Path, dict, ExperimentConfig], *,
                overrides: Optional[Sequence[str]] = None,
                base_dir: Union[str, pathlib.Path, None] = None) -> ExperimentConfig:
    """Load and validate an experiment from a YAML path or a dict, once: the result is frozen.

    Args:
        source: str, path, dict or ExperimentConfig. A YAML file, the same content as a
            dict, or a config loaded before (returned as it is when nothing changes).
        overrides: list of str. ``key.path=value`` items applied before validation.
        base_dir: path or None. Where relative `data.path` values are looked up;
            default: the YAML file's directory, or the working directory for a dict.

    Returns:
        ExperimentConfig with defaults filled in; `config.base_dir` is `base_dir`.
    """
    if isinstance(source, ExperimentConfig):
        if not overrides and base_dir is None:
            return source
        data, default_dir = source.to_dict(), source.base_dir
        if data["output"]["dir"] == f"results/{source.name}":  # derived from the name: derived again
            del data["output"]["dir"]
    elif isinstance(source, dict):
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
    return validate_config(data).located(base_dir if base_dir is not None else default_dir)


def import_object(path: str, *, key: str) -> Callable[..., Any]:
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
