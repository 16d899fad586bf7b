"""Reading a results directory's saved files for the report.

Owns the readers: `read_config` (``config.yaml`` through the project's typed
loader, `kfold_clr.config.load_config`, so the report sees the same
`ExperimentConfig` a run does), `read_json_object` for ``meta.json``,
`read_csv` with the columns each CSV must have (`REQUIRED_FOLD_COLUMNS`,
`REQUIRED_COLUMNS`) and numeric checks, `read_range_test_costs` (the updates and
seconds of each saved range test, ``range_tests/*.json``), `read_results` for
everything a report needs at once, and `choose_metrics`, the metrics of the tables and the primary
one. A missing or damaged file raises `kfold_clr.errors.ResultsError` with one
line naming the file; nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from kfold_clr.analysis.costs import range_test_costs
from kfold_clr.config import load_config, read_yaml
from kfold_clr.config.training import saved_training
from kfold_clr.errors import ConfigError, ResultsError

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Sequence

    from kfold_clr.config import ExperimentConfig

REQUIRED_FOLD_COLUMNS = ("strategy", "repeat", "fold", "n_train", "n_val")
REQUIRED_COLUMNS = {
    "history.csv": ("strategy", "repeat", "fold", "epoch"),
    "lr.csv": ("strategy", "repeat", "fold", "iteration", "lr"),
    "range_tests.csv": ("scope", "lr", "loss"),
}
NUMERIC_COLUMNS = ("repeat", "fold", "epoch", "iteration", "lr", "n_train", "n_val")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _not_found(path: pathlib.Path) -> ResultsError:
    return ResultsError(f"{path}: not found; a results directory written by `kfold-clr run` has one")


def read_json_object(path: pathlib.Path, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object in a file of the directory: ResultsError if unreadable or not an object.

    Args:
        optional: bool. A missing file gives {} instead of an error.
    """
    if not path.is_file():
        if optional:
            return {}
        raise _not_found(path)
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ResultsError(f"{path}: cannot be parsed as JSON ({one_line(error)})") from error
    if not isinstance(mapping, dict):
        raise ResultsError(f"{path}: must hold a JSON object; found {type(mapping).__name__}")
    return mapping


def read_config(path: pathlib.Path) -> ExperimentConfig:
    """``config.yaml`` as the `ExperimentConfig` the run wrote (its resolved form).

    The loader only validates: it is given the mapping, never the path, so no
    data path is looked up. Keys an earlier version did not write get what they
    meant there (`saved_training`). A file the loader refuses (edited by hand,
    written by another version) raises ResultsError naming the file and the loader's message.
    """
    if not path.is_file():
        raise _not_found(path)
    try:  # the project's own safe YAML reader, as for the experiment YAML
        raw = read_yaml(path)
    except ConfigError as error:
        raise ResultsError(f"{path}: cannot be read as YAML ({one_line(error).removeprefix(f'{path}: ')})") from None
    if isinstance(raw, dict) and "training" in raw:  # keys an earlier version did not write
        raw = {**raw, "training": saved_training(raw["training"])}
    try:
        return load_config(raw)
    except ConfigError as error:
        raise ResultsError(f"{path}: not a config this version of kfold-clr accepts ({one_line(error)}); "
                           "was it edited by hand or written by another version?") from error


def _check_numeric(frame: pd.DataFrame, path: pathlib.Path, required: Sequence[str]) -> None:
    for column in NUMERIC_COLUMNS:
        if column in required and column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = values.isna() & frame[column].notna()
            if bad.any():
                raise ResultsError(
                    f"{path}: column {column!r} must be numeric; found {frame.loc[bad, column].iloc[0]!r} "
                    f"in row {int(bad.to_numpy().nonzero()[0][0]) + 2}"
                )
            frame[column] = values


def read_csv(path: pathlib.Path, required: Sequence[str], *, optional: bool = False) -> pd.DataFrame | None:
    """The CSV at `path` with the `required` columns (numeric ones made numeric); None if optional and absent."""
    if not path.is_file():
        if optional:
            return None
        raise _not_found(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as error:
        raise ResultsError(f"{path}: cannot be parsed as CSV ({one_line(error)})") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ResultsError(
            f"{path}: missing required column(s) {missing}; found {list(frame.columns)[:12]}"
        )
    _check_numeric(frame, path, required)
    return frame


def choose_metrics(config: ExperimentConfig, folds: pd.DataFrame, path: pathlib.Path) -> tuple[list[str], str]:
    """(metrics for the tables, primary metric) from the config and the columns present."""
    training = list(config.training.metrics or [])
    requested = config.compare.metrics
    if requested:
        missing = [m for m in requested if f"val_{m}" not in folds.columns]
        if missing:
            raise ResultsError(f"{path}: lacks column(s) {[f'val_{m}' for m in missing]} "
                               f"named by compare.metrics={requested}")
    else:
        requested = training + ["loss"]
    metrics = [m for m in dict.fromkeys(requested) if f"val_{m}" in folds.columns]
    if not metrics:
        raise ResultsError(f"{path}: no validation score column; expected one of "
                           f"{[f'val_{m}' for m in dict.fromkeys(requested)]}")
    primary = next((m for m in training if f"val_{m}" in folds.columns), None)
    if primary is None:
        primary = "loss" if "val_loss" in folds.columns else metrics[0]
    if primary not in metrics:
        metrics.insert(0, primary)
    return metrics, primary


def read_range_test_costs(directory: pathlib.Path, range_tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Updates and seconds per range-test scope (`costs.range_test_costs`) from ``range_tests/*.json``.

    A payload that cannot be read counts as a range test of unknown cost (its scope
    falls back to its ``range_tests.csv`` rows, else is missing), never as an error:
    the scores do not depend on it.
    """
    payloads = []
    for path in sorted((directory / "range_tests").glob("*.json")):
        try:
            payload = read_json_object(path)
        except ResultsError:
            continue
        payloads.append({"scope": path.stem, **payload})
    return range_test_costs(payloads, range_tests=range_tests)


@dataclass(frozen=True)
class SavedResults:
    """What a report is built from: the config, the fold records and the optional tables."""

    config: ExperimentConfig
    folds: pd.DataFrame
    folds_path: pathlib.Path
    metrics: list[str]
    primary: str
    history: Optional[pd.DataFrame]
    lr: Optional[pd.DataFrame]
    range_tests: Optional[pd.DataFrame]
    range_test_costs: pd.DataFrame
    meta: dict[str, Any]


def read_results(directory: pathlib.Path) -> SavedResults:
    """Read every input of the report from a claimed results directory."""
    config = read_config(directory / "config.yaml")
    folds_path = directory / "folds.csv"
    folds = read_csv(folds_path, REQUIRED_FOLD_COLUMNS)
    if folds.empty:
        raise ResultsError(f"{folds_path}: has no rows; no fold has finished")
    folds["strategy"] = folds["strategy"].astype(str)
    metrics, primary = choose_metrics(config, folds, folds_path)
    range_tests = read_csv(directory / "range_tests.csv", REQUIRED_COLUMNS["range_tests.csv"], optional=True)
    return SavedResults(
        config=config, folds=folds, folds_path=folds_path, metrics=metrics, primary=primary,
        history=read_csv(directory / "history.csv", REQUIRED_COLUMNS["history.csv"], optional=True),
        lr=read_csv(directory / "lr.csv", REQUIRED_COLUMNS["lr.csv"], optional=True),
        range_tests=range_tests, range_test_costs=read_range_test_costs(directory, range_tests),
        meta=read_json_object(directory / "meta.json", optional=True),
    )
