"""The LR range test (Smith, 2017): train briefly while the learning rate climbs, record the curve.

How the per-batch values are obtained: during a `fit`, Keras reports in its
batch-level logs the running mean of the loss and metrics since the start of
the epoch, which drags the curve towards higher learning rates. The range test
trains with a *custom step*: the model's own `train_step`, preceded by a reset
of the metric states inside the same compiled function. The logs of each batch
are then that batch's loss and metrics exactly, for any metric (means as well
as AUC or precision), at the cost of a few in-graph assignments.

Everything the test changes is put back in a `try/finally`: the model's
variables (weights, normalisation statistics, seed-generator states), the
optimizer's variables (slots, iteration counter, learning-rate variable), its
learning-rate setting (float or schedule), the metric states and the model's
compiled train function.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import kfold_clr.range_test.smoothing as smoothing_lib
from kfold_clr.config.schema import RangeTestConfig
from kfold_clr.data.splits import steps_per_epoch
from kfold_clr.range_test.result import RangeTestResult
from kfold_clr.range_test.suggest import check_method
from kfold_clr.range_test.sweep import LRSweep, check_sweep_args, sweep_values
from kfold_clr.schedules._common import check_choice, check_int

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

_TARGET_EVALUATIONS = 20
DEFAULT_ITERATIONS = 100
"""Sweep length when neither `iterations` nor `epochs` is given: a readable curve whatever the
data size (fastai and Lightning use about 100 updates); small data is cycled through again."""
DEFAULTS = RangeTestConfig()
"""The one set of range-test defaults: the YAML's `range_test:` section, read by `lr_range_test` too."""


# ---------------------------------------------------------------- arguments


def _check_arguments(*, min_lr, max_lr, iterations, epochs, batch_size, mode, monitor, holdout, eval_every,
                     smoothing, beta, window, divergence_threshold, method, seed, verbose):
    check_sweep_args(min_lr, max_lr, 1, mode)
    for name, value in (("iterations", iterations), ("epochs", epochs)):
        if value is not None:
            check_int(name, value, low=1)
    if iterations is not None and epochs is not None:
        raise ValueError(
            f"Pass only one of `iterations` and `epochs`. Received: iterations={iterations!r}, epochs={epochs!r}"
        )
    check_int("batch_size", batch_size, low=1)
    if eval_every is not None:
        check_int("eval_every", eval_every, low=1)
    check_int("seed", seed, low=0)
    check_choice("verbose", verbose, (0, 1, 2))
    if not isinstance(monitor, str):
        raise ValueError(f"Argument `monitor` must be a string. Received: monitor={monitor!r}")
    check_choice("smoothing", smoothing, smoothing_lib.SMOOTHING_METHODS)
    if beta is not None:
        smoothing_lib.check_beta(beta)
    if window is not None:
        smoothing_lib.check_window(window)
    # Not `check_number`: an infinite threshold is allowed (stop only on a NaN/inf loss).
    if (isinstance(divergence_threshold, bool) or not isinstance(divergence_threshold, numbers.Real)
            or not divergence_threshold > 1):
        raise ValueError(
            f"Argument `divergence_threshold` must be > 1. Received: divergence_threshold={divergence_threshold!r}"
        )
    check_method(method)
    if holdout is not None and not isinstance(holdout, tuple):
        if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0 < holdout < 1:
            raise ValueError(
                "Argument `holdout` must be None, a fraction in (0, 1) or an (x_val, y_val) tuple. "
                f"Received: holdout={holdout!r}"
            )
    if isinstance(holdout, tuple) and len(holdout) != 2:
        raise ValueError(f"Argument `holdout` must be an (x_val, y_val) tuple. Received: a tuple of {len(holdout)}")


# ---------------------------------------------------------------- data


def _as_arrays(data: Any) -> Any:
    from kfold_clr.data.images.streaming import is_lazy

    def convert(a):
        if is_lazy(a):  # rows of an image cache: read a batch at a time, never copied whole
            return a
        a = np.asarray(a)
        return a.astype(keras.backend.floatx()) if np.issubdtype(a.dtype, np.floating) else a

    return tf.nest.map_structure(convert, data)


