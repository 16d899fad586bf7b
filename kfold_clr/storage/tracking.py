"""Optional experiment tracking: TensorBoard event files and MLflow runs of every finished fold.

Asked for in the experiment's ``output`` section::

    output:
      tensorboard: true                       # RESULTS/tensorboard/STRATEGY/rR_fF/
      mlflow: {tracking_uri: mlruns, experiment: digits-clr}

The run loop builds one :class:`Trackers` and calls it unconditionally (it does
nothing when nothing is asked for)::

    trackers = Trackers.from_config(config, results_dir, warn=log)
    trackers.fold_done(plan, record)          # after each fold's record is saved
    trackers.run_done(results_dir, summary)   # after the tables and report are written
    trackers.close()                          # always (finally)

The results directory stays the record of a run: a fold already finished in an
earlier run (resumed) is not logged again, and an MLflow error (a server that is
down: an http(s) server is probed with a 3 s limit before the first call, and each
request is bounded) is reported once and ends MLflow logging for the run without
touching the results. MLflow is imported only when the config asks for it.
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
import pathlib
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kfold_clr.errors import ConfigError
from kfold_clr.storage import layout, ownership

if TYPE_CHECKING:
    import pandas as pd

    from kfold_clr.config.schema import ExperimentConfig, MlflowConfig
    from kfold_clr.training.fold_plans import FoldPlan

TENSORBOARD_DIR = "tensorboard"
LR_UPDATE_TAG = "lr_update"  # not "lr/update": MLflow's file store keeps "lr" as a file, so no "lr/..." key
INSTALL_HINT = 'install it with pip install "kfold-clr[{extra}]"'

# Keys of history and LR-trace entries that say where a value belongs, not what was measured.
_WHERE = ("strategy", "repeat", "fold", "epoch", "iteration", "global_iteration")
_SCORE_PREFIXES = ("train_", "val_", "snapshot_")
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# MLflow's limits (mlflow.utils.validation): value lengths and items per `log_batch` call.
_MAX_PARAM_LENGTH = 6000
_MAX_TAG_LENGTH = 8000
_MAX_KEY_LENGTH = 250
_PARAMS_PER_BATCH = 100
PROBE_SECONDS = 3.0  # how long an http(s) tracking server has to answer before MLflow logging is dropped
_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
_METRICS_PER_BATCH = 1000


def _print_warning(message: str) -> None:
    print(f"kfold-clr: {message}", file=sys.stderr)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- checks
def check_tracking(config: ExperimentConfig) -> None:
    """Raise ConfigError when `output` asks for a tracker whose package is missing.

    ``output.tensorboard: true`` needs the ``tensorboard`` package: TensorFlow's
    ``tf.summary`` writes scalars through it. ``output.mlflow`` needs MLflow, and a
    database tracking URI (MLflow 3's default is ``sqlite:///mlflow.db``) needs
    SQLAlchemy, which ``mlflow-skinny`` does not ship. Nothing is imported for a
    tracker the config does not ask for.

    Args:
        config: ExperimentConfig. The validated experiment.

    Raises:
        ConfigError: one line naming the key, what it needs and how to install it.
    """
    output = config.output
    if output.tensorboard and not _importable("tensorboard"):
        raise ConfigError("output.tensorboard: true needs TensorBoard (tf.summary writes its scalars through "
                          f"it); {INSTALL_HINT.format(extra='tensorboard')}, or set output.tensorboard: false")
    if output.mlflow is None:
        return
    if not _importable("mlflow"):
        raise ConfigError("output.mlflow: logging to MLflow needs MLflow; "
                          f"{INSTALL_HINT.format(extra='mlflow')}, or remove output.mlflow")
    uri = _tracking_uri(output.mlflow)
    if urllib.parse.urlparse(uri).scheme.split("+")[0] in _SQL_SCHEMES and not _importable("sqlalchemy"):
        where = "" if output.mlflow.tracking_uri is not None else " (MLflow's default)"
        raise ConfigError(f"output.mlflow.tracking_uri: {uri!r}{where} needs SQLAlchemy, which mlflow-skinny "
                          "does not ship; pip install mlflow, or set tracking_uri to a folder (e.g. mlruns) "
                          "or a tracking server (http://HOST:5000)")


def _tracking_uri(settings: MlflowConfig) -> str:
    """The tracking URI asked for, or MLflow's default (MLFLOW_TRACKING_URI, else its own)."""
    if settings.tracking_uri is not None:
        return settings.tracking_uri
    import mlflow

    return str(mlflow.get_tracking_uri())


def _is_local_path(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a plain path; `C:\...` parses with scheme "c"


# ----------------------------------------------------------------------------- all trackers
class Trackers:
    """The trackers a run asked for, called together; without any, every call does nothing.

    Args:
        trackers: iterable of objects with `fold_done`, `run_done` and `close`.

    Example: see the module docstring (build once, one call per fold, then the run's end).
    """

    def __init__(self, trackers: Iterable[TensorBoardTracker | MlflowTracker] = ()) -> None:
        self.trackers = list(trackers)

    @classmethod
    def from_config(cls, config: ExperimentConfig, results_dir: str | os.PathLike[str], *,
                    warn: Callable[[str], object] | None = None) -> Trackers:
        """The trackers `config.output` asks for, writing under `results_dir`.

        Connects to nothing yet (MLflow is reached at the first finished fold).

        Args:
            config: ExperimentConfig. The validated experiment.
            results_dir: path. The run's (claimed) results directory.
            warn: callable(str) or None. Says, once, that MLflow logging stopped
                (default: a line on stderr).

        Raises:
            ConfigError: a tracker's package is missing (see `check_tracking`).
        """
        check_tracking(config)
        trackers = []
        if config.output.tensorboard:
            trackers.append(TensorBoardTracker(results_dir))
        if config.output.mlflow is not None:
            trackers.append(MlflowTracker(config, results_dir, warn=warn or _print_warning))
        return cls(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def fold_done(self, plan: FoldPlan, record: dict) -> None:
        """Log one fold finished in this run (`plan`: FoldPlan; `record`: its saved record)."""
        for tracker in self.trackers:
            tracker.fold_done(plan, record)

    def run_done(self, results_dir: str | os.PathLike[str], summary: pd.DataFrame | None = None) -> None:
        """Log the run's tables, plots and report (`summary`: the summary DataFrame, or None)."""
        for tracker in self.trackers:
            tracker.run_done(results_dir, summary)

    def close(self) -> None:
        """End what is still open (an interrupted run's MLflow runs end as KILLED)."""
        for tracker in self.trackers:
            tracker.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _scalars(entry: dict, skip: Iterable[str] = _WHERE) -> dict[str, float]:
    """The numeric values of a history entry or row, by key (booleans and None left out)."""
    return {key: float(value) for key, value in entry.items()
            if key not in skip and _is_number(value)}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- TensorBoard
class TensorBoardTracker:
    """TensorBoard event files, one folder per strategy and fold: ``RESULTS/tensorboard/STRATEGY/rR_fF/``.

    Per-epoch scalars (loss, metrics, their ``val_`` twins and the epoch's ``lr``) at
    step = epoch, and the learning rate of the recorded updates as ``lr_update`` at
    step = iteration in the fold. A fold trained again first loses its earlier event
    files, so no folder holds two copies of a curve. View with
    ``tensorboard --logdir RESULTS/tensorboard``.

    Args:
        results_dir: path. The run's (claimed) results directory.
    """

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.results_dir = results_dir

    def folder(self, strategy: str, key: str) -> pathlib.Path:
        """``RESULTS/tensorboard/STRATEGY/KEY``, refused (ResultsError) if a name escapes it."""
        return ownership.inside(ownership.inside(self.results_dir, TENSORBOARD_DIR), strategy, key)

    def fold_done(self, plan: FoldPlan, record: dict) -> None:
        folder = ownership.guard(self.folder(plan.strategy, plan.key))
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir()):
            if re.fullmatch(layout.EVENT_FILE, path.name) and (path.is_symlink() or not path.is_dir()):
                ownership.remove(ownership.inside(folder, path.name))
        _write_events(folder, record.get("history", []), record.get("lr", []))

    def run_done(self, results_dir: str | os.PathLike[str], summary: pd.DataFrame | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def _write_events(folder, history, lr_trace):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    try:
        with writer.as_default(), tf.device("/cpu:0"):
            for entry in history:
                for tag, value in _scalars(entry).items():
                    tf.summary.scalar(tag, value, step=int(entry["epoch"]))
            for point in lr_trace:
                tf.summary.scalar(LR_UPDATE_TAG, float(point["lr"]), step=int(point["iteration"]))
        writer.flush()
    finally:
        writer.close()


# ----------------------------------------------------------------------------- MLflow
class MlflowTracker:
    """MLflow runs: a parent per strategy, a nested run per fold, and one run for the report.

    - ``STRATEGY`` (parent): the resolved config as parameters (dotted keys).
    - ``STRATEGY rR_fF`` (nested, tag ``mlflow.parentRunId``): per-epoch metrics with
      the ``lr`` (step = epoch), ``lr_update`` per recorded update (step = iteration),
      the final scores as ``final/val_<metric>`` and ``final/train_<metric>``, the
      status and flags as tags; a failed fold ends FAILED.
    - ``NAME`` (the experiment's name, top level, at `run_done`): the config as
      parameters, the summary as ``STRATEGY/val_<metric>`` (mean) with ``_std``,
      ``_ci95_low`` and ``_ci95_high``, and ``report.md``, ``config.yaml``, the CSV
      tables and ``plots/*.png`` as artifacts.

    Every run carries the tags ``kfold_clr.session`` (one value per invocation) and
    ``kfold_clr.results_dir``. The first MLflow error is reported once through `warn`
    and ends MLflow logging for the rest of the run; the results directory is unaffected.

    Args:
        config: ExperimentConfig. The validated experiment (``output.mlflow`` set).
        results_dir: path. The run's results directory.
        warn: callable(str). Says that MLflow logging stopped, and why.
    """

    def __init__(self, config: ExperimentConfig, results_dir: str | os.PathLike[str], *,
                 warn: Callable[[str], object] = _print_warning) -> None:
        settings = config.output.mlflow
        self.uri = _tracking_uri(settings)
        if _is_local_path(self.uri):
            # MLflow 3 refuses its file store (a folder or file:// URI) unless this is set;
            # the user chose a folder, so opt in for this process (an explicit value wins).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # MLflow waits 120 s per request and retries 7 times with backoff (minutes) on a server
        # that stops answering mid-run; bound each call (an explicit value wins).
        for name, value in _HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        self.experiment_name = settings.experiment or config.name
        self.run_name = config.name
        self.params = _params(config.to_dict())
        self.common_tags = {"kfold_clr.session": f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
                            "kfold_clr.results_dir": str(results_dir)}
        self.warn = warn
        self.client = self.experiment_id = None
        self.parents = {}  # strategy -> run id, open until run_done or close
        self.stopped = False

    # -- guarded calls -----------------------------------------------------------
    def _safely(self, action, *args):
        if self.stopped:
            return
        try:
            action(*args)
        except Exception as error:  # noqa: BLE001 - tracking must never sink a run whose results are saved
            from kfold_clr.errors import describe_error

            self.stopped = True
            self.warn(f"MLflow logging stopped ({describe_error(error)}); the results directory has "
                      "everything, and the rest of this run is not logged to MLflow")

    def fold_done(self, plan: FoldPlan, record: dict) -> None:
        self._safely(self._log_fold, plan, record)

    def run_done(self, results_dir: str | os.PathLike[str], summary: pd.DataFrame | None = None) -> None:
        self._safely(self._log_run, results_dir, summary)

    def close(self) -> None:
        self._safely(self._end_parents, "KILLED")

    # -- MLflow ----------------------------------------------------------------
    def _connect(self):
        if self.client is None:
            from mlflow.tracking import MlflowClient

            _probe_server(self.uri)
            client = MlflowClient(tracking_uri=self.uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                self.experiment_id = client.create_experiment(self.experiment_name)
            elif experiment.lifecycle_stage == "deleted":
                raise RuntimeError(f"MLflow experiment {self.experiment_name!r} is deleted; restore it "
                                   "(mlflow experiments restore) or set output.mlflow.experiment")
            else:
                self.experiment_id = experiment.experiment_id
            self.client = client
        return self.client

    def _start(self, name, *, params=None, tags=None):
        client = self._connect()
        tags = {**self.common_tags, **_tag_values(tags or {})}
        run_id = client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        self._log(run_id, params=params)
        return run_id

    def _log(self, run_id, *, params=None, metrics=()):
        """`params`: dict name -> str; `metrics`: list of (key, value, step)."""
        from mlflow.entities import Metric, Param

        client, stamp = self.client, int(time.time() * 1000)
        params = [Param(key, value) for key, value in (params or {}).items()]
        metrics = [Metric(_key(key), value, stamp, int(step)) for key, value, step in metrics]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start:start + _PARAMS_PER_BATCH])
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])

    def _parent(self, strategy):
        if strategy not in self.parents:
            self.parents[strategy] = self._start(strategy, params=self.params, tags={"kfold_clr.strategy": strategy})
        return self.parents[strategy]

    def _log_fold(self, plan, record):
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        row = record["row"]
        tags = {key: value for key, value in row.items() if value != "" and not _is_number(value)}
        tags.update({"repeat": plan.split.repeat, "fold": plan.split.fold, "seed": row.get("seed"),
                     "kfold_clr.strategy": plan.strategy, MLFLOW_PARENT_RUN_ID: self._parent(plan.strategy)})
        run_id = self._start(f"{plan.strategy} {plan.key}", tags=tags)
        metrics = [(key, value, entry["epoch"]) for entry in record.get("history", [])
                   for key, value in _scalars(entry).items()]
        metrics += [(LR_UPDATE_TAG, float(point["lr"]), point["iteration"]) for point in record.get("lr", [])]
        metrics += [(f"final/{key}" if key.startswith(_SCORE_PREFIXES) else key, value, 0)
                    for key, value in _scalars(row, skip=("repeat", "fold", "seed")).items()]
        self._log(run_id, metrics=metrics)
        self.client.set_terminated(run_id, "FAILED" if row.get("status") == "failed" else "FINISHED")

    def _log_run(self, results_dir, summary):
        run_id = self._start(self.run_name, params=self.params)
        if summary is not None:
            self._log(run_id, metrics=[
                (f"{row['strategy']}/val_{row['metric']}{suffix}", float(row[column]), 0)
                for row in summary.to_dict(orient="records")
                for column, suffix in (("mean", ""), ("std", "_std"), ("ci95_low", "_ci95_low"),
                                       ("ci95_high", "_ci95_high"))
                if _is_number(row.get(column))])
        for path, folder in _artifacts(results_dir):
            self.client.log_artifact(run_id, str(path), artifact_path=folder)
        self.client.set_terminated(run_id, "FINISHED")
        self._end_parents("FINISHED")

    def _end_parents(self, status):
        while self.parents:
            _, run_id = self.parents.popitem()
            self.client.set_terminated(run_id, status)


