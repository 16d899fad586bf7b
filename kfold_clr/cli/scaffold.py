"""What `kfold-clr schema` and `kfold-clr init` write: the JSON Schema and a starter YAML.

Both are data returned to the command line, which writes them. The schema is
generated from the pydantic models of `kfold_clr.config`, so it cannot drift
from what `load_config` accepts; the starter is validated by those same models
before it is returned, so a written starter always loads.
"""

from __future__ import annotations

import json
import os
import pathlib
import typing
import warnings

from kfold_clr.config import (
    SAFE_NAME_RULE,
    STRATEGY_CLASSES,
    DataConfig,
    ExperimentConfig,
    is_safe_name,
    parse_yaml,
    validate_config,
)
from kfold_clr.errors import ConfigError

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "kfold-clr.schema.json"
PLACEHOLDER_TARGET = "label"
_SOURCE_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the experiment YAML, from `ExperimentConfig`.

    `name` is not required: `load_config` takes it from the file name when it is
    omitted. The cross-field rules (e.g. `base_lr < max_lr`) are not expressible in
    the schema; `kfold-clr validate` checks them.
    """
    schema = ExperimentConfig.model_json_schema()
    schema["required"] = [key for key in schema["required"] if key != "name"]
    definitions = schema.pop("$defs")
    schema.pop("title")
    for strategy in STRATEGY_CLASSES.values():
        _allow_grids(definitions[strategy.__name__], strategy.tunable_keys())
    return {"$schema": SCHEMA_DIALECT, "title": "kfold-clr experiment", **schema, "$defs": definitions}


def _allow_grids(definition: dict, keys: Iterable[str]) -> None:
    """A strategy's numeric `keys` may also be lists of values to tune (a grid, with `tune:`)."""
    for key in keys:
        prop = definition["properties"][key]
        extra = {k: prop.pop(k) for k in ("title", "default", "description") if k in prop}
        numeric = next((option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"), prop)
        definition["properties"][key] = {"anyOf": [prop, {"type": "array", "items": numeric, "minItems": 1}], **extra}


def starter_yaml(name: str, *, data: str | None = None, target: str | None = None) -> str:
    """A commented experiment YAML that validates as it is: the practitioners' questions.

    Args:
        name: str. The experiment's name, a safe file name; results go to `results/NAME`.
        data: str or None. A data file (`.csv`, `.npz`, or `.parquet` where supported), as
            the YAML should name it (relative paths are looked up in the YAML's folder).
            Default: scikit-learn's digits, so the starter runs without any file.
        target: str or None. The target column of a table; when it is missing, the
            placeholder `label` is written and a warning says so.

    Returns:
        str. The YAML text; its first line is the editor's schema comment.
    """
    if not is_safe_name(name):
        raise ConfigError(f"NAME: {name!r} must be {SAFE_NAME_RULE}")
    if data is None:
        if target is not None:
            raise ConfigError(f"--target: {target!r} is only used with --data (a table of your own)")
        data_section, task_lines = _digits_section(), _DIGITS_TASK
    else:
        data_section, task_lines = _data_section(data, target), _ANY_TASK
    text = _TEMPLATE.format(name=_scalar(name), output=_scalar(f"results/{name}"), data=data_section,
                            schema_file=SCHEMA_FILE, **task_lines)
    validate_config(parse_yaml(text, source="the starter"))
    return text


def data_path_for(config_path: pathlib.Path | str, data: str) -> str:
    """`data` (a path from the working directory) as the YAML at `config_path` must name it."""
    if os.path.isabs(data):
        return data
    return os.path.relpath(os.path.abspath(data), pathlib.Path(config_path).resolve().parent)


def _sources() -> tuple:
    """The `data.source` values the schema accepts."""
    return typing.get_args(DataConfig.model_fields["source"].annotation)


def _digits_section() -> str:
    others = ", ".join(source for source in _sources() if source != "sklearn")
    return "\n".join([_commented("  source: sklearn", f"also: {others}"),
                      _commented("  name: digits", "scikit-learn's 1,797 8x8 images of digits, 10 classes"),
                      _SCALE]) + "\n"


def _data_section(path: str, target: str | None) -> str:
    allowed = _sources()
    suffix = pathlib.PurePath(path).suffix.lower()
    source = _SOURCE_BY_SUFFIX.get(suffix)
    if source not in allowed:
        readable = [ending for ending, kind in _SOURCE_BY_SUFFIX.items() if kind in allowed]
        raise ConfigError(f"--data: {path!r} must be a file ending in {', '.join(readable)}")
    lines = [f"  source: {source}", _commented(f"  path: {_scalar(path)}", "relative to this file's folder")]
    if source == "npz":
        if target is not None:
            raise ConfigError(f"--target: {target!r} is not used with an .npz file (its target is the array y)")
    elif target is None:
        warnings.warn(f"data.target: no --target given; wrote the placeholder {PLACEHOLDER_TARGET!r}: "
                      "replace it with the name of your target column", UserWarning, stacklevel=2)
        lines.append(_commented(f"  target: {PLACEHOLDER_TARGET}", "the target column: replace with yours"))
    else:
        lines.append(_commented(f"  target: {_scalar(target)}", "the target column"))
    if source != "npz":
        lines.append(_commented("  # groups: patient", "a column whose rows stay in one fold (splitter auto uses it)"))
    lines.append(_SCALE)
    return "\n".join(lines) + "\n"


def _commented(text: str, comment: str) -> str:
    """A YAML line with its comment in the starter's comment column."""
    return f"{text:<27} # {comment}"


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain when it reads back as the same string, quoted otherwise."""
    try:
        if parse_yaml(f"value: {text}\n").get("value") == text:
            return text
    except ConfigError:
        pass
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


_SCALE = _commented("  scale: standard", "fitted on each fold's training split only")

_DIGITS_TASK = {
    "metrics": "  metrics: [accuracy]\n",
    "splitter": "  splitter: stratified      # the classes in the same proportions in every fold",
}
_ANY_TASK = {  # the task (classes or a number) is known only once the data is read
    "metrics": "  # metrics: [accuracy]     # default: accuracy for classes, mae for a numeric target\n",
    "splitter": "  splitter: auto            # stratified for a class target, kfold for a numeric one",
}

_TEMPLATE = """\
# yaml-language-server: $schema={schema_file}
# Editor autocomplete and checking: keep the line above and run, next to this file,
#   kfold-clr schema --output {schema_file}
#
# A starter written by `kfold-clr init`. The strategies and `compare.pairs` answer:
# - does a cyclical LR (CLR) beat a hand-tuned step schedule?
# - reset the cycle in every fold, or continue it from the previous fold?
# - can one LR range test serve every fold, or does each fold need its own?
# Check it with `kfold-clr validate FILE`, run it with `kfold-clr run FILE`.
name: {name}
seed: 0                     # same seed: same splits, initial weights and data order

data:
{data}
model:
  kind: mlp                 # also: cnn, or factory: "package.module:function"
  hidden: [64]              # units of each hidden layer
  dropout: 0.0

training:
  epochs: 18                # 3 full cycles of the CLR strategies below (2 x 3 epochs each)
  batch_size: 64
  optimizer: {{name: sgd, momentum: 0.9}}
{metrics}
cv:                         # 5 folds x 3 repeats = 15 paired splits, the same for every strategy
{splitter}
  n_splits: 5
  n_repeats: 3
  shuffle: true

range_test:                 # the LR range test behind `bounds: *_range_test` (and `kfold-clr range-test`)
  min_lr: 1.0e-4
  max_lr: 10.0
  reserve: 0.2              # 20% of the rows set aside for the shared range test, out of every fold

strategies:
  step_decay:               # hand-tuned baseline: halve the LR every 6 epochs
    {{schedule: step, lr: 0.05, factor: 0.5, every_epochs: 6}}
  clr_reset:                # CLR restarted at iteration 0 in every fold
    {{schedule: clr, policy: triangular2, base_lr: 0.005, max_lr: 0.1, step_size_epochs: 3, across_folds: reset}}
  clr_continue:             # CLR continued from where the previous fold's schedule ended
    {{schedule: clr, policy: triangular2, base_lr: 0.005, max_lr: 0.1, step_size_epochs: 3, across_folds: continue}}
  clr_shared:               # bounds from one range test on the reserved rows
    {{schedule: clr, policy: triangular2, bounds: shared_range_test, step_size_epochs: 3}}
  clr_per_fold:             # bounds from a range test inside each fold's training split
    {{schedule: clr, policy: triangular2, bounds: per_fold_range_test, step_size_epochs: 3}}

compare:
  pairs:                    # A vs B, one pair per question
    - [clr_reset, step_decay]       # does CLR beat the hand-tuned schedule?
    - [clr_continue, clr_reset]     # continue the cycle across folds, or reset it?
    - [clr_shared, clr_per_fold]    # one range test for all folds, or one per fold?
    - [clr_per_fold, clr_reset]     # range-test bounds, or bounds picked by hand?

output:                     # a new folder, or one kfold-clr wrote before
  dir: {output}
"""
