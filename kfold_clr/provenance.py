"""Where results came from: the runs that wrote them, the library versions, the user's code.

``meta.json`` holds one record per run of the same results directory (command,
start, end, outcome, versions, git commit, host); a resumed run appends its own
instead of overwriting the first. Saved folds carry the versions they were
computed with: a resume under other versions is refused unless the user accepts
them (:func:`check_versions`). The source of the user's code that a config
imports (`model.factory`, `scale_fn`) enters the fingerprints
(:func:`code_fingerprint`), so editing it invalidates saved folds like changed data.
"""

import datetime
import hashlib
import importlib
import inspect
import pathlib
import platform
import subprocess

from kfold_clr import __version__
from kfold_clr.errors import ResultsError

#: The libraries whose version can change a fold's numbers.
TRACKED = ("kfold_clr", "keras", "tensorflow", "scikit_learn")


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


def git_commit():
    """The commit of the working directory's repository, or None."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(*, seed, command) -> dict:
    """The `meta.json` record of a run that starts now."""
    return {**versions(), "host": platform.node(), "platform": platform.platform(),
            "git_commit": git_commit(), "seed": seed, "command": command,
            "started": now(), "finished": None, "outcome": "running"}


def run_history(saved) -> list:
    """The run records of a saved `meta.json` (one run for the format before run histories)."""
    if not isinstance(saved, dict):
        return []
    runs = saved.get("runs")
    if isinstance(runs, list):
        return [run for run in runs if isinstance(run, dict)]
    return [saved] if saved else []


def code_fingerprint(import_path: str) -> str:
    """A hash of the source of the module that `import_path` ("pkg.module:name") points into."""
    module_name = import_path.partition(":")[0]
    digest = hashlib.sha256(module_name.encode())
    try:
        module = importlib.import_module(module_name)
        source = inspect.getsourcefile(module) or getattr(module, "__file__", None)
        if source:
            with open(source, "rb") as stream:
                digest.update(stream.read())
    except (ImportError, OSError, TypeError):
        pass  # `prepare` reports a module that cannot be imported; here the name stands for it
    return digest.hexdigest()[:16]


def version_changes(saved: dict, current: dict) -> list:
    """['keras 3.1.0 -> 3.2.0', ...] for the tracked libraries that differ (unknown counts as different)."""
    saved = saved if isinstance(saved, dict) else {}
    return [f"{name} {saved.get(name, 'unknown')} -> {current[name]}"
            for name in TRACKED if saved.get(name) != current.get(name)]


def check_versions(saved_items, current, *, directory, accept=False) -> list:
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
def fold_dependencies(config, dataset) -> dict:
    """The config parts (and the data) every fold's result depends on."""
    dependencies = {"seed": config.seed, "data": config.data.model_dump(mode="json"),
                    "data_content": dataset.content_hash(),
                    "model": config.model.model_dump(mode="json"),
                    "training": config.training.model_dump(mode="json"),
                    "cv": config.cv.model_dump(mode="json")}
    if config.cv.path is not None:  # given splits: their content, wherever the file lives
        splits_file = config.base_dir / pathlib.Path(config.cv.path).expanduser()
        dependencies["splits_content"] = hashlib.sha256(splits_file.read_bytes()).hexdigest()
    if config.range_test.reserve is not None:  # rows out of every split
        dependencies["reserve"] = config.range_test.reserve
    if config.model.factory is not None:
        dependencies["factory_source"] = code_fingerprint(config.model.factory)
    return dependencies


def strategy_fingerprint(config, dataset, name, *, fused=False) -> str:
    """What a strategy's saved folds must match to be reused: config, data, execution path."""
    from kfold_clr.store import fingerprint
    from kfold_clr.strategies import uses_range_test

    strategy = config.strategies[name]
    payload = {**fold_dependencies(config, dataset), "strategy": strategy.model_dump(mode="json"),
               "path": "fused" if fused else "sequential"}
    if uses_range_test(strategy):
        payload["range_test"] = config.range_test.model_dump(mode="json")
    if getattr(strategy, "scale_fn", None) is not None:
        payload["scale_fn_source"] = code_fingerprint(strategy.scale_fn)
    return fingerprint(payload)