def _probe_server(uri, *, timeout=PROBE_SECONDS):
    """Raise ConnectionError, within `timeout` seconds, when an http(s) tracking server does not answer.

    Any HTTP answer (even an error status) counts as reachable; a refused or silent
    address does not. Other URIs (a folder, a database, ``databricks``) are not probed.
    """
    import urllib.error
    import urllib.request

    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"tracking server {uri} does not answer within {timeout:g} s ({reason})") from None


def _artifacts(results_dir):
    """(path, artifact folder) of the files a person reads: report, config, tables, plots."""
    results_dir = pathlib.Path(results_dir)
    found = [(results_dir / name, None) for name in ("report.md", "config.yaml")]
    found += [(path, None) for path in sorted(results_dir.glob("*.csv"))]
    found += [(path, "plots") for path in sorted(results_dir.glob("plots/*.png"))]
    return [(path, folder) for path, folder in found if path.is_file() and not path.is_symlink()]


def _params(config_dict) -> dict:
    """The resolved config as MLflow parameters: dotted keys, values as strings within MLflow's limit."""
    params = {}

    def walk(data, prefix):
        for key, value in data.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                params[_key(f"{prefix}{key}")] = _limited(value if isinstance(value, str) else
                                                          json.dumps(value, default=str), _MAX_PARAM_LENGTH)

    walk(config_dict, "")
    return params


def _tag_values(tags) -> dict:
    return {key: _limited(str(value), _MAX_TAG_LENGTH) for key, value in tags.items() if value is not None}


def _limited(text, limit) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _key(name) -> str:
    """`name` with the characters MLflow refuses in keys replaced by '_'."""
    cleaned = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(name))
    return cleaned[:_MAX_KEY_LENGTH]
