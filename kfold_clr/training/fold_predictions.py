"""What a trained fold predicted for its validation rows: the `predictions` payload of its record.

Both trainers (`kfold_clr.training.trainer.train_fold`, `kfold_clr.training.fused.train_fused`) attach it to every
fold that finished without diverging; the store saves it beside the record and the report reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.data.datasets import FoldPreprocessor

if TYPE_CHECKING:
    import keras

    from kfold_clr.config import DataConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.data.images.streaming import PixelRows
    from kfold_clr.data.splits import Split


def predict(model: keras.Model, x: np.ndarray | PixelRows, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs on `x` in inference mode, a batch at a time, through Keras's compiled
    `predict` (traced once per model): float32 (rows, outputs). Rows of an image cache
    (`PixelRows`) are read (and scaled) a batch at a time."""
    from kfold_clr.data.images.streaming import is_lazy, row_batches

    if len(x) == 0:
        return np.zeros((0, int(np.prod(model.output_shape[1:]))), dtype=np.float32)
    if is_lazy(x):
        batches = lambda: ((np.arange(start, min(start + batch_size, len(x))), None)  # noqa: E731
                           for start in range(0, len(x), batch_size))
        inputs = row_batches(x, np.zeros(len(x), dtype=np.float32), batches)
        output = model.predict(inputs, verbose=0)
    else:
        output = model.predict(np.asarray(x), batch_size=batch_size, verbose=0)
    return np.asarray(output).reshape(len(x), -1).astype(np.float32)


def payload(dataset: Dataset, split: Split, data_cfg: DataConfig, output: np.ndarray,
            snapshot_output: np.ndarray | None = None) -> dict:
    """The validation rows' dataset indices, targets and predictions, in the data's own units.

    Args:
        dataset: Dataset.
        split: Split. The fold (its `val` rows were predicted).
        data_cfg: DataConfig. How the fold's preprocessor scaled the target (regression).
        output: array (n_val, n_outputs). The final model's predictions, as the model gives them
            (probabilities for classification; a scaled target for regression).
        snapshot_output: array or None. The snapshot ensemble's mean prediction.

    Returns:
        dict: rows (int64), y_true (class indices, or the unscaled target), output and
        snapshot_output (float32 (n_val, n_outputs); regression: in the target's units), and
        files (the image files of the rows) when the data set has them.
    """
    rows = np.asarray(split.val, dtype=np.int64)
    unscale = _target_units(dataset, split, data_cfg)
    found = {"rows": rows, "y_true": np.asarray(dataset.y[rows]), "output": unscale(output)}
    if snapshot_output is not None:
        found["snapshot_output"] = unscale(snapshot_output)
    if dataset.files is not None:
        found["files"] = [str(dataset.files[row]) for row in rows]
    if dataset.class_names is not None:
        found["class_names"] = [str(name) for name in dataset.class_names]
    return found


def _target_units(dataset: Dataset, split: Split, data_cfg: DataConfig) -> Callable[[np.ndarray], np.ndarray]:
    """A function from the model's output to the target's units: the inverse of the fold
    preprocessor's target scaling (fitted, as it is, on the fold's training rows)."""
    if dataset.task != "regression":
        return lambda values: np.asarray(values, dtype=np.float32).reshape(len(split.val), -1)
    fitted = FoldPreprocessor(scale="none", scale_target=data_cfg.scale_target, task=dataset.task)
    fitted.fit(None, dataset.y[split.train])
    return lambda values: (np.asarray(values, dtype=np.float64).reshape(len(split.val), -1) * fitted.y_std_
                           + fitted.y_mean_).astype(np.float32)
