"""The fold trainer: train one strategy on one (repeat, fold) and return a plain record.

A record (`kfold_clr.training.fold_record`) is a dict with the `folds.csv` row (`row`), the per-epoch
history (`history`), the subsampled LR trace (`lr`) and, in memory only, the final
weights (`weights`) for strategies that carry them to the next fold. A fold that
diverges is stopped and recorded as diverged; an exception is recorded as failed
by the caller.
"""

from __future__ import annotations

import collections
import collections.abc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Union

import keras
import numpy as np

from kfold_clr.data.datasets import FoldPreprocessor
from kfold_clr.training import fold_predictions, validation_pass
from kfold_clr.training.fold_checkpoint import FoldCheckpoint, load_variables
from kfold_clr.training.fold_plans import batch_order, momentum_callback
from kfold_clr.training.fold_record import Snapshots, epoch_lr, trained_record, update_row
from kfold_clr.training.model_pool import MODEL_POOL, LearningRateTable, ModelPool  # noqa: F401  (their old import path)
from kfold_clr.training.models import build_model, compile_model, make_optimizer, reset_optimizer

# Updates per call into the compiled train step when no callback acts between batches:
# the numbers are the same as one update per call, without the per-call overhead.
STEPS_PER_EXECUTION = 64

if TYPE_CHECKING:
    import tensorflow as tf

    from kfold_clr.config import DataConfig, ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.data.images.streaming import PixelRows
    from kfold_clr.data.splits import Split
    from kfold_clr.storage.checkpoints import Checkpointer
    from kfold_clr.training.fold_plans import FoldPlan, FoldSpec

    Features = Union[np.ndarray, PixelRows]  # a fold's x: an array, or rows of an image cache
    FoldData = tuple[Features, np.ndarray, Features, np.ndarray]  # (x_train, y_train, x_val, y_val)


