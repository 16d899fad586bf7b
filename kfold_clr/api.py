"""The notebook entry point: `cross_validate` on arrays in memory, with your own model and splitter.

It builds the same experiment a YAML describes and runs it through `run_experiment`:
the same validation, fingerprints, results directory and statistics as the command
line. The arrays are written once to a content-addressed .npz in kfold_clr's cache
folder (`kfold_clr.data.array_cache`: `KFOLD_CLR_CACHE`, default `~/.cache/kfold_clr`,
checked when reused, bounded in size), so resuming works and a changed array is
never mixed with old results; splits from a scikit-learn splitter object are saved
next to them and read as `cv: {splitter: given}`. The model function is identified
by its code and the globals it reads, so editing either refuses old folds
(`fresh=True` starts afresh).
"""

from __future__ import annotations

import copy
import os
import pathlib
import shutil
import sys
import tempfile
import weakref
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from kfold_clr.data import array_cache
from kfold_clr.errors import ConfigError, DataError, KfoldClrError
from kfold_clr.storage import codeprint

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeAlias

    import keras
    from numpy.typing import ArrayLike

    from kfold_clr.results import Results

    ModelSpec: TypeAlias = Callable[[tuple[int, ...], int], keras.Model] | keras.Model | str

    class Splitter(Protocol):
        """A scikit-learn style splitter: anything with `split(X, y, groups)`."""

        def split(self, X: Any, y: Any = None, groups: Any = None) -> Any: ...

def notebook_model(input_shape: Sequence[int], n_outputs: int, *, key: str) -> keras.Model:
    """The `model.factory` behind `cross_validate`: the registered model function's fresh model."""
    import keras

    model = codeprint.notebook_model(key)
    if model is None:
        raise ConfigError("model.factory: a notebook model lives in the process that registered it; "
                          "run cross_validate with the local executor, or pass an import path")
    if isinstance(model, keras.Model):
        return keras.models.clone_model(model)  # same architecture, fresh weights (seeded per fold)
    return model(tuple(input_shape), n_outputs)


def _model_section(model: ModelSpec) -> dict:
    import keras

    if isinstance(model, str):
        return {"factory": model}
    if not (callable(model) or isinstance(model, keras.Model)):
        raise ConfigError(f"model: {model!r} must be a function (input_shape, n_outputs) -> keras.Model, "
                          "a Keras model to clone, or an import path 'package.module:function'")
    key = codeprint.register_notebook_model(model)
    return {"factory": codeprint.NOTEBOOK_FACTORY, "params": {"key": key}}


