"""Where results came from: the runs that wrote them, the library versions, the user's code.

``meta.json`` holds one record per run of the same results directory (command,
start, end, outcome, versions, git commit, host); a resumed run appends its own
instead of overwriting the first. Saved folds carry the versions they were
computed with: a resume under other versions is refused unless the user accepts
them (:func:`check_versions`). The source of the user's code that a config
imports (`model.factory`, `scale_fn`) enters the fingerprints
(:func:`code_parts`: its module, the local modules it imports, or a notebook function
and the globals it reads), so editing any of it invalidates saved folds like changed
data, and :func:`describe_change` says which part changed (a pretrained backbone's weights file
by its path). A run computes its fingerprints once (:func:`run_fingerprints`) and hands them on.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import pathlib
import platform
import subprocess
from typing import TYPE_CHECKING, Any, Iterable, Optional

from kfold_clr import __version__
from kfold_clr.errors import ResultsError

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset

#: The libraries whose version can change a fold's numbers.
TRACKED = ("kfold_clr", "keras", "tensorflow", "scikit_learn")


def fingerprint(payload: Any) -> str:
    """A short stable hash of JSON-able data."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """Versions of the libraries that compute a fold (`TRACKED`), plus numpy, pandas, python."""
    import keras
    import numpy
    import pandas
    import sklearn
    import tensorflow

    return {"kfold_clr": __version__, "keras": keras.__version__, "tensorflow": tensorflow.__version__,
            "scikit_learn": sklearn.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__,
            "python": platform.python_version()}


def git_commit() -> Optional[str]:
    """The commit of the working directory's repository, or None."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(*, seed: int, command: str) -> dict:
    """The `meta.json` record of a run that starts now."""
    return {**versions(), "host": platform.node(), "platform": platform.platform(),
            "git_commit": git_commit(), "seed": seed, "command": command,
            "started": now(), "finished": None, "outcome": "running"}


def run_history(saved: Any) -> list[dict]:
    """The run records of a saved `meta.json` (one run for the format before run histories)."""
    if not isinstance(saved, dict):
        return []
    runs = saved.get("runs")
    if isinstance(runs, list):
        return [run for run in runs if isinstance(run, dict)]
    return [saved] if saved else []


def code_parts(import_path: str) -> dict:
    """{label: hash} of the user's code behind `import_path` ("pkg.module:name"): its module's file and
    every local module it imports (`kfold_clr.storage.codeprint`), or a notebook model's function and globals."""
    from kfold_clr.storage import codeprint

    if import_path == codeprint.NOTEBOOK_FACTORY:
        return {}  # the notebook model's parts come with its key (`_notebook_parts`)
    return codeprint.code_files(import_path)


def _model_dependencies(config: ExperimentConfig) -> dict:
    """The `model` section and the code behind it; a notebook model is named by its code, not its key."""
    from kfold_clr.storage import codeprint

    model = config.model.model_dump(mode="json")
    if config.model.factory == codeprint.NOTEBOOK_FACTORY:
        key = (model.get("params") or {}).pop("key", None)
        return {"model": model, "factory_code": codeprint.notebook_parts(key)}
    if config.model.factory is not None:
        return {"model": model, "factory_code": code_parts(config.model.factory)}
    return {"model": model}


def version_changes(saved: dict | None, current: dict) -> list[str]:
    """['keras 3.1.0 -> 3.2.0', ...] for the tracked libraries that differ (unknown counts as different)."""
    saved = saved if isinstance(saved, dict) else {}
    return [f"{name} {saved.get(name, 'unknown')} -> {current[name]}"
            for name in TRACKED if saved.get(name) != current.get(name)]


def check_versions(saved_items: Iterable[dict], current: dict, *, directory: str | pathlib.Path,
                   accept: bool = False) -> list[str]:
    """Refuse saved folds or range tests computed under other library versions, unless accepted.

    Args:
        saved_items: iterable of dict. Saved records, each with its `versions`.
        current: dict. `versions()` of this run.
        directory: path. The results directory, for the message.
        accept: bool. Keep them anyway (`--accept-versions`).

    Returns:
        list of str. The changes found (empty when every item matches).
    """
    changes = sorted({change for item in saved_items for change in version_changes(item.get("versions"), current)})
    if changes and not accept:
        raise ResultsError(f"output.dir: {str(directory)!r} holds results computed with other library "
                           f"versions ({'; '.join(changes)}); rerun with --fresh to recompute them, or with "
                           "--accept-versions to keep them")
    return changes


# ----------------------------------------------------------------------------- fingerprints
def fold_dependencies(config: ExperimentConfig, dataset: Dataset) -> dict:
    """The config parts (and the data) every fold's result depends on."""
    dependencies = {"seed": config.seed, "data": config.data.model_dump(mode="json", exclude={"cache"}),
                    "data_content": dataset.content_hash(),
                    **_model_dependencies(config),
                    "training": config.training.fingerprint_dump(),
                    "cv": config.cv.model_dump(mode="json")}
    if config.cv.path is not None:  # given splits: their content, wherever the file lives
        splits_file = config.base_dir / pathlib.Path(config.cv.path).expanduser()
        dependencies["splits_content"] = hashlib.sha256(splits_file.read_bytes()).hexdigest()
    if config.range_test.reserve is not None:  # rows out of every split
        dependencies["reserve"] = config.range_test.reserve
    return dependencies


