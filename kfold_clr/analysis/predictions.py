"""Out-of-fold predictions: the `predictions.csv` table and what the report draws from it.

A trainer's fold record carries the predictions of its validation rows (the
payload, saved by `kfold_clr.storage.store.ResultsStore` beside the record):

    {"rows": dataset row indices, "y_true": class indices or targets (original units),
     "output": (n_val, n_outputs) probabilities or predictions,
     "snapshot_output": the same for the snapshot ensemble (optional),
     "files": image files relative to the image folder (optional),
     "class_names": labels of the classes in index order (optional)}

`predictions_table` turns the payloads of many folds into one row per
(strategy, repeat, fold, validation row): ``row``, ``file`` (image sets),
``y_true``, ``y_pred``, ``prob_<class>`` (classification; labels are the class
names where they were saved, else the class indices) and the snapshot
ensemble's ``snapshot_y_pred`` / ``snapshot_prob_<class>``. `confusion` and
`confidently_wrong` are what the report shows of it. Nothing here reads or
writes files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numpy.typing import ArrayLike

KEY = ["strategy", "repeat", "fold"]
PROB_PREFIX = "prob_"
SNAPSHOT_PREFIX = "snapshot_"


@dataclass(frozen=True)
class Predictions:
    """`predictions.csv` as a DataFrame, with the class labels (in index order) and the task."""

    frame: pd.DataFrame
    classes: Optional[list]  # None for regression
    prob_columns: list  # the prob_<class> column of each class, in class order

    @property
    def is_classification(self) -> bool:
        return self.classes is not None


def class_labels(payload: dict[str, Any]) -> Optional[list[str]]:
    """The payload's class labels in index order; None for regression (one output, float targets)."""
    output = np.asarray(payload["output"])
    names = payload.get("class_names")
    if names is not None and len(names):
        return [str(name) for name in names]
    if np.issubdtype(np.asarray(payload["y_true"]).dtype, np.integer):
        return [str(i) for i in range(max(output.shape[1] if output.ndim == 2 else 1, 2))]
    return None


def prob_columns(classes: Sequence[object], prefix: str = PROB_PREFIX) -> list[str]:
    """``prob_<class>`` column names: characters other than letters, digits, ``_ . -`` become ``_``;
    a name that would repeat one before it gets its class index appended."""
    names, seen = [], set()
    for index, label in enumerate(classes):
        name = prefix + (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_") or str(index))
        if name in seen:
            name = f"{name}_{index}"
        seen.add(name)
        names.append(name)
    return names


def probabilities(output: ArrayLike, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities; a single sigmoid column p of a two-class model is [1 - p, p]."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 1:
        output = output[:, None]
    if output.shape[1] == 1 and n_classes == 2:
        output = np.concatenate([1.0 - output, output], axis=1)
    return output


def _labels_of(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The predicted label of each row (argmax); None where a probability is not finite."""
    finite = np.isfinite(probs).all(axis=1)
    picked = np.asarray(classes, dtype=object)[np.argmax(np.where(finite[:, None], probs, 0.0), axis=1)]
    return np.where(finite, picked, None)


def fold_frame(row: dict[str, Any], payload: dict[str, Any], classes: Sequence[str] | None) -> pd.DataFrame:
    """The rows of one fold: its key (from the fold record's `row`), then the payload's columns."""
    n = len(payload["rows"])
    columns = {"strategy": [str(row["strategy"])] * n, "repeat": np.full(n, int(row["repeat"])),
               "fold": np.full(n, int(row["fold"])), "row": np.asarray(payload["rows"], dtype=np.int64)}
    if payload.get("files") is not None:
        columns["file"] = np.asarray(payload["files"], dtype=object)
    outputs = [("", payload["output"])]
    if payload.get("snapshot_output") is not None:
        outputs.append((SNAPSHOT_PREFIX, payload["snapshot_output"]))
    if classes is None:
        columns["y_true"] = np.asarray(payload["y_true"], dtype=np.float64).ravel()
        for prefix, output in outputs:
            columns[f"{prefix}y_pred"] = np.asarray(output, dtype=np.float32).reshape(n, -1)[:, 0]
        return pd.DataFrame(columns)
    columns["y_true"] = np.asarray(classes, dtype=object)[np.asarray(payload["y_true"], dtype=np.int64).ravel()]
    for prefix, output in outputs:
        probs = probabilities(output, len(classes))
        columns[f"{prefix}y_pred"] = _labels_of(probs, classes)
        columns.update(zip(prob_columns(classes, prefix + PROB_PREFIX), probs.T))
    return pd.DataFrame(columns)


def predictions_table(folds: Iterable[tuple[dict[str, Any], dict[str, Any]]], *,
                      strategies: Sequence[str] | None = None) -> Optional[Predictions]:
    """One row per (strategy, repeat, fold, validation row) from ``[(fold row, payload), ...]``.

    Args:
        folds: iterable of (dict, dict). A fold record's `row` (strategy, repeat, fold)
            and its predictions payload.
        strategies: list of str or None. Row order of the strategies; default: as given.

    Returns:
        Predictions, or None when there is no payload.
    """
    folds = list(folds)
    if not folds:
        return None
    classes = next((class_labels(payload) for _, payload in folds), None)
    frames = [fold_frame(row, payload, classes) for row, payload in folds]
    frame = pd.concat(frames, ignore_index=True)
    order = {name: i for i, name in enumerate(strategies or pd.unique(frame["strategy"]))}
    frame = (frame.assign(_order=frame["strategy"].map(order)).sort_values(["_order", "repeat", "fold"], kind="stable")
             .drop(columns="_order").reset_index(drop=True))
    columns = prob_columns(classes) if classes is not None else []
    return Predictions(frame=frame, classes=classes, prob_columns=columns)


def confusion(frame: pd.DataFrame, classes: Sequence[object]) -> np.ndarray:
    """Counts (true class x predicted class, in the order of `classes`) over the rows of `frame`;
    rows without a prediction (non-finite outputs) are left out."""
    from sklearn.metrics import confusion_matrix

    predicted = frame["y_pred"].notna().to_numpy()
    labels = [str(label) for label in classes]
    return confusion_matrix(frame.loc[predicted, "y_true"].astype(str), frame.loc[predicted, "y_pred"].astype(str),
                            labels=labels)


def confidently_wrong(frame: pd.DataFrame, prob_columns: list[str], n: int = 12) -> pd.DataFrame:
    """The `n` wrong rows of `frame` whose predicted class had the highest probability, most confident
    first, with that probability as ``confidence`` (ties keep the table's order); a data set row
    wrong in several repeats is shown once, at its most confident."""
    wrong = frame[frame["y_pred"].notna() & (frame["y_pred"].astype(str) != frame["y_true"].astype(str))]
    ranked = wrong.assign(confidence=wrong[prob_columns].max(axis=1)).sort_values(
        "confidence", ascending=False, kind="stable")
    return (ranked.drop_duplicates("row") if "row" in ranked else ranked).head(n)
