"""The learning-rate sweep of the range test, as a Keras learning-rate schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kfold_clr.schedules._common import check_choice, check_greater, check_int, check_number

if TYPE_CHECKING:
    import tensorflow as tf
    from numpy.typing import ArrayLike

SWEEP_MODES = ("exponential", "linear")


def check_sweep_args(min_lr: float, max_lr: float, num_steps: int, mode: str) -> None:
    """Raises a ValueError naming the argument when a sweep setting is invalid."""
    check_number("min_lr", min_lr, low=0, low_open=True)
    check_number("max_lr", max_lr)
    check_greater("max_lr", max_lr, "min_lr", min_lr)
    check_int("num_steps", num_steps, low=1)
    check_choice("mode", mode, SWEEP_MODES)


def sweep_values(min_lr: float, max_lr: float, num_steps: int, *, mode: str = "exponential",
                 steps: ArrayLike | None = None) -> float | np.ndarray:
    """Returns the learning rates of the sweep at the given steps, in float64.

    The NumPy twin of `LRSweep`, used to record the learning rate of each
    iteration and to reason about the sweep without TensorFlow.

    ```python
    i = clip(step, 0, num_steps - 1);  t = i / (num_steps - 1)   # t = 0 when num_steps == 1
    linear:       lr = min_lr + (max_lr - min_lr) * t
    exponential:  lr = min_lr * (max_lr / min_lr) ** t
    ```

    Args:
        min_lr: Float. Learning rate of the first step.
        max_lr: Float. Learning rate of the last step.
        num_steps: Int. Number of steps of the sweep.
        mode: String. `"exponential"` (log-spaced) or `"linear"`.
        steps: Int or array of ints. Steps to evaluate; default: all of them.

    Returns:
        Float64 array of learning rates (a float when `steps` is a scalar).
    """
    check_sweep_args(min_lr, max_lr, num_steps, mode)
    steps = np.arange(num_steps) if steps is None else steps
    i = np.clip(np.asarray(steps, dtype="float64"), 0, num_steps - 1)
    t = i / (num_steps - 1) if num_steps > 1 else np.zeros_like(i)
    if mode == "linear":
        lrs = min_lr + (max_lr - min_lr) * t
    else:
        lrs = min_lr * (max_lr / min_lr) ** t
    return float(lrs) if np.ndim(lrs) == 0 else lrs


@keras.saving.register_keras_serializable(package="kfold_clr")
class LRSweep(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate that climbs from `min_lr` to `max_lr` over `num_steps` steps.

    The schedule of the LR range test (Smith, 2017): evaluated on the
    optimizer's iteration, it gives step `i` of `num_steps` the rate below and
    holds `max_lr` after the last step. Exponential mode spaces the rates
    evenly in log scale, which suits sweeps over several decades.

    ```python
    t = min(step, num_steps - 1) / (num_steps - 1)
    linear:       lr = min_lr + (max_lr - min_lr) * t
    exponential:  lr = min_lr * (max_lr / min_lr) ** t
    ```

    Args:
        min_lr: Float. Learning rate at step 0, > 0.
        max_lr: Float. Learning rate at step `num_steps - 1`, > `min_lr`.
        num_steps: Int. Number of steps of the sweep, >= 1.
        mode: String. `"exponential"` (default) or `"linear"`.
        name: String. Name of the schedule.

    Example:

    >>> sweep = LRSweep(1e-5, 1.0, num_steps=6)
    >>> [round(float(sweep(i)), 6) for i in range(6)]
    [1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0]
    """

    def __init__(self, min_lr: float, max_lr: float, num_steps: int, mode: str = "exponential",
                 name: str = "LRSweep") -> None:
        super().__init__()
        check_sweep_args(min_lr, max_lr, num_steps, mode)
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.num_steps = num_steps
        self.mode = mode
        self.name = name

    def __call__(self, step: int | np.ndarray | tf.Tensor) -> tf.Tensor:
        step = keras.ops.cast(step, "float32")
        last = float(self.num_steps - 1)
        t = keras.ops.clip(step, 0.0, last) / last if self.num_steps > 1 else step * 0.0
        if self.mode == "linear":
            return self.min_lr + (self.max_lr - self.min_lr) * t
        log_ratio = math.log(self.max_lr / self.min_lr)
        return self.min_lr * keras.ops.exp(log_ratio * t)

    def get_config(self) -> dict[str, Any]:
        return {
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "num_steps": self.num_steps,
            "mode": self.mode,
            "name": self.name,
        }