def strategy_fingerprint(config: ExperimentConfig, dataset: Dataset, name: str, *, fused: bool = False,
                         dependencies: dict | None = None, extra: dict | None = None) -> str:
    """What a strategy's saved folds must match to be reused: config, data, execution path.

    Args:
        dependencies: dict or None. `fold_dependencies(config, dataset)`, when already computed.
        extra: dict or None. What else the folds depend on (e.g. how a tuned strategy's inner
            splits are made, `kfold_clr.training.tuning.fingerprint_inputs`), each key one part.
    """
    return _strategy_prints(config, dataset, name, dependencies, extra)["fused" if fused else "sequential"]


def _strategy_prints(config, dataset, name, dependencies=None, extra=None) -> dict[str, str]:
    """{"sequential": ..., "fused": ...}: the strategy's fingerprint on each path, its code hashed once."""
    strategy = config.strategies[name]
    payload = {**(dependencies if dependencies is not None else fold_dependencies(config, dataset)),
               "strategy": strategy.model_dump(mode="json"), **(extra or {})}
    if strategy.range_test_scope:
        payload["range_test"] = config.range_test.model_dump(mode="json")
    for key, path in strategy.import_paths().items():
        payload[f"{key}_code"] = code_parts(path)
    kind = type(strategy)
    if kind.__module__.partition(".")[0] != "kfold_clr":  # a registered kind: its own code
        payload["schedule_code"] = code_parts(f"{kind.__module__}:{kind.__qualname__}")
    prints = {}
    for path in ("sequential", "fused"):
        printed = fingerprint({**payload, "path": path})
        _PARTS[printed] = _parts({**payload, "path": path}, _data_parts(dataset))
        prints[path] = printed
    return prints


@dataclasses.dataclass(frozen=True)
class Fingerprints:
    """A run's fingerprints, computed once (`run_fingerprints`) and handed to every step that reads them.

    Attributes:
        dependencies: dict. `fold_dependencies`: what every fold depends on (range tests and
            worker contexts are keyed by it too).
        strategies: dict. Strategy -> {"sequential": fingerprint, "fused": fingerprint}.
    """

    dependencies: dict
    strategies: dict

    def of(self, name: str, *, fused: bool = False) -> str:
        """The fingerprint of strategy `name`'s folds trained fused or fold by fold."""
        return self.strategies[name]["fused" if fused else "sequential"]


def run_fingerprints(config: ExperimentConfig, dataset: Dataset, *, extra: dict | None = None) -> Fingerprints:
    """Every fingerprint of a run, the config's and data's parts hashed once; `extra`: strategy ->
    what else its folds depend on (see `strategy_fingerprint`)."""
    dependencies, extra = fold_dependencies(config, dataset), extra or {}
    return Fingerprints(dependencies, {name: _strategy_prints(config, dataset, name, dependencies, extra.get(name))
                                       for name in config.strategies})


_DATA_PARTS = {}  # content hash of a derived dataset (this process) -> {label: hash} of what it is made of


def remember_data_parts(content_hash: str, parts: dict) -> None:
    """Remember what the dataset whose content hash is `content_hash` is made of ({label: hash}; a
    pretrained backbone's features: the images and the backbone's weights), so that a changed part
    is named ("backbone weights file PATH changed") instead of "the data"."""
    _DATA_PARTS[content_hash] = dict(parts)


def _data_parts(dataset: Dataset) -> dict:
    """{label: hash} of the data: the parts remembered for its content hash, else the whole."""
    return _DATA_PARTS.get(dataset.content_hash()) or {"the data": dataset.content_hash()}


# ----------------------------------------------------------------------------- what changed
_PARTS = {}  # fingerprint -> {label: hash} of what it was made of (this process's fingerprints)
_DATA_KEYS = {"splits_content": "the given splits"}


def _parts(payload, data_parts) -> dict:
    """{label: hash} of a fingerprint's payload: the data (`data_parts`, for its `data_content`), each
    config section, each code file."""
    parts = {}
    for key, value in payload.items():
        if key.endswith("_code"):
            parts.update(value)
        elif key == "data_content":
            parts.update(data_parts)
        elif key in _DATA_KEYS:
            parts[_DATA_KEYS[key]] = value
        else:
            parts[f"config ({key})"] = fingerprint(value)
    return parts


def fingerprint_parts(printed: str | None) -> Optional[dict]:
    """The parts of a fingerprint computed in this process (see `describe_change`), or None."""
    return _PARTS.get(printed)


def describe_change(saved_parts: dict | None, printed: str) -> str:
    """What differs between saved fingerprint parts and the fingerprint `printed` of this run, e.g.
    "code file /home/me/helper.py changed"; "a different config" when the saved parts are unknown."""
    current = _PARTS.get(printed)
    if not isinstance(saved_parts, dict) or current is None:
        return "a different config"
    changed = sorted(label for label in {*saved_parts, *current} if saved_parts.get(label) != current.get(label))
    changed.sort(key=lambda label: label.startswith(("config (", "the data", "the given splits")))  # code first
    return "; ".join(f"{label} {_how(label, saved_parts, current)}" for label in changed) or "a different config"


def _how(label, saved, current) -> str:
    return "changed" if label in saved and label in current else "is new" if label in current else "is gone"
