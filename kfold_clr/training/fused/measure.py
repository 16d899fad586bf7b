"""Which training path is faster on this machine: a few timed steps of the fused model against
one fold's Keras model (`execution.fused_folds: auto` on runs large enough to be worth asking).

Fused and sequential training give the same numbers; only the time differs. A stacked model of
k branches usually beats k folds one at a time (one call, one trace, wider kernels), but on a
few cores a heavy CNN's k convolutions cost what they cost one fold at a time, and the stacked
model's longer trace can decide: `auto` predicts both paths' training time from the timed steps,
the traces and what a fold costs to start, and trains the way predicted faster. The timed steps
run on inputs of the real shape and batch size (random
values from a private generator: a step's cost does not depend on them) with a learning rate of
0; Python's and NumPy's random states are put back and every fold reseeds Keras, so no number
of the run changes.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset

STEPS = 4  # timed steps per path, after one step that traces
LONG_STEP = 0.1  # seconds: a fused step this long is timed once (a clock reads it to well under 1 %)
MEASURE_ABOVE = 1e9  # values the whole run computes (rows x epochs x folds x `values_per_sample`); below: not timed


@dataclasses.dataclass(frozen=True)
class Timing:
    """What training `branches` folds costs each way, from a few timed steps of each path.

    `fused_step`: seconds per step of the stacked model (all branches at once); `fold_step`: per
    step of one fold's Keras model; `steps`: the updates each fold makes in the run (all epochs);
    `fused_trace` / `fold_trace`: the one-off cost of tracing each path's train step (a fused model
    traces once per group; the folds share one traced model); `fold_start`: what every fold pays
    besides its steps when trained on its own (a `fit` call starting up). The steps dominate long
    runs; the one-off costs decide short ones.
    """

    fused_step: float
    fold_step: float
    branches: int
    steps: int = 1
    fused_trace: float = 0.0
    fold_trace: float = 0.0
    fold_start: float = 0.0

    @property
    def fused_seconds(self) -> float:
        """Predicted seconds to train the `branches` folds as one fused model."""
        return self.fused_trace + self.steps * self.fused_step

    @property
    def sequential_seconds(self) -> float:
        """Predicted seconds to train the same folds one at a time."""
        return self.fold_trace + self.branches * (self.steps * self.fold_step + self.fold_start)

    @property
    def fused_faster(self) -> bool:
        """Fused unless its predicted time exceeds that of the folds one at a time."""
        return self.fused_seconds <= self.sequential_seconds

    def note(self) -> str:
        """A line for the log: what was measured, the predicted times and the path chosen."""
        measured = (f"measured {_ms(self.fused_step)} per fused step of {self.branches} folds vs "
                    f"{_ms(self.fold_step)} per step of one fold; predicted {_seconds(self.fused_seconds)} fused vs "
                    f"{_seconds(self.sequential_seconds)} fold by fold for {self.steps:,} steps")
        return f"{measured}: training {'fused' if self.fused_faster else 'fold by fold'}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def _ms(seconds: float) -> str:
    milliseconds = seconds * 1e3
    return f"{milliseconds:.0f} ms" if milliseconds >= 10 else f"{milliseconds:.2g} ms"


def values_per_sample(template: keras.Model) -> float:
    """A rough count of the values one training sample computes (weights + layer outputs): times the
    run's rows x epochs x folds, the run's work, which `MEASURE_ABOVE` compares (tiny runs, tests and
    examples, are not worth timing)."""
    from kfold_clr.data.memory import layer_output_sizes

    weights = sum(int(np.prod(v.shape)) for v in template.trainable_variables)
    return float(weights + sum(layer_output_sizes(template)))


def _inputs(dataset: Dataset, input_shape: Sequence[int], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the real shape: random inputs (a private generator), the dataset's first labels."""
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape)).astype("float32")
    labels = np.asarray(dataset.y)
    return x, labels[np.arange(batch_size) % len(labels)]