def _num_samples(data: Any, name: str) -> int:
    lengths = {len(a) for a in tf.nest.flatten(data)}
    if len(lengths) != 1:
        raise ValueError(f"All arrays of `{name}` must have the same number of samples. Received: {sorted(lengths)}")
    return lengths.pop()


def _take(data: Any, indices: np.ndarray) -> Any:
    return tf.nest.map_structure(lambda a: a[indices], data)


def _sweep_dataset(x, y, train_indices, *, iterations, batch_size, rng):
    """Batches of (x, y): each epoch a fresh `rng.permutation` of the training indices, `iterations` batches in all."""
    n_train = len(train_indices)
    steps = steps_per_epoch(n_train, batch_size)
    orders, remaining = [], iterations
    while remaining > 0:
        take = min(remaining, steps)
        orders.append(train_indices[rng.permutation(n_train)][: take * batch_size])
        remaining -= take
    from kfold_clr.data.images.streaming import is_lazy, row_batches
    from kfold_clr.data.pipelines import steady_prefetch

    if is_lazy(x):
        return row_batches(x, y, lambda: ((order[start:start + batch_size], None) for order in orders
                                          for start in range(0, len(order), batch_size)))
    batches = [tf.data.Dataset.from_tensor_slices(order).batch(batch_size) for order in orders]
    indices = functools.reduce(lambda a, b: a.concatenate(b), batches)
    xs = tf.nest.map_structure(tf.convert_to_tensor, x)
    ys = tf.nest.map_structure(tf.convert_to_tensor, y)

    def gather(idx):
        return (tf.nest.map_structure(lambda a: tf.gather(a, idx), xs),
                tf.nest.map_structure(lambda a: tf.gather(a, idx), ys))

    return steady_prefetch(indices.map(gather))


# ---------------------------------------------------------------- model state


def _innermost_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


@contextlib.contextmanager
def _preserved_training_state(model: keras.Model) -> Iterator[None]:
    """Restores variables, learning-rate setting, train step and train function on exit, whatever happens."""
    optimizer = model.optimizer
    inner = _innermost_optimizer(optimizer)
    variables = {id(v): v for v in [*model.variables, *optimizer.variables, *model.metrics_variables]}
    values = {key: np.array(v.numpy(), copy=True) for key, v in variables.items()}
    learning_rate = inner._learning_rate
    had_own_train_step = "train_step" in vars(model)
    own_train_step = vars(model).get("train_step")
    attributes = {name: getattr(model, name) for name in ("train_function", "stop_training", "steps_per_execution")}
    try:
        yield
    finally:
        inner._learning_rate = learning_rate
        if had_own_train_step:
            model.train_step = own_train_step
        elif "train_step" in vars(model):
            del model.train_step
        for name, value in attributes.items():
            setattr(model, name, value)
        for key, variable in variables.items():
            variable.assign(values[key])
        for variable in model.metrics_variables:
            if id(variable) not in variables:  # created during the test: start empty, as Keras would
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))


def _build(model: keras.Model, x_probe: Any) -> None:
    if not model.built:
        model(x_probe, training=False)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _log_names(model: keras.Model, x_probe: Any, y_probe: Any) -> list[str]:
    """Names of the batch logs (`loss` first, then the compiled metrics), from one eager probe."""
    logs = model.compute_metrics(x_probe, y_probe, model(x_probe, training=False))
    return ["loss", *(name for name in logs if name != "loss")]


def _install_batch_step(model: keras.Model) -> None:
    """Makes the train step start from empty metric states, so that logs are per batch."""
    train_step = model.train_step

    def batch_train_step(data):
        model.reset_metrics()
        return train_step(data)

    model.train_step = batch_train_step
    model.train_function = None
    model.steps_per_execution = 1


# ---------------------------------------------------------------- recording


