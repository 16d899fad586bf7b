"""Planning a cyclical schedule: step sizes from epochs, checks of the cycle plan, LR values per step."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

from kfold_clr.schedules._common import check_int, check_number

if TYPE_CHECKING:
    import keras
    import numpy as np
    from numpy.typing import ArrayLike


class CyclePlanWarning(UserWarning):
    """A cyclical LR plan that will not behave as intended (see `check_cycle_plan`)."""


def step_size_from_epochs(epochs: float, *, n_samples: int, batch_size: int) -> int:
    """Converts a half-cycle length in epochs to optimizer iterations.

    One epoch is `ceil(n_samples / batch_size)` updates (the last batch may be
    partial). A fractional `epochs` is rounded to the nearest iteration; the result
    is at least 1. Smith recommends 2 to 10 epochs per half cycle.

    ```python
    step_size = max(1, round(epochs * ceil(n_samples / batch_size)))
    ```

    Args:
        epochs: Float > 0. The half-cycle length in epochs.
        n_samples: Int >= 1. Training samples per epoch.
        batch_size: Int >= 1. Samples per batch.

    Returns:
        Int. The step size in iterations.

    Example:

    >>> step_size_from_epochs(3, n_samples=1000, batch_size=32)
    96
    """
    check_number("epochs", epochs, low=0, low_open=True)
    check_int("n_samples", n_samples, low=1)
    check_int("batch_size", batch_size, low=1)
    per_epoch = math.ceil(n_samples / batch_size)
    return max(1, math.floor(epochs * per_epoch + 0.5))


def check_cycle_plan(*, step_size: int, step_size_down: int | None = None, total_iterations: int) -> list[str]:
    """Warns about the classic mistakes in a cyclical LR plan.

    Issues a `CyclePlanWarning` when the rising half is at least as long as the
    whole training (updates use steps `0 .. total_iterations - 1`, so the LR never
    reaches `max_lr`), and when the training stops mid-cycle (Smith recommends
    stopping at the end of a cycle, where the LR is back at `base_lr`).

    Args:
        step_size: Int >= 1. Iterations of the rising half of a cycle.
        step_size_down: Int >= 1 or None. Iterations of the falling half; defaults
            to `step_size`.
        total_iterations: Int >= 1. Optimizer updates in the whole training.

    Returns:
        The list of warning messages (empty when the plan is sound).
    """
    check_int("step_size", step_size, low=1)
    if step_size_down is not None:
        check_int("step_size_down", step_size_down, low=1)
    check_int("total_iterations", total_iterations, low=1)
    down = step_size if step_size_down is None else step_size_down
    length = step_size + down
    messages = []
    if step_size >= total_iterations:
        messages.append(
            f"step_size={step_size} >= total_iterations={total_iterations}: the "
            "learning rate never reaches max_lr; shorten the step size or train longer."
        )
    remainder = total_iterations % length
    if remainder:
        cycles = total_iterations // length
        shorter, longer = cycles * length, (cycles + 1) * length
        options = f"{longer}" if shorter == 0 else f"{shorter} or {longer}"
        messages.append(
            f"total_iterations={total_iterations} stops mid-cycle ({remainder} of "
            f"{length} iterations into cycle {cycles + 1}); stop at the end of a cycle, "
            f"where the LR is back at base_lr: total_iterations={options}."
        )
    for message in messages:
        warnings.warn(message, CyclePlanWarning, stacklevel=2)
    return messages


def schedule_values(learning_rate: keras.optimizers.schedules.LearningRateSchedule | float,
                    steps: ArrayLike) -> np.ndarray:
    """The learning rate at each of `steps`, as a float numpy array.

    `learning_rate` is a `LearningRateSchedule` (a pure function of the step:
    one vectorised call, or one call per step for schedules that need a scalar)
    or a constant.

    Args:
        learning_rate: LearningRateSchedule or float.
        steps: array of int. Optimizer steps.
    """
    import numpy as np
    from keras import ops

    steps = np.asarray(steps)
    if not callable(learning_rate):
        return np.full(steps.shape, float(learning_rate))
    try:
        values = ops.convert_to_numpy(learning_rate(ops.convert_to_tensor(steps.astype("float32"))))
        if np.shape(values) == steps.shape:
            return values.astype(float)
    except Exception:  # noqa: BLE001 - fall back to one call per step
        pass
    return np.asarray([float(ops.convert_to_numpy(learning_rate(int(step)))) for step in steps], dtype=float)
