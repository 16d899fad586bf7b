"""Compiled models kept across folds: a fold restores its initial state instead of tracing a new model.

`LearningRateTable` is the schedule the pooled model's optimizer reads (every step's LR from a
variable), so one compiled model serves every fold and strategy of one architecture.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np

from kfold_clr.training.models import build_model, compile_model, current_precision, make_optimizer

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.training.fold_plans import FoldSpec


class LearningRateTable(keras.optimizers.schedules.LearningRateSchedule):
    """The LR of every step, read from a variable: one compiled model serves many schedules.

    The values come from evaluating the fold's own schedule on every step
    (`kfold_clr.training.fold_plans.learning_rates`), so they are exactly what that
    schedule gives; steps past the table keep its last value.

    Args:
        capacity: int. Steps the table holds.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.values = keras.Variable(np.zeros(self.capacity, dtype="float32"), trainable=False,
                                     name="learning_rate_table")

    def load(self, values: Sequence[float] | np.ndarray) -> None:
        values = np.asarray(values, dtype="float32")
        padded = np.full(self.capacity, values[-1] if len(values) else 0.0, dtype="float32")
        padded[:len(values)] = values
        self.values.assign(padded)

    def __call__(self, step: int | keras.KerasTensor) -> keras.KerasTensor:
        index = keras.ops.minimum(keras.ops.cast(step, "int32"), self.capacity - 1)
        return keras.ops.take(self.values, index)

    def get_config(self) -> dict:
        return {"capacity": self.capacity}


class ModelPool:
    """Compiled models kept across folds and strategies of one architecture.

    A fold then restores its own initial state (weights, dropout seed state,
    zeroed optimizer slots and step counter, its LR table) instead of building and
    tracing a new model: the same numbers, without the tracing cost. Up to `size`
    models (two by default) are kept, the least recently used dropped first, so memory stays flat: folds
    whose epochs differ by a batch run different updates per call (`execution_steps`),
    and alternating between them should not rebuild and retrace a model each time.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = int(size)
        self._pooled = collections.OrderedDict()  # key -> (model, table), most recently used last

    @property
    def _model(self) -> keras.Model | None:
        """The most recently used model (None when the pool is empty)."""
        return next(reversed(self._pooled.values()))[0] if self._pooled else None

    def clear(self) -> None:
        self._pooled.clear()

    def model(self, config: ExperimentConfig, dataset: Dataset, spec: FoldSpec, input_shape: Sequence[int],
              steps_per_execution: int) -> tuple[keras.Model, LearningRateTable]:
        """A compiled model for `spec`'s optimizer, loss and metrics, built only when they change."""
        key = (config.model.model_dump_json(), spec.optimizer.model_dump_json(), spec.loss, tuple(spec.metrics),
               tuple(input_shape), dataset.n_outputs, dataset.task, steps_per_execution, current_precision())
        iterations = spec.plan.iterations
        pooled = self._pooled.pop(key, None)
        if pooled is None or pooled[1].capacity < iterations:
            model = build_model(config.model, input_shape=input_shape, n_outputs=dataset.n_outputs,
                                task=dataset.task)
            table = LearningRateTable(capacity=int(iterations * 1.25) + 1)
            compile_model(model, make_optimizer(spec.optimizer, table), loss=spec.loss, metrics=spec.metrics,
                          steps_per_execution=steps_per_execution)
            pooled = (model, table)
        self._pooled[key] = pooled
        while len(self._pooled) > self.size:
            self._pooled.popitem(last=False)
        return pooled


MODEL_POOL = ModelPool()