class DivergenceStop(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose loss is NaN or infinite."""

    def __init__(self) -> None:
        super().__init__()
        self.diverged_epoch = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.diverged_epoch = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged_epoch = epoch + 1
            self.model.stop_training = True


class SnapshotCollector(keras.callbacks.Callback):
    """Keeps the weights of the last `keep` cycle ends (snapshot ensembles, Huang et al. 2017).

    Args:
        capture_at: iterable of int. Update counts after which a cycle has ended
            (`kfold_clr.training.fold_plans.cycle_end_updates`).
        keep: int. How many of the latest snapshots to keep.
    """

    def __init__(self, capture_at: Iterable[int], keep: int) -> None:
        super().__init__()
        self.capture_at, self.keep = frozenset(capture_at), keep
        self.snapshots, self.captured_at = collections.deque(maxlen=keep), []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.snapshots.clear()
        self.captured_at = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step in self.capture_at:
            self.snapshots.append(self.model.get_weights())
            self.captured_at.append(step)


def evaluate_ensemble(model: keras.Model, snapshots: Sequence[list[np.ndarray]], x: Features, y: np.ndarray, *,
                      batch_size: int = 256,
                      return_mean: bool = False) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Scores of the mean prediction of `snapshots` (lists of weights) on (x, y) (and that mean,
    `return_mean`).

    Mean of predicted probabilities for classification, mean prediction for
    regression; the loss and the compiled metrics are computed on that mean. The loss
    has the terms Keras's `evaluate` adds to the model's: the mean of the members'
    regularisation penalties (`model.losses`), so one snapshot equal to the final
    weights scores exactly as the final model does. The model's own weights are
    restored afterwards.

    ```
    loss = mean_i loss(y_i, mean_s p_s(x_i)) + mean_s sum(model.losses with weights s)
    ```
    """
    final = model.get_weights()
    try:
        total, penalty = None, 0.0
        for weights in snapshots:
            model.set_weights(weights)
            prediction = fold_predictions.predict(model, x, batch_size=batch_size)
            total = prediction if total is None else total + prediction
            penalty += _regularisation_penalty(model)
        mean = total / len(snapshots)
    finally:
        model.set_weights(final)
    loss = keras.losses.get(model.loss)
    data_loss = float(np.mean(keras.ops.convert_to_numpy(loss(y, mean))))
    scores = {"loss": data_loss + penalty / len(snapshots)}
    model.reset_metrics()
    for name, value in model.compute_metrics(x, y, mean, sample_weight=None).items():
        if name != "loss":
            scores[name] = float(keras.ops.convert_to_numpy(value))
    model.reset_metrics()
    return (scores, mean) if return_mean else scores


def _regularisation_penalty(model: keras.Model) -> float:
    """The sum of the model's regularisation losses at its current weights (0 without any)."""
    return float(sum(float(keras.ops.convert_to_numpy(term)) for term in model.losses))


class EpochProgress(keras.callbacks.Callback):
    """Forwards (epoch, logs) to a progress reporter after every epoch, with the LR in `logs["lr"]`.

    Args:
        report: callable(epoch, logs).
        lrs: array. The LR of every update of the fold.
        steps_per_epoch: int.
    """

    def __init__(self, report: Callable[[int, dict], object], lrs: np.ndarray, steps_per_epoch: int) -> None:
        super().__init__()
        self.report, self.lrs, self.steps_per_epoch = report, lrs, steps_per_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.report(epoch + 1, {"lr": epoch_lr(self.lrs, epoch + 1, self.steps_per_epoch), **(logs or {})})


def prepare_fold(dataset: Dataset, split: Split, data_cfg: DataConfig) -> FoldData:
    """Scaled (x_train, y_train, x_val, y_val) with scaling fitted on the training split only.

    For an image cache, x_train and x_val are `PixelRows` (`kfold_clr.data.images.streaming`): rows
    read from the memory-mapped pixels when a batch needs them, scaled per channel; no copy.
    """
    from kfold_clr.data.images.streaming import image_fold, is_pixels

    if is_pixels(dataset.x):
        return image_fold(dataset, split, data_cfg)
    preprocessor = FoldPreprocessor(scale=data_cfg.scale, scale_target=data_cfg.scale_target,
                                    task=dataset.task, image_shape=data_cfg.image_shape)
    x_train, y_train = preprocessor.fit_transform(dataset.x[split.train], dataset.y[split.train])
    x_val, y_val = preprocessor.transform(dataset.x[split.val], dataset.y[split.val])
    return x_train, y_train, x_val, y_val


class PreparedFolds(collections.abc.Mapping):
    """`split.key -> prepare_fold(...)` for the given splits, computed when read and not kept:
    a fused job copies each fold into its tables and never holds every fold's arrays at once
    (an image fold is rows of the memory-mapped cache, read a batch at a time, never copied)."""

    def __init__(self, dataset: Dataset, splits: Iterable[Split], data_cfg: DataConfig) -> None:
        self._dataset, self._data_cfg = dataset, data_cfg
        self._splits = {split.key: split for split in splits}

    def __getitem__(self, key: str) -> FoldData:
        return prepare_fold(self._dataset, self._splits[key], self._data_cfg)

    def __contains__(self, key: object) -> bool:
        return key in self._splits

    def __iter__(self) -> Iterator[str]:
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)