class _SweepRecorder(keras.callbacks.Callback):
    """Records each batch's LR and logs, evaluates the holdout, and stops at divergence."""

    def __init__(self, *, lrs, names, smoother, threshold, holdout, eval_every, verbose):
        super().__init__()
        self.lrs = lrs
        self.names = names
        self.smoother = smoother
        self.threshold = threshold
        self.holdout = holdout
        self.eval_every = eval_every
        self.verbose = verbose
        self.rows = []
        self.best = None
        self.diverged_at = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        i = len(self.rows)
        row = {"iteration": i, "lr": float(self.lrs[i])}
        row.update({name: float(logs.get(name, np.nan)) for name in self.names})
        last = i == len(self.lrs) - 1
        smoothed = self.smoother.update(row["loss"])
        if smoothed is not None:
            if smoothing_lib.is_diverged(smoothed, self.best, self.threshold):
                self.diverged_at = i
                self.model.stop_training = True
                if self.verbose:
                    print(f"range test: loss diverged at lr={row['lr']:.3g} (iteration {i}); stopping")
            else:
                self.best = smoothed if self.best is None else min(self.best, smoothed)
        if self.holdout is not None and self.diverged_at is None and (i % self.eval_every == 0 or last):
            scores = self.model.evaluate(self.holdout, verbose=0, return_dict=True)
            row.update({f"holdout_{name}": float(scores.get(name, np.nan)) for name in self.names})
        self.rows.append(row)


def history_frame(rows: list[dict[str, float]], *, names: Sequence[str], holdout: bool, smoothing: str, beta: float,
                  window: int | None, diverged_at: int | None) -> pd.DataFrame:
    history = {"iteration": [r["iteration"] for r in rows], "lr": [r["lr"] for r in rows]}
    lrs = np.asarray(history["lr"], dtype="float64")
    n = len(rows)
    for name in names:
        raw = np.array([r[name] for r in rows], dtype="float64")
        if smoothing == "ema":
            smoothed = smoothing_lib.ema(raw, beta=beta)
        else:
            _, means = smoothing_lib.window_average(lrs, raw, window=window) if n else (None, np.empty(0))
            smoothed = smoothing_lib.broadcast_windows(means, n, window)
        history[name] = raw
        history[f"smoothed_{name}"] = smoothed
    if holdout:
        for name in names:
            history[f"holdout_{name}"] = [r.get(f"holdout_{name}", np.nan) for r in rows]
    history["used"] = np.arange(n) < (n if diverged_at is None else diverged_at)
    return pd.DataFrame(history)


# ---------------------------------------------------------------- the test


