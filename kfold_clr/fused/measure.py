"""Which training path is faster on this machine: a few timed steps of the fused model against
one fold's Keras model (`execution.fused_folds: auto` on runs large enough to be worth asking).

Fused and sequential training give the same numbers; only the time differs. A stacked model of
k branches usually beats k folds one at a time (one call, one trace, wider kernels), but on a
few cores a heavy CNN can run its k grouped convolutions slower than k plain ones: then `auto`
trains fold by fold. The timed steps run on inputs of the real shape and batch size (random
values from a private generator: a step's cost does not depend on them) with a learning rate of
0; Python's and NumPy's random states are put back and every fold reseeds Keras, so no number
of the run changes.
"""

import dataclasses
import random
import time

import numpy as np

STEPS = 4  # timed steps per path, after one step that traces
# Fused is kept unless its steps cost more than twice those of the folds one at a time: the step
# timing does not see what a sequential fold pays besides its steps (its data, model restore and
# evaluation), and timing noise must not flip the path: on a small CNN over images a fused step
# of several folds measured slower than the folds' steps one at a time while the whole fused run
# was faster (the run's log prints both step times; bench_images.py times whole runs).
FUSED_MARGIN = 2.0
MEASURE_ABOVE = 1e9  # values the whole run computes (rows x epochs x folds x `values_per_sample`); below: not timed


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per training step of the stacked model (all `branches` at once) and of one fold's model."""

    fused_step: float
    fold_step: float
    branches: int

    @property
    def fused_faster(self) -> bool:
        """Fused unless its step costs more than `FUSED_MARGIN` times the folds' steps one at a time."""
        return self.fused_step <= FUSED_MARGIN * self.branches * self.fold_step

    def note(self) -> str:
        """A line for the log: what was measured and which path it chose."""
        measured = (f"measured {_ms(self.fused_step)} per fused step of {self.branches} folds vs "
                    f"{_ms(self.fold_step)} per step of one fold (x {self.branches} = "
                    f"{_ms(self.branches * self.fold_step)})")
        if not self.fused_faster:
            return f"{measured}: training fold by fold"
        if self.fused_step > self.branches * self.fold_step:
            return f"{measured}: training fused (not over {FUSED_MARGIN:g}x slower; a fold costs more than its steps)"
        return f"{measured}: training fused"


def _ms(seconds) -> str:
    milliseconds = seconds * 1e3
    return f"{milliseconds:.0f} ms" if milliseconds >= 10 else f"{milliseconds:.2g} ms"


def values_per_sample(template) -> float:
    """A rough count of the values one training sample computes (weights + layer outputs): times the
    run's rows x epochs x folds, the run's work, which `MEASURE_ABOVE` compares (tiny runs, tests and
    examples, are not worth timing)."""
    from kfold_clr.resources import layer_output_sizes

    weights = sum(int(np.prod(v.shape)) for v in template.trainable_variables)
    return float(weights + sum(layer_output_sizes(template)))


def _inputs(dataset, input_shape, batch_size):
    """A batch of the real shape: random inputs (a private generator), the dataset's first labels."""
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape)).astype("float32")
    labels = np.asarray(dataset.y)
    return x, labels[np.arange(batch_size) % len(labels)]


def _fused_step(build, config, x, y, branches, steps) -> float:
    """Seconds per step of a stacked model of `branches` copies of the model, all on batch x, y."""
    from kfold_clr.fused.model import StackedModel
    from kfold_clr.fused.support import loss_function

    template = build()
    state = ([v.numpy() for v in template.trainable_variables], [v.numpy() for v in template.non_trainable_variables])
    model = StackedModel(template, [state] * branches, config.training.optimizer,
                         loss_function(config.training.loss), [], np.zeros((branches, steps + 1), "float32"))
    index = np.tile(np.arange(len(x), dtype="int32"), (steps, branches, 1))
    active, numbers = np.ones((steps, branches), bool), np.zeros((steps, branches), "int32")
    model.train_steps(x, y, index[:1], active[:1], numbers[:1]).numpy()  # traces
    started = time.perf_counter()
    model.train_steps(x, y, index, active, numbers).numpy()
    return (time.perf_counter() - started) / steps


def _fold_step(build, config, x, y, steps) -> float:
    """Seconds per step of one fold's Keras model in `fit`, as the sequential trainer runs it."""
    import keras
    import tensorflow as tf

    from kfold_clr.models import compile_model, make_optimizer

    model = build()
    compile_model(model, make_optimizer(config.training.optimizer, 0.0), loss=config.training.loss, metrics=[],
                  steps_per_execution=steps)
    started = []  # wall clock at each epoch's start; epoch 1 traces, epoch 2 is timed
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: started.append(time.perf_counter()))
    batches = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(batches, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[timer])
    return (started[-1] - started[-2]) / steps


def time_paths(config, dataset, input_shape, branches, *, steps=STEPS) -> Timing:
    """Seconds per step of a fused model of `branches` folds and of one fold's model, each timed over
    `steps` steps after one that traces, with the run's model, optimizer, loss (`config` as
    `preflight.prepare` returns it: the task's default loss filled in) and batch size.
    Python's and NumPy's global random states are left as they were (Keras's are reseeded per fold)."""
    import keras

    from kfold_clr.models import build_model

    def build():
        keras.backend.clear_session(free_memory=False)
        return build_model(config.model, input_shape=tuple(input_shape), n_outputs=dataset.n_outputs,
                           task=dataset.task)

    saved = random.getstate(), np.random.get_state()
    x, y = _inputs(dataset, input_shape, config.training.batch_size)
    try:
        fused = _fused_step(build, config, x, y, branches, steps)
        fold = _fold_step(build, config, x, y, steps)
    finally:
        keras.backend.clear_session(free_memory=False)
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return Timing(fused, fold, branches)