def _fused_step(build: Callable[[], keras.Model], config: ExperimentConfig, x: np.ndarray, y: np.ndarray,
                branches: int, steps: int) -> tuple[float, float]:
    """Seconds per step of a stacked model of `branches` copies of the model, all on batch x, y,
    and seconds its tracing took. A step of `LONG_STEP` or more is timed once: more steps would
    add seconds (a heavy CNN's fused step on a few cores) without changing the choice."""
    from kfold_clr.training.fused.model import StackedModel
    from kfold_clr.training.fused.support import loss_function

    template = build()
    state = ([v.numpy() for v in template.trainable_variables], [v.numpy() for v in template.non_trainable_variables])
    model = StackedModel(template, [state] * branches, config.training.optimizer,
                         loss_function(config.training.loss), [], np.zeros((branches, steps + 1), "float32"))
    index = np.tile(np.arange(len(x), dtype="int32"), (steps, branches, 1))
    active, numbers = np.ones((steps, branches), bool), np.zeros((steps, branches), "int32")
    started = time.perf_counter()
    model.train_steps(x, y, index[:1], active[:1], numbers[:1]).numpy()  # traces
    traced = time.perf_counter()
    model.train_steps(x, y, index[:1], active[:1], numbers[:1]).numpy()  # one step, no trace
    step = time.perf_counter() - traced
    if step < LONG_STEP:  # short steps: `steps` of them in one call, as the run makes them
        timed = time.perf_counter()
        model.train_steps(x, y, index, active, numbers).numpy()
        step = (time.perf_counter() - timed) / steps
    return step, max(traced - started - step, 0.0)


def _fold_step(build: Callable[[], keras.Model], config: ExperimentConfig, x: np.ndarray, y: np.ndarray,
               steps: int) -> tuple[float, float, float]:
    """Seconds per step of one fold's Keras model in `fit`, as the sequential trainer runs it, the
    seconds its tracing took, and the seconds a further `fit` call costs besides its steps."""
    import keras
    import tensorflow as tf

    from kfold_clr.training.models import compile_model, make_optimizer

    model = build()
    compile_model(model, make_optimizer(config.training.optimizer, 0.0), loss=config.training.loss, metrics=[],
                  steps_per_execution=steps)
    started = []  # wall clock at each epoch's start; epoch 1 traces, epoch 2 is timed
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: started.append(time.perf_counter()))
    batches = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(batches, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[timer])
    step = (started[-1] - started[-2]) / steps
    trace = max(started[1] - started[0] - step * steps, 0.0)
    began = time.perf_counter()  # a fold's own fit: its pipeline, callbacks and one step
    model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return step, trace, max(time.perf_counter() - began - step, 0.0)


def time_paths(config: ExperimentConfig, dataset: Dataset, input_shape: Sequence[int], branches: int, *,
               run_steps: int = 1, steps: int = STEPS) -> Timing:
    """What training `branches` folds of `run_steps` updates each costs each way: a fused model of
    `branches` folds and one fold's model, each timed over `steps` steps after one that traces,
    with the run's model, optimizer, loss (`config` as `preflight.prepare` returns it: the task's
    default loss filled in) and batch size.
    Python's and NumPy's global random states are left as they were (Keras's are reseeded per fold)."""
    import keras

    from kfold_clr.training.models import build_model

    def build() -> keras.Model:
        keras.backend.clear_session(free_memory=False)
        return build_model(config.model, input_shape=tuple(input_shape), n_outputs=dataset.n_outputs,
                           task=dataset.task)

    saved = random.getstate(), np.random.get_state()
    x, y = _inputs(dataset, input_shape, config.training.batch_size)
    try:
        fused_step, fused_trace = _fused_step(build, config, x, y, branches, steps)
        fold_step, fold_trace, fold_start = _fold_step(build, config, x, y, steps)
    finally:
        keras.backend.clear_session(free_memory=False)
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return Timing(fused_step, fold_step, branches, steps=int(run_steps), fused_trace=fused_trace,
                  fold_trace=fold_trace, fold_start=fold_start)
