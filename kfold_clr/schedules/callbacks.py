"""Callbacks around the schedules: record the applied LR, cycle the momentum."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from kfold_clr.schedules._common import check_greater, check_number
from kfold_clr.schedules.planning import schedule_values

if TYPE_CHECKING:
    from collections.abc import Callable

    import tensorflow as tf

    from kfold_clr.schedules.cyclical import CyclicalLearningRate
    from kfold_clr.schedules.one_cycle import OneCycle


def _innermost(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that applies the updates (a `LossScaleOptimizer`'s inner one under mixed_float16)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _schedule_of(optimizer: keras.optimizers.Optimizer) -> Any:
    """The optimizer's LR as given: a schedule, a callable or a variable."""
    # Keras exposes only the evaluated LR (`optimizer.learning_rate`); the schedule
    # object itself is kept in this attribute by every Keras 3 optimizer.
    return _innermost(optimizer)._learning_rate


class LearningRateRecorder(keras.callbacks.Callback):
    """Records the learning rate applied at every optimizer update.

    `history["iterations"][i]` is the 1-based count `k` of an optimizer update and
    `history["lr"][i]` the LR that update used (the schedule evaluated at step
    `k - 1`), the layout of bckenstler's CLR callback. With `steps_per_execution > 1`
    the batch hooks fire once per execution, so the LRs of the updates in between
    are computed from the optimizer's schedule (or read from its variable when the
    LR is a constant or set by a callback). Works with a float LR, any Keras
    `LearningRateSchedule` and the schedules of this package.

    The history is kept across `fit` calls by default, like the optimizer's
    iteration counter that it follows, so two consecutive fits give one continuous
    record; pass `reset_on_train_begin=True` to start afresh at each `fit`.

    Args:
        reset_on_train_begin: Bool. Clear the history when a `fit` begins.

    Example:

    ```python
    recorder = LearningRateRecorder()
    model.fit(x, y, epochs=4, callbacks=[recorder])
    plt.plot(recorder.history["iterations"], recorder.history["lr"])
    ```
    """

    def __init__(self, reset_on_train_begin: bool = False) -> None:
        super().__init__()
        self.reset_on_train_begin = bool(reset_on_train_begin)
        self.history = {"iterations": [], "lr": []}
        self._next_step = 0

    def reset(self) -> None:
        """Clears the recorded history."""
        self.history = {"iterations": [], "lr": []}

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.reset_on_train_begin:
            self.reset()
        self._next_step = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = int(self.model.optimizer.iterations)
        if now <= self._next_step:
            return
        steps = np.arange(self._next_step, now, dtype="int64")
        self.history["iterations"].extend((steps + 1).tolist())
        self.history["lr"].extend(self._applied_lrs(steps))
        self._next_step = now

    def _applied_lrs(self, steps: np.ndarray) -> list[float]:
        lr = _schedule_of(self.model.optimizer)
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            return schedule_values(lr, steps).tolist()
        value = lr() if callable(lr) and not hasattr(lr, "assign") else lr
        return [float(ops.convert_to_numpy(value))] * len(steps)


class _ScheduledValue(float):
    """A float hyperparameter that evaluates a function of the step in the graph.

    Keras 3 optimizers hold `momentum` / `beta_1` as Python floats and use them as
    `ops.cast(self.momentum, dtype)`, `1 - self.beta_1` and `self.momentum != 0`.
    This float keeps the nominal value for comparisons and serialization (so a
    model saved mid-training writes a plain number), while tensor conversion and
    arithmetic evaluate `fn()` in the training graph. Copies and pickles are plain
    floats.
    """

    def __new__(cls, nominal: float, fn: Callable[[], tf.Tensor]) -> _ScheduledValue:
        obj = super().__new__(cls, nominal)
        obj._fn = fn
        return obj

    def _tensor(self) -> tf.Tensor:
        return ops.cast(self._fn(), "float32")

    def __tf_tensor__(self, dtype: tf.DType | str | None = None, name: str | None = None) -> tf.Tensor:
        value = self._fn()
        return ops.cast(value, "float32" if dtype is None else dtype)

    def __reduce__(self) -> tuple[type[float], tuple[float]]:
        return (float, (float(self),))

    def __repr__(self) -> str:
        return f"ScheduledValue(nominal={float(self)!r})"

    def __add__(self, other):
        return ops.add(self._tensor(), other)

    def __radd__(self, other):
        return ops.add(other, self._tensor())

    def __sub__(self, other):
        return ops.subtract(self._tensor(), other)

    def __rsub__(self, other):
        return ops.subtract(other, self._tensor())

    def __mul__(self, other):
        return ops.multiply(self._tensor(), other)

    def __rmul__(self, other):
        return ops.multiply(other, self._tensor())

    def __truediv__(self, other):
        return ops.divide(self._tensor(), other)

    def __rtruediv__(self, other):
        return ops.divide(other, self._tensor())

    def __pow__(self, other):
        return ops.power(self._tensor(), other)

    def __rpow__(self, other):
        return ops.power(other, self._tensor())

    def __neg__(self):
        return ops.negative(self._tensor())


