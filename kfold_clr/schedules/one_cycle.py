"""The 1cycle policy (Smith 2018): one warm-up to `max_lr`, then a long anneal."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from kfold_clr.schedules._common import check_choice, check_int, check_number

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

ANNEALS = ("cos", "linear")


@keras.saving.register_keras_serializable(package="kfold_clr")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """A `LearningRateSchedule` with one cycle: warm up, then anneal far below the start.

    The LR rises from `max_lr / div_factor` to `max_lr` over the first `pct_start`
    of the training, then anneals to `max_lr / div_factor / final_div_factor` at
    the last step, and stays there afterwards. `anneal` picks the shape of both
    phases. The schedule is traced into the training graph.

    With `t = initial_step + step`, `T = total_steps - 1`, `w = pct_start * T`,
    `lr_0 = max_lr / div_factor`, `lr_min = lr_0 / final_div_factor`:

    ```python
    if t <= w:  lr = anneal(lr_0, max_lr, t / w)
    else:       lr = anneal(max_lr, lr_min, min(1, (t - w) / (T - w)))
    # linear: anneal(a, b, f) = a + (b - a) * f
    # cos:    anneal(a, b, f) = b + (a - b) * (1 + cos(pi * f)) / 2
    ```

    Args:
        max_lr: Float > 0. The peak learning rate.
        total_steps: Int >= 2. Optimizer updates in the whole training.
        pct_start: Float in (0, 1). The fraction of the training spent warming up.
        div_factor: Float >= 1. The starting LR is `max_lr / div_factor`.
        final_div_factor: Float >= 1. The final LR is the starting LR divided by it.
        anneal: String. `"cos"` or `"linear"`.
        initial_step: Int >= 0. An offset added to the optimizer step.
        name: String or None. Name scope of the operations.

    Example:

    ```python
    schedule = OneCycle(max_lr=0.1, total_steps=epochs * steps_per_epoch)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    ```
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
        initial_step: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        check_number("max_lr", max_lr, low=0, low_open=True)
        check_int("total_steps", total_steps, low=2)
        check_number("pct_start", pct_start, low=0, high=1, low_open=True, high_open=True)
        check_number("div_factor", div_factor, low=1)
        check_number("final_div_factor", final_div_factor, low=1)
        check_choice("anneal", anneal, ANNEALS)
        check_int("initial_step", initial_step, low=0)
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.anneal = anneal
        self.initial_step = initial_step
        self.name = name

    @property
    def initial_lr(self) -> float:
        """Float. The LR at the first step, `max_lr / div_factor`."""
        return float(self.max_lr) / float(self.div_factor)

    @property
    def final_lr(self) -> float:
        """Float. The LR at the last step, `initial_lr / final_div_factor`."""
        return self.initial_lr / float(self.final_div_factor)

    def _phase(self, step: int | np.ndarray | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(in_warmup, fraction)` float64 tensors for `step`."""
        t = ops.add(ops.cast(step, "float64"), float(self.initial_step))
        last = float(self.total_steps - 1)
        warmup = float(self.pct_start) * last
        in_warmup = ops.less_equal(t, warmup)
        up = ops.divide(t, warmup)
        down = ops.clip(ops.divide(ops.subtract(t, warmup), last - warmup), 0.0, 1.0)
        return in_warmup, ops.where(in_warmup, up, down)

    def _anneal(self, start: float, end: float, fraction: tf.Tensor) -> tf.Tensor:
        if self.anneal == "linear":
            return ops.add(start, ops.multiply(end - start, fraction))
        cosine = ops.add(1.0, ops.cos(ops.multiply(math.pi, fraction)))
        return ops.add(end, ops.multiply((start - end) / 2.0, cosine))

    def normalized_lr(self, step: int | np.ndarray | tf.Tensor) -> tf.Tensor:
        """The LR's height in [0, 1] within the current phase (1 at `max_lr`).

        In the warm-up it is measured from `initial_lr`, in the anneal from
        `final_lr`, so `CyclicalMomentum` mirrors both phases fully.

        Args:
            step: Int scalar or vector (tensor or array). The optimizer step.

        Returns:
            A float64 tensor of the shape of `step`.
        """
        in_warmup, fraction = self._phase(step)
        return ops.where(
            in_warmup, self._anneal(0.0, 1.0, fraction), self._anneal(1.0, 0.0, fraction)
        )

    def __call__(self, step: int | np.ndarray | tf.Tensor) -> tf.Tensor:
        with keras.name_scope(self.name or "OneCycle"):
            in_warmup, fraction = self._phase(step)
            peak = float(self.max_lr)
            lr = ops.where(
                in_warmup,
                self._anneal(self.initial_lr, peak, fraction),
                self._anneal(peak, self.final_lr, fraction),
            )
            return ops.cast(lr, "float32")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "initial_step": self.initial_step,
            "name": self.name,
        }
