"""Cyclical learning rate (Smith 2017), evaluated in the graph on the optimizer step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from kfold_clr.schedules._common import (
    check_choice,
    check_greater,
    check_int,
    check_number,
    import_path_of,
    resolve_scale_fn,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import tensorflow as tf

MODES = ("triangular", "triangular2", "exp_range")
SCALE_MODES = ("cycle", "iterations")


@keras.saving.register_keras_serializable(package="kfold_clr")
class CyclicalLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A `LearningRateSchedule` that cycles the LR between two bounds.

    The learning rate rises linearly from `base_lr` to `max_lr` over `step_size`
    iterations, falls back over `step_size_down` iterations, and repeats; the
    amplitude of each cycle is multiplied by a scale that depends on `mode` (or a
    custom `scale_fn`). The schedule is a pure function of the optimizer's step and
    is traced into the training graph, so it costs nothing per batch in Python.

    With `t = initial_step + step`, `s = step_size`, `d = step_size_down`,
    `L = s + d`:

    ```python
    cycle = floor(1 + t / L)
    p = t - (cycle - 1) * L                     # position in the cycle
    rise = p / s if p <= s else 1 - (p - s) / d  # in [0, 1]
    lr = base_lr + (max_lr - base_lr) * rise * scale
    # triangular:  scale = 1
    # triangular2: scale = 1 / 2 ** (cycle - 1)
    # exp_range:   scale = gamma ** t
    # custom:      scale = scale_fn(cycle) or scale_fn(t), following scale_mode
    ```

    For a symmetric cycle (`d == s`) this is Smith's
    `x = |t / s - 2 * cycle + 1|`, `lr = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale`.
    The LR is at `base_lr` whenever `t` is a multiple of `cycle_length`.

    Args:
        base_lr: Float. The lower bound of the cycle, > 0.
        max_lr: Float. The upper bound of the cycle, > `base_lr`.
        step_size: Int. Iterations of the rising half of a cycle, >= 1.
        step_size_down: Int or None. Iterations of the falling half; defaults to
            `step_size` (a symmetric cycle).
        mode: String. `"triangular"`, `"triangular2"` (amplitude halves every
            cycle) or `"exp_range"` (amplitude times `gamma ** t`). Ignored in
            favour of `scale_fn` when that is given (leave `mode` at its default).
        gamma: Float in (0, 1]. The per-iteration decay of `"exp_range"`.
        scale_fn: Callable, import path string `"package.module:function"` or
            None. A custom amplitude scale, a function of the 1-based cycle
            number or of the iteration `t` (see `scale_mode`), receiving a float32
            tensor and built from `keras.ops` or arithmetic so that it traces.
            Saving needs an import path: a lambda or a local function works in
            Python but `get_config()` raises `ValueError`.
        scale_mode: String. `"cycle"` or `"iterations"`: what `scale_fn`
            receives. The built-in modes fix their own (`triangular*` per cycle,
            `exp_range` per iteration).
        initial_step: Int >= 0. An offset added to the optimizer step, so that a
            cycle continues where another model's schedule stopped.
        name: String or None. Name scope of the operations.

    Example:

    ```python
    schedule = CyclicalLearningRate(base_lr=1e-3, max_lr=6e-3, step_size=2000)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), ...)
    ```
    """

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size: int,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: str | Callable[..., Any] | None = None,
        scale_mode: str = "cycle",
        initial_step: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        check_number("base_lr", base_lr, low=0, low_open=True)
        check_number("max_lr", max_lr, low=0, low_open=True)
        check_greater("max_lr", max_lr, "base_lr", base_lr)
        check_int("step_size", step_size, low=1)
        if step_size_down is not None:
            check_int("step_size_down", step_size_down, low=1)
        check_choice("mode", mode, MODES)
        check_number("gamma", gamma, low=0, high=1, low_open=True)
        check_choice("scale_mode", scale_mode, SCALE_MODES)
        check_int("initial_step", initial_step, low=0)
        if scale_fn is not None and mode != "triangular":
            raise ValueError(
                "Arguments `mode` and `scale_fn` are exclusive: a custom `scale_fn` "
                "replaces the mode's scale; leave `mode` at 'triangular'. "
                f"Received: mode={mode!r}, scale_fn={scale_fn!r}"
            )
        self.base_lr = base_lr
        self.max_lr = max_lr
        self.step_size = step_size
        self.step_size_down = step_size_down
        self.mode = mode
        self.gamma = gamma
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self.initial_step = initial_step
        self.name = name
        self._scale_fn = None if scale_fn is None else resolve_scale_fn(scale_fn)

    @property
    def cycle_length(self) -> int:
        """Int. Iterations in one full cycle: `step_size + step_size_down`."""
        down = self.step_size if self.step_size_down is None else self.step_size_down
        return self.step_size + down

    def cycle_end_updates(self, n_updates: int) -> list[int]:
        """Returns the update counts after which a cycle has just completed.

        These are the 1-based counts `k` in `[1, n_updates]` of optimizer updates
        with `(initial_step + k) % cycle_length == 0`: after update `k` the
        optimizer's step is `k`, and `self(k) == base_lr` (the low point, where a
        snapshot ensemble captures the weights).

        Args:
            n_updates: Int >= 0. The number of optimizer updates in the training.

        Returns:
            A list of ints, increasing.
        """
        check_int("n_updates", n_updates, low=0)
        length = self.cycle_length
        first = length - self.initial_step % length
        return list(range(first, n_updates + 1, length))

    def normalized_lr(self, step: int | np.ndarray | tf.Tensor) -> tf.Tensor:
        """The LR's height between `base_lr` (0) and `max_lr` (1) at `step`.

        Args:
            step: Int scalar or vector (tensor or array). The optimizer step.

        Returns:
            A float64 tensor of the shape of `step`: `(lr - base_lr) / (max_lr - base_lr)`.
        """
        t = ops.cast(step, "float64")
        if self.initial_step:
            t = ops.add(t, float(self.initial_step))
        s = float(self.step_size)
        length = float(self.cycle_length)
        position = ops.mod(t, length)
        # Rising p / s while p <= s, then falling (L - p) / d: the smaller of the two.
        rise = ops.minimum(
            ops.divide(position, s), ops.divide(ops.subtract(length, position), length - s)
        )
        if self._scale_fn is None and self.mode == "triangular":
            return rise
        cycle = ops.add(ops.floor(ops.divide(t, length)), 1.0)
        return ops.multiply(rise, self._scale(cycle, t))

    def _scale(self, cycle: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        if self._scale_fn is not None:
            argument = cycle if self.scale_mode == "cycle" else t
            scale = self._scale_fn(ops.cast(argument, "float32"))
            return ops.cast(scale, "float64")
        if self.mode == "triangular2":
            return ops.power(0.5, ops.subtract(cycle, 1.0))
        return ops.power(float(self.gamma), t)

    def __call__(self, step: int | np.ndarray | tf.Tensor) -> tf.Tensor:
        with keras.name_scope(self.name or "CyclicalLearningRate"):
            height = self.normalized_lr(step)
            base = float(self.base_lr)
            amplitude = float(self.max_lr) - base
            return ops.cast(ops.add(base, ops.multiply(amplitude, height)), "float32")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments; `scale_fn` as its import path.

        Raises:
            ValueError: if `scale_fn` is a lambda or local function (no import path).
        """
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "step_size_down": self.step_size_down,
            "mode": self.mode,
            "gamma": self.gamma,
            "scale_fn": None if self.scale_fn is None else import_path_of(self.scale_fn),
            "scale_mode": self.scale_mode,
            "initial_step": self.initial_step,
            "name": self.name,
        }