def _arrays(X: ArrayLike, y: ArrayLike, groups: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, y = np.asarray(X), np.asarray(y)
    if len(x) != len(y):
        raise ConfigError(f"y: {len(y)} samples, but X has {len(x)}; give one target per row of X")
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(x):
            raise ConfigError(f"groups: {len(groups)} labels, but X has {len(x)} rows; give one group per row")
    return x, y, groups


def _cv_section(cv: int | dict | Splitter, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> dict:
    """An int is the number of folds of the splitter kfold_clr picks for the task; a mapping is the
    YAML's `cv` section; a scikit-learn splitter object (anything with split(X, y, groups)) is used as it is."""
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        return {"splitter": "auto", "n_splits": int(cv)}
    if isinstance(cv, dict):  # the YAML's cv mapping, e.g. {"n_splits": 5, "n_repeats": 3}
        return {"splitter": "auto", "n_splits": 5, **cv}
    if isinstance(cv, (str, bytes)) or not callable(getattr(cv, "split", None)):
        raise ConfigError(f"cv: {cv!r} must be a number of folds, the YAML's cv mapping, or a splitter with "
                          "split(X, y, groups), such as sklearn.model_selection.GroupKFold(5)")
    try:
        splits = list(cv.split(x, y, groups))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cv: {type(cv).__name__} could not split the data ({error})") from None
    if not splits:
        raise ConfigError(f"cv: {type(cv).__name__} made no splits")

    def write(handle: IO[bytes]) -> None:
        from kfold_clr.data.splits import save_given_splits

        save_given_splits(handle, splits)

    return {"splitter": "given", "path": str(array_cache.cached("splits", write))}


def _merged(keywords: dict, settings: dict, path: tuple[str, ...] = ()) -> dict:
    """`keywords` with `settings` merged in, section by section; a value both set differently is refused.

    A keyword argument of `cross_validate` and a settings mapping never silently override
    each other: `epochs=20` with `training={"epochs": 3}` is a ValueError naming both.
    """
    merged = copy.deepcopy(keywords)
    for key, value in settings.items():
        where = (*path, key)
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value, where)
        elif key in merged and merged[key] != value:
            name = _KEYWORDS.get(where, where[0])
            raise ValueError(f"Argument `{name}` and `{where[0]}` disagree: {'.'.join(where)} is "
                             f"{merged[key]!r} from `{name}` but {value!r} in `{where[0]}`; set it in one place")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _without(given: dict, defaults: dict) -> dict:
    """`given` less the values equal to their `defaults` (keyword arguments left at their defaults)."""
    kept = {}
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            value = _without(value, default)
            if value or not default:
                kept[key] = value
        elif key not in defaults or value != default:
            kept[key] = value
    return kept


def _with_defaults(experiment: dict, defaults: dict) -> dict:
    """`experiment` with the keys it lacks taken from `defaults`, section by section."""
    filled = copy.deepcopy(experiment)
    for key, value in defaults.items():
        if key not in filled:
            filled[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(filled[key], dict):
            filled[key] = _with_defaults(filled[key], value)
    return filled


_KEYWORDS = {("training", "epochs"): "epochs", ("training", "batch_size"): "batch_size",
             ("training", "metrics"): "metrics", ("training", "optimizer", "name"): "optimizer",
             ("data", "scale"): "scale", ("seed",): "seed", ("output", "dir"): "output_dir",
             ("output", "tensorboard"): "tensorboard", ("execution", "executor"): "n_jobs",
             ("execution", "workers"): "n_jobs"}
"""The experiment key each keyword argument of `cross_validate` sets (for the conflict message)."""


def _execution(n_jobs: int | None) -> dict:
    """`n_jobs` as scikit-learn reads it: None or 1 in this process, N > 1 worker processes, -1 one per core."""
    if n_jobs is None:
        return {}
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"Argument `n_jobs` must be None, -1 (one worker per core) or a number of workers >= 1. "
                         f"Received: n_jobs={n_jobs!r}")
    workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
    return {"executor": "local"} if workers == 1 else {"executor": "processes", "workers": workers}


def _for_notebooks(message: str) -> str:
    """A refusal of the run, with the command line's flags named as this function's arguments."""
    return (message.replace("rerun with --fresh", "call again with fresh=True")
            .replace("--fresh", "fresh=True").replace("--accept-versions", "accept_versions=True"))


def cross_validate(model: ModelSpec, X: ArrayLike, y: ArrayLike, *, strategies: dict[str, dict],
                   cv: int | dict | Splitter = 5, groups: ArrayLike | None = None, epochs: int, batch_size: int,
                   optimizer: str | dict = "sgd", metrics: list[str] | None = None, scale: str = "standard",
                   seed: int = 0, output_dir: pathlib.Path | str | None = None, tensorboard: bool = False,
                   n_jobs: int | None = None, verbose: int = 0, fresh: bool = False, accept_versions: bool = False,
                   **settings: Any) -> Results:
    """Cross-validate learning-rate strategies on your arrays with your model; returns `Results`.

    In the spirit of scikit-learn's `cross_validate`: data first, everything else by
    keyword. Every strategy sees the same splits, initial weights and data order.

    Args:
        model: callable `(input_shape, n_outputs) -> keras.Model` (uncompiled, softmax
            outputs for classification), a Keras model to clone, or an import path
            "package.module:function".
        X: array-like (n_samples, ...). Features; more than 2 dimensions (images) keep
            their shape for the model (`data.image_shape`).
        y: array-like (n_samples,). Class labels or regression targets.
        strategies: dict. The YAML's `strategies` mapping, e.g.
            `{"clr": {"schedule": "clr", "base_lr": 1e-3, "max_lr": 1e-2, "step_size_epochs": 2}}`.
        cv: int, dict or splitter. Number of folds, the YAML's `cv` mapping (e.g.
            `{"n_splits": 5, "n_repeats": 3}`), or any object with `split(X, y, groups)`
            (KFold, GroupKFold, TimeSeriesSplit, PredefinedSplit, ...).
        groups: array-like or None. Group labels for group splitters.
        epochs: int. Epochs per fold.
        batch_size: int. Rows per batch.
        optimizer: str or dict. "sgd", "adam", "rmsprop", or the `training.optimizer` mapping.
        metrics: list of str or None. Keras metric names; default from the task.
        scale: str. "standard", "minmax" or "none", fitted on each training split.
        seed: int. Seed of splits, initial weights and data order.
        output_dir: path or None. The results directory; None makes a temporary one (printed),
            deleted when the returned `Results` object is garbage-collected (at once when the
            call fails or is interrupted: nothing refers to it then).
        tensorboard: bool. Also write TensorBoard logs.
        n_jobs: int or None. Folds trained in parallel worker processes: None or 1 in this
            process, N workers, -1 one per core (`execution: {executor: processes}`; the
            model must then be an import path, which worker processes can import).
        verbose: int. 0 quiet (the default: only the closing summary), 1 progress,
            2 per-epoch lines.
        fresh: bool. Discard the results already in `output_dir` and start over (the
            command line's `--fresh`). By default finished folds are reused, and results
            from other data, settings or code (the model function, the globals it reads,
            the files it imports) are refused with a message naming what changed.
        accept_versions: bool. Keep saved folds computed with other versions of kfold_clr,
            Keras, TensorFlow or scikit-learn (refused by default).
        **settings: any other section of the experiment YAML (`range_test`, `compare`,
            `execution`, `name`, or keys of `data`, `training`, `output`), merged with the
            above: a value here replaces a keyword's default, but a keyword given another
            value and a different value here (`epochs=20` with `training={"epochs": 3}`)
            are refused with a ValueError.

    Returns:
        `Results`: `folds`, `history`, `summary`, `comparison` DataFrames, `report()`,
        `plot(...)`, and an HTML view in Jupyter.

    Example:

    ```python
    from sklearn.model_selection import GroupKFold
    results = kfold_clr.cross_validate(make_model, X, y, groups=patients, cv=GroupKFold(5),
                                       strategies={"clr": {...}, "constant": {...}},
                                       epochs=10, batch_size=32)
    results.comparison
    ```
    """
    from kfold_clr.execution.experiment import run_experiment

    for name, value in (("fresh", fresh), ("accept_versions", accept_versions)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"Argument `{name}` must be True or False. Received: {name}={value!r}")
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)) or verbose not in (0, 1, 2):
        raise ValueError(f"Argument `verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
    x, y, groups = _arrays(X, y, groups)
    arrays = {"x": x, "y": y, **({"groups": groups} if groups is not None else {})}
    data_path = array_cache.cached("data", lambda handle: np.savez(handle, **arrays))
    data = {"source": "npz", "path": str(data_path)}
    if x.ndim > 2:
        data["image_shape"] = [int(n) for n in x.shape[1:]]
    given = {  # what the keyword arguments set; one left at its default sets nothing a settings mapping sets
        "seed": seed, "data": {**data, "scale": scale}, "model": _model_section(model),
        "training": {"epochs": epochs, "batch_size": batch_size, "metrics": metrics,
                     "optimizer": {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer)},
        "cv": _cv_section(cv, x, y, groups), "strategies": strategies,
        "output": {"dir": None if output_dir is None else str(output_dir), "tensorboard": tensorboard},
        "execution": _execution(n_jobs),
    }
    defaults = {"name": "notebook", "seed": 0, "data": {"scale": "standard"}, "cv": _cv_section(5, x, y, groups),
                "training": {"metrics": None, "optimizer": {"name": "sgd"}},
                "output": {"dir": None, "tensorboard": False}, "execution": {}}
    experiment = _with_defaults(_merged(_without(given, defaults), settings), defaults)
    executor = (experiment.get("execution") or {}).get("executor", "local")
    if experiment["model"].get("factory") == codeprint.NOTEBOOK_FACTORY and executor != "local":
        raise ConfigError(f"execution.executor: {executor!r} runs folds in other processes, which cannot see a "
                          "model defined in this notebook; use 'local' (n_jobs=None), or pass an import path "
                          "as `model`")
    temporary = None
    if experiment["output"].get("dir") is None:
        temporary = pathlib.Path(tempfile.mkdtemp(prefix="kfold_clr-"))
        experiment["output"]["dir"] = str(temporary / "results")
        print(f"kfold-clr: results go to {experiment['output']['dir']}, a temporary folder deleted with the "
              "returned Results (pass output_dir= to keep them)", file=sys.stderr)
    try:
        results = run_experiment(experiment, resume=not fresh, verbosity=verbose, accept_versions=accept_versions,
                                 command="kfold_clr.cross_validate(...)")
    except BaseException as error:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)  # nothing will point to it
        if isinstance(error, DataError):  # name the arrays as the caller knows them, not by their cache file
            raise DataError(str(error).replace(data_path.name, "the arrays X, y")) from None
        if isinstance(error, KfoldClrError) and _for_notebooks(str(error)) != str(error):
            raise type(error)(_for_notebooks(str(error))) from None  # no flags here: name the arguments
        raise
    if temporary is not None:
        weakref.finalize(results, shutil.rmtree, str(temporary), ignore_errors=True)
    return results