def initial_model(config: ExperimentConfig, dataset: Dataset, plan: FoldPlan,
                  input_shape: Sequence[int]) -> keras.Model:
    """A fresh model with the (repeat, fold)'s initial weights: same for every strategy.

    Keras's session is reset without a full garbage collection (a quarter of a second
    per call); Python's own collector keeps memory flat, as benchmarks/bench_kfold.py
    measures over 50 folds.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(plan.seed)
    return build_model(config.model, input_shape=input_shape, n_outputs=dataset.n_outputs,
                       task=dataset.task)


def _restored_model(config, dataset, spec, input_shape, initial_weights, steps_per_execution):
    """The pooled model in exactly the state a freshly built one would start the fold in."""
    fresh = initial_model(config, dataset, spec.plan, input_shape)
    model, table = MODEL_POOL.model(config, dataset, spec, input_shape, steps_per_execution)
    if len(model.variables) != len(fresh.variables):
        raise RuntimeError("pooled model does not match the architecture")
    for target, source in zip(model.variables, fresh.variables):
        target.assign(source)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    reset_optimizer(model.optimizer)
    model.reset_metrics()
    table.load(spec.lrs)
    return model


def batches(x: Features, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """A tf.data pipeline of (x, y) batches in order (evaluation).

    Keras's own adapter for NumPy arrays costs about 20 ms to start every epoch's iterator
    (more than the epoch's training on small data); this pipeline starts in under 1 ms.
    Rows of an image cache (`PixelRows`) are read a batch at a time.
    """
    import tensorflow as tf

    from kfold_clr.data.images.streaming import is_lazy, row_batches
    from kfold_clr.data.pipelines import steady_prefetch

    if is_lazy(x):
        return row_batches(x, y, lambda: ((np.arange(start, min(start + batch_size, len(x))), None)
                                          for start in range(0, len(x), batch_size)))
    return steady_prefetch(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size))


def training_batches(x: Features, y: np.ndarray, batch_size: int, *, order: np.ndarray, seed: int = 0,
                     first_epoch: int = 0) -> tf.data.Dataset:
    """A tf.data pipeline of every epoch's training batches: epoch e walks `x[order[e]]` in
    consecutive batches, the last one partial (`batch_order`, the fused path's batches too);
    `order` starts at epoch `first_epoch` (a resumed fold's).

    Fit it with `steps_per_epoch = ceil(len(x) / batch_size)`: Keras then reads one
    iterator across epochs. Rows of an image cache (`PixelRows`) are read a batch at a time,
    and batch j of epoch e augmented with the key `(seed, e, j)` (the fold's batch seed: the
    same images for every strategy, as the fused trainer draws them).
    """
    import tensorflow as tf

    from kfold_clr.data.images.streaming import is_lazy, row_batches
    from kfold_clr.data.pipelines import steady_prefetch

    if is_lazy(x):
        return row_batches(x, y, lambda: ((permutation[start:start + batch_size], (seed, epoch, start // batch_size))
                                          for epoch, permutation in enumerate(order, start=first_epoch)
                                          for start in range(0, len(permutation), batch_size)))
    features, targets = tf.constant(x), tf.constant(y)
    epochs = tf.data.Dataset.from_tensor_slices(np.asarray(order, dtype="int64"))
    rows = epochs.flat_map(lambda permutation: tf.data.Dataset.from_tensor_slices(permutation).batch(batch_size))
    return steady_prefetch(rows.map(lambda index: (tf.gather(features, index), tf.gather(targets, index))))


def execution_steps(steps_per_epoch: int, most: int | None = None) -> int:
    """Updates per call into the compiled train step: the largest divisor of an epoch's steps
    up to `most` (`STEPS_PER_EXECUTION`), so that no call runs across the end of an epoch."""
    most = STEPS_PER_EXECUTION if most is None else most
    return max(d for d in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def _final_scores(model, x, y, batch_size):
    values = model.evaluate(batches(x, y, max(batch_size, 256)), verbose=0, return_dict=True)
    return {name: float(value) for name, value in values.items()}


def _final_validation(model, x_val, y_val, training, epoch_logs, validator):
    """The final weights' validation scores and outputs: the last epoch's when its pass saw the
    final weights (its outputs kept by `validator`, a `ValidationPass`), else a pass of their own."""
    restored = training.early_stopping is not None and training.early_stopping.restore_best_weights
    if not restored and validator is not None and validator.outputs is not None:
        return _validation_scores(epoch_logs[-1]), validator.outputs
    if validator is not None:  # restored weights, or a resumed fold with no epoch left to train
        return validation_pass.score(model, validator.data)
    scores = _final_scores(model, x_val, y_val, training.batch_size) if restored else _validation_scores(epoch_logs[-1])
    return scores, fold_predictions.predict(model, x_val)


def _validation_scores(logs):
    """An epoch's `val_<metric>` logs as {metric: value}."""
    return {name[len("val_"):]: value for name, value in logs.items() if name.startswith("val_")}


def train_fold(config: ExperimentConfig, dataset: Dataset, spec: FoldSpec, *, fold_data: FoldData | None = None,
               initial_weights: list[np.ndarray] | None = None,
               progress: Callable[[FoldPlan, int, dict], object] | None = None, keep_weights: bool = False,
               snapshot_store: Callable[[FoldPlan, list[list[np.ndarray]]], object] | None = None,
               reuse: bool = True, checkpoint: Checkpointer | None = None) -> dict:
    """Train one strategy on one fold, as its FoldSpec says.

    Args:
        config: ExperimentConfig.
        dataset: Dataset.
        spec: FoldSpec (`kfold_clr.training.fold_plans.fold_spec`).
        fold_data: tuple (x_train, y_train, x_val, y_val) already preprocessed, or None.
        initial_weights: list of arrays (carried weights), or None for the fold's fresh init.
        progress: callable(plan, epoch, logs) or None. Called after every epoch.
        keep_weights: bool. Put the final weights in the record (for carry_weights).
        snapshot_store: callable(plan, list of weight lists) or None. Saves snapshot weights
            to disk when the strategy asks for `snapshots.save_weights`.
        reuse: bool. Restore a pooled compiled model (`ModelPool`) instead of building and
            tracing a new one (not with cyclical momentum, which rebuilds its train step).
        checkpoint: kfold_clr.storage.checkpoints.Checkpointer or None. Saves the fold's state at epoch
            ends (`FoldCheckpoint`); the fold goes on from its `saved_state` when there is one.

    Returns:
        dict with keys row, history, lr and, for a fold that did not diverge, predictions
        (`kfold_clr.training.fold_predictions.payload`) (and weights when asked).
    """
    plan, training = spec.plan, config.training
    x_train, y_train, x_val, y_val = fold_data or prepare_fold(dataset, plan.split, config.data)
    saved = checkpoint.saved_state if checkpoint is not None else None
    model, callbacks, stateful = _fold_model(config, dataset, spec, x_train.shape[1:], initial_weights, progress,
                                             reuse=reuse)
    if saved is not None:
        load_variables(model, saved)
    first = 0 if saved is None else int(saved["epochs"])
    started, before = time.perf_counter(), 0.0 if saved is None else float(saved["seconds"])
    tracker = FoldCheckpoint(checkpoint, saved, stateful, lambda: before + time.perf_counter() - started)
    callbacks.append(tracker)  # last: it sees the epoch as the other callbacks left it

    validation = batches(x_val, y_val, max(training.batch_size, 256))  # read anew by every pass
    validator = validation_pass.ValidationPass(validation) if validation_pass.supported(model) else None
    if validator is not None:  # scores and predictions in one pass (Keras's numbers)
        callbacks.insert(0, validator)  # first: every other callback sees val_<metric>

    keras.utils.set_random_seed(spec.batch_seed)  # data order and dropout: same for every strategy
    order = batch_order(spec.batch_seed, len(x_train), epochs=plan.epochs)
    stopped = saved is not None and saved["stopped"]  # saved as the fold ended: nothing left to train
    model.fit(training_batches(x_train, y_train, training.batch_size, order=order[first:], seed=spec.batch_seed,
                               first_epoch=first),
              epochs=first if stopped else plan.epochs, initial_epoch=first,
              steps_per_epoch=plan.steps_per_epoch, shuffle=False, verbose=0, callbacks=callbacks,
              validation_data=validation if validator is None else None)
    fit_seconds = before + time.perf_counter() - started
    return _fold_result(config, dataset, spec, model, (x_train, y_train, x_val, y_val), tracker.logs, stateful,
                        fit_seconds=fit_seconds, keep_weights=keep_weights, snapshot_store=snapshot_store,
                        validator=validator)


def _fold_model(config, dataset, spec, input_shape, initial_weights, progress, *, reuse=True):
    """The fold's compiled model in its initial state, its callbacks, and the stateful ones by name."""
    plan, training = spec.plan, config.training
    momentum = momentum_callback(spec)
    # Snapshot capture acts between batches: one update per call for it (cyclical momentum is in the graph).
    steps_per_execution = 1 if spec.per_batch_callbacks else execution_steps(plan.steps_per_epoch)
    if reuse and momentum is None:
        model = _restored_model(config, dataset, spec, input_shape, initial_weights, steps_per_execution)
    else:
        model = initial_model(config, dataset, plan, input_shape)
        if initial_weights is not None:
            model.set_weights(initial_weights)
        model = compile_model(model, make_optimizer(spec.optimizer, spec.learning_rate), loss=spec.loss,
                              metrics=spec.metrics, steps_per_execution=steps_per_execution)
    stateful = {"divergence": DivergenceStop()}
    callbacks = [stateful["divergence"]] + ([momentum] if momentum is not None else [])
    if training.early_stopping is not None:
        stop = training.early_stopping
        stateful["stopping"] = keras.callbacks.EarlyStopping(
            monitor=stop.monitor, patience=stop.patience, restore_best_weights=stop.restore_best_weights)
        callbacks.append(stateful["stopping"])
    if spec.snapshot_keep is not None:
        stateful["snapshots"] = SnapshotCollector(spec.snapshot_at, spec.snapshot_keep)
        callbacks.append(stateful["snapshots"])
    if progress is not None:
        callbacks.append(EpochProgress(lambda epoch, logs: progress(plan, epoch, logs), spec.lrs,
                                       plan.steps_per_epoch))
    return model, callbacks, stateful


def _fold_result(config, dataset, spec, model, data, epoch_logs, stateful, *, fit_seconds, keep_weights,
                 snapshot_store, validator=None):
    """The record of a fold whose training has ended: final scores, snapshots and predictions."""
    plan, training = spec.plan, config.training
    x_train, y_train, x_val, y_val = data
    divergence, collector = stateful["divergence"], stateful.get("snapshots")
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    lrs = spec.lrs[:max(iterations, 1)]
    diverged = divergence.diverged_epoch is not None
    train_scores = val_scores = outputs = None
    if not diverged:
        val_scores, outputs = _final_validation(model, x_val, y_val, training, epoch_logs, validator)
        train_scores = (_final_scores(model, x_train, y_train, training.batch_size) if training.train_scores
                        else dict.fromkeys(val_scores, math.nan))  # not scored: empty train_<metric> columns
    epoch_logs = [{name: float(value) for name, value in logs.items() if name != "learning_rate"}
                  for logs in epoch_logs]
    record = trained_record(spec, iterations=iterations, lrs=lrs, fit_seconds=fit_seconds,
                            diverged_epoch=divergence.diverged_epoch, train_scores=train_scores,
                            val_scores=val_scores, epoch_logs=epoch_logs)
    ensemble, ensemble_mean = {}, None
    if collector is not None:
        if collector.snapshots and not diverged:
            ensemble, ensemble_mean = evaluate_ensemble(model, list(collector.snapshots), x_val, y_val,
                                                        return_mean=True)
            if spec.save_snapshots and snapshot_store is not None:
                snapshot_store(plan, list(collector.snapshots))
        update_row(record, snapshots=Snapshots(len(collector.snapshots),
                                               tuple(collector.captured_at[-spec.snapshot_keep:]), ensemble))
    if not diverged:
        record["predictions"] = fold_predictions.payload(dataset, plan.split, config.data, outputs, ensemble_mean)
    if keep_weights:
        record["weights"] = model.get_weights()
    return record