def lr_range_test(model: keras.Model, x: Any, y: Any, *, min_lr: float = DEFAULTS.min_lr,
                  max_lr: float = DEFAULTS.max_lr, iterations: int | None = None, epochs: int | None = None,
                  batch_size: int = 32, mode: str = DEFAULTS.mode, monitor: str = DEFAULTS.monitor,
                  holdout: float | tuple[Any, Any] | None = None, eval_every: int | None = None,
                  smoothing: str = DEFAULTS.smoothing, beta: float | None = DEFAULTS.beta, window: int | None = None,
                  divergence_threshold: float = DEFAULTS.divergence_threshold, method: str = DEFAULTS.method,
                  seed: int = 0, verbose: int = 0, callbacks: list[keras.callbacks.Callback] | None = None,
                  ) -> RangeTestResult:
    """Runs an LR range test on a compiled Keras model and returns its curve.

    The defaults are those of the YAML's `range_test:` section (`DEFAULTS`, the config
    model's): 1e-5 to 1.0, exponential, 100 updates, EMA smoothing fitted to the sweep.

    Trains the model for `iterations` batches while the learning rate climbs
    from `min_lr` to `max_lr` (`LRSweep` installed on the optimizer),
    records each batch's learning rate, loss and compiled metrics (the values
    of that batch, not Keras's running mean), optionally evaluates a holdout
    set, and stops when the smoothed loss diverges. The model's weights and the
    optimizer's state are then put back exactly as they were, even when the
    test fails part-way.

    Data order: `rng = np.random.default_rng(seed)`; with a fractional
    `holdout`, `perm = rng.permutation(n)` and the last `round(holdout * n)`
    samples of `perm` are held out; each epoch then visits the training
    samples in the order `train[rng.permutation(n_train)]`.

    Divergence: the test stops when the smoothed loss is NaN/inf or above
    `divergence_threshold` times its best value so far (with window smoothing,
    checked when a window closes). That point and any after it get
    `used=False` and are left out of the suggestions.

    Args:
        model: Compiled Keras 3 model (any optimizer, float or schedule LR).
        x: Array-like (or a list/dict of arrays) of inputs.
        y: Array-like of targets.
        min_lr: Float > 0. First learning rate.
        max_lr: Float > `min_lr`. Last learning rate.
        iterations: Int >= 1. Number of batches; exclusive with `epochs`.
        epochs: Int >= 1. Sweep length in epochs of the training part:
            `iterations = epochs * ceil(n_train / batch_size)`. When neither is
            given, `DEFAULT_ITERATIONS` (100) updates, as many epochs as that takes.
        batch_size: Int >= 1. Samples per batch.
        mode: String. `"exponential"` (log-spaced LRs) or `"linear"`.
        monitor: String. Quantity the suggestions read: `"loss"`, a compiled
            metric (e.g. `"accuracy"`), or `"holdout_loss"` /
            `"holdout_<metric>"` when a holdout is given.
        holdout: None, a float in (0, 1) (share of `(x, y)` held out) or an
            `(x_val, y_val)` tuple, evaluated every `eval_every` iterations.
        eval_every: Int >= 1. Iterations between holdout evaluations (at
            iterations 0, `eval_every`, `2 * eval_every`, ... and the last);
            default: about 20 evaluations over the sweep.
        smoothing: String. `"ema"` (bias-corrected exponential moving
            average) or `"window"` (means over non-overlapping windows).
        beta: Float in (0, 1) or None. EMA weight of the past; None (the default) fits it
            to the sweep length (`smoothing.fitted_beta`: 5% of the sweep, within [0.6, 0.98]).
        window: Int >= 1 or None. Points per window; default about 50 windows.
        divergence_threshold: Float > 1. Stop when the smoothed loss exceeds
            this multiple of its best value.
        method: String. Default suggestion method: one of
            `"regime"`, `"steepest"`, `"valley"`, `"min_div"`.
        seed: Int >= 0. Seed of the data order and of the holdout split.
        verbose: 0, 1 or 2. Keras's progress display; 0 is silent.
        callbacks: List of Keras callbacks or None, called during the sweep.

    Returns:
        A `RangeTestResult`.

    Example:

    ```python
    result = lr_range_test(model, x, y, min_lr=1e-5, max_lr=1.0, epochs=2)
    print(result.summary())
    result.save("results/range_test")
    ```
    """
    _check_arguments(min_lr=min_lr, max_lr=max_lr, iterations=iterations, epochs=epochs, batch_size=batch_size,
                     mode=mode, monitor=monitor, holdout=holdout, eval_every=eval_every, smoothing=smoothing,
                     beta=beta, window=window, divergence_threshold=divergence_threshold, method=method,
                     seed=seed, verbose=verbose)
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError("Argument `model` must be a compiled Keras model; call `model.compile(...)` first.")

    x, y = _as_arrays(x), _as_arrays(y)
    rng = np.random.default_rng(seed)
    train_indices, holdout_data = _holdout_split(x, y, holdout, rng)
    n_train = len(train_indices)
    if iterations is None:
        iterations = epochs * steps_per_epoch(n_train, batch_size) if epochs else DEFAULT_ITERATIONS
    if eval_every is None:
        eval_every = max(1, math.ceil(iterations / _TARGET_EVALUATIONS))
    if smoothing == "window" and window is None:
        window = smoothing_lib.default_window(iterations)
    if beta is None:
        beta = smoothing_lib.fitted_beta(iterations)

    x_probe, y_probe = _take(x, train_indices[:2]), _take(y, train_indices[:2])
    _build(model, x_probe)
    settings = {
        "min_lr": min_lr, "max_lr": max_lr, "iterations": iterations, "epochs": epochs, "batch_size": batch_size,
        "mode": mode, "monitor": monitor,
        "holdout": holdout if holdout is None or not isinstance(holdout, tuple) else "(x_val, y_val)",
        "eval_every": eval_every if holdout is not None else None, "smoothing": smoothing, "beta": beta,
        "window": window, "divergence_threshold": divergence_threshold, "method": method, "seed": seed,
        "n_train": n_train, "n_holdout": 0 if holdout_data is None else _num_samples(holdout_data[1], "y_val"),
    }

    with _preserved_training_state(model):
        names = _log_names(model, x_probe, y_probe)
        valid = names + ([f"holdout_{name}" for name in names] if holdout_data is not None else [])
        if monitor not in valid:
            raise ValueError(f"Argument `monitor` must be one of {valid}. Received: monitor={monitor!r}")
        recorder = _sweep(model, x, y, train_indices, holdout_data, names, settings, rng=rng, verbose=verbose,
                          callbacks=callbacks)
    history = history_frame(recorder.rows, names=names, holdout=holdout_data is not None, smoothing=smoothing,
                             beta=beta, window=window, diverged_at=recorder.diverged_at)
    return RangeTestResult(history, settings, monitor=monitor)