class CyclicalMomentum(keras.callbacks.Callback):
    """Cycles the optimizer's momentum inversely to the cyclical learning rate.

    Momentum is `max_momentum` where the LR is at its low point and `base_momentum`
    where it peaks (Smith 2018). It follows the schedule exactly at every update:
    during `fit` the optimizer's `momentum` (SGD) or `beta_1` (Adam family) is
    replaced by a value computed in the training graph from the schedule at the
    optimizer's step, and the original float is put back when `fit` ends (the
    train function is rebuilt at both points, so other fits are unaffected).

    ```python
    momentum = max_momentum - (max_momentum - base_momentum) * h(step)
    # h: the schedule's `normalized_lr(step)`, the LR's height in [0, 1]
    ```

    Args:
        base_momentum: Float in [0, 1). The momentum at the LR's peak.
        max_momentum: Float in (base_momentum, 1]. The momentum at the LR's low point.
        schedule: `CyclicalLearningRate`, `OneCycle` or None. The schedule to
            follow; by default the optimizer's own learning rate schedule.
        attribute: String or None. The optimizer attribute to cycle; by default
            `"beta_1"` if the optimizer has it, else `"momentum"`.

    Example:

    ```python
    schedule = OneCycle(max_lr=0.1, total_steps=1000)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), ...)
    model.fit(x, y, callbacks=[CyclicalMomentum(0.85, 0.95)])
    ```
    """

    def __init__(self, base_momentum: float = 0.85, max_momentum: float = 0.95,
                 schedule: CyclicalLearningRate | OneCycle | None = None, attribute: str | None = None) -> None:
        super().__init__()
        check_number("base_momentum", base_momentum, low=0, high=1, high_open=True)
        check_number("max_momentum", max_momentum, low=0, high=1)
        check_greater("max_momentum", max_momentum, "base_momentum", base_momentum)
        if schedule is not None and not hasattr(schedule, "normalized_lr"):
            raise ValueError(
                "Argument `schedule` must be a CyclicalLearningRate or OneCycle "
                f"(it needs `normalized_lr`). Received: schedule={schedule!r}"
            )
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.schedule = schedule
        self.attribute = attribute
        self._original = None

    def momentum_at(self, step: int | np.ndarray,
                    schedule: CyclicalLearningRate | OneCycle | None = None) -> np.ndarray:
        """Returns the momentum at optimizer step(s) `step` as a float64 numpy array."""
        schedule = schedule or self.schedule
        height = ops.convert_to_numpy(schedule.normalized_lr(step))
        span = float(self.max_momentum) - float(self.base_momentum)
        return float(self.max_momentum) - span * height

    def _resolve(self) -> tuple[keras.optimizers.Optimizer, CyclicalLearningRate | OneCycle, str]:
        optimizer = _innermost(self.model.optimizer)
        schedule = self.schedule or _schedule_of(optimizer)
        if not hasattr(schedule, "normalized_lr"):
            raise ValueError(
                "CyclicalMomentum needs a CyclicalLearningRate or OneCycle schedule: "
                "pass `schedule=` or compile the optimizer with one. Received: "
                f"learning_rate={schedule!r}"
            )
        attribute = self.attribute
        if attribute is None:
            attribute = "beta_1" if hasattr(optimizer, "beta_1") else "momentum"
        current = getattr(optimizer, attribute, None)
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            raise ValueError(
                f"Argument `attribute` must name a float hyperparameter of the "
                f"optimizer {type(optimizer).__name__}. Received: attribute={attribute!r}"
            )
        if attribute == "momentum" and current == 0:
            raise ValueError(
                "CyclicalMomentum needs an optimizer created with momentum > 0 (its "
                "momentum slots are created at build). Received: momentum=0.0"
            )
        return optimizer, schedule, attribute

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer, schedule, attribute = self._resolve()
        span = float(self.max_momentum) - float(self.base_momentum)

        def momentum() -> tf.Tensor:
            height = schedule.normalized_lr(optimizer.iterations)
            return ops.subtract(float(self.max_momentum), ops.multiply(span, height))

        self._original = (attribute, float(getattr(optimizer, attribute)))
        setattr(optimizer, attribute, _ScheduledValue(self.max_momentum, momentum))
        self.model.make_train_function(force=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._original is None:
            return
        attribute, value = self._original
        setattr(_innermost(self.model.optimizer), attribute, value)
        self._original = None
        self.model.make_train_function(force=True)