def _holdout_split(x: Any, y: Any, holdout: float | tuple | None, rng: np.random.Generator) -> tuple:
    """(training row indices, holdout arrays or None): a fractional `holdout` takes the last rows of
    `rng.permutation(n)`; an `(x_val, y_val)` tuple is used as it is."""
    n = _num_samples(x, "x")
    if _num_samples(y, "y") != n:
        raise ValueError(f"`x` and `y` must have the same number of samples. Received: {n} and {_num_samples(y, 'y')}")
    if isinstance(holdout, tuple):
        return np.arange(n), tuple(_as_arrays(part) for part in holdout)
    if holdout is None:
        return np.arange(n), None
    n_holdout = int(round(holdout * n))
    if not 1 <= n_holdout < n:
        raise ValueError(
            f"Argument `holdout` leaves no sample on one side: {n_holdout} of {n} held out. "
            f"Received: holdout={holdout!r}"
        )
    perm = rng.permutation(n)
    return perm[: n - n_holdout], (_take(x, perm[n - n_holdout:]), _take(y, perm[n - n_holdout:]))


def _sweep(model, x, y, train_indices, holdout_data, names, settings, *, rng, verbose, callbacks):
    """Train through the sweep of `settings` (the LR installed on the optimizer, a step per batch)
    and return the recorder of its rows."""
    holdout_ds = None
    if holdout_data is not None:
        holdout_ds = tf.data.Dataset.from_tensor_slices(holdout_data).batch(settings["batch_size"]).cache()
    min_lr, max_lr, iterations, mode = (settings[key] for key in ("min_lr", "max_lr", "iterations", "mode"))
    recorder = _SweepRecorder(
        lrs=sweep_values(min_lr, max_lr, iterations, mode=mode),
        names=names,
        smoother=smoothing_lib.OnlineSmoother(smoothing=settings["smoothing"], beta=settings["beta"],
                                              window=settings["window"] or 1),
        threshold=settings["divergence_threshold"],
        holdout=holdout_ds,
        eval_every=settings["eval_every"],
        verbose=verbose,
    )
    inner = _innermost_optimizer(model.optimizer)
    inner._learning_rate = LRSweep(min_lr, max_lr, iterations, mode=mode)
    inner.iterations.assign(0)
    _install_batch_step(model)
    dataset = _sweep_dataset(x, y, train_indices, iterations=iterations, batch_size=settings["batch_size"], rng=rng)
    model.fit(dataset, epochs=1, shuffle=False, verbose=verbose, callbacks=[recorder, *(callbacks or [])])
    return recorder


