"""What can be fused, and the per-sample losses and metrics a fused model masks per branch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional

from kfold_clr.config.optimizers import momentum_key

if TYPE_CHECKING:
    import keras
    import numpy as np

    from kfold_clr.config import ExperimentConfig


def _per_sample(obj: object, base: type, attribute: str) -> Optional[Callable]:
    """The per-sample function behind a Keras loss or metric object, or None.

    Keras wraps plain functions (`mse`, `sparse_categorical_accuracy`) in an object of
    class `base` that keeps the function in `attribute` with its keyword arguments; any
    other object of that class is stateful and has no per-sample form to mask per branch.
    """
    fn = getattr(obj, attribute, None)
    if isinstance(obj, base) and callable(fn):
        kwargs = dict(getattr(obj, "_fn_kwargs", {}) or {})
        return lambda y_true, y_pred: fn(y_true, y_pred, **kwargs)
    if isinstance(obj, base) or not callable(obj):
        return None
    return obj


def loss_function(name: str) -> Optional[Callable]:
    """The per-sample form of a Keras loss name, or None."""
    import keras

    try:
        loss = keras.losses.get(name)
    except (ValueError, TypeError):
        return None
    return _per_sample(loss, keras.losses.Loss, "fn")


def metric_function(name: str, n_outputs: int) -> Optional[Callable]:
    """The per-sample form of a Keras metric name (as `compile` resolves it), or None."""
    import keras

    if name in ("accuracy", "acc"):
        return (keras.metrics.sparse_categorical_accuracy if n_outputs > 1
                else keras.metrics.binary_accuracy)
    try:
        metric = keras.metrics.get(name)
    except (ValueError, TypeError):
        return None
    if isinstance(metric, keras.metrics.Metric) and not isinstance(metric, keras.metrics.Mean):
        return None  # stateful (AUC, precision, ...)
    return _per_sample(metric, keras.metrics.Mean, "_fn")


def fused_support(config: ExperimentConfig, strategy_names: Iterable[str]) -> tuple[bool, str]:
    """Whether these strategies can be trained fused, as far as the config tells; if not, why.

    Fusing needs float32 training (`training.precision`), per-sample losses and metrics
    (masked per branch) and strategies whose folds are independent of each other (no
    `carry_weights`: a chain by definition).
    Everything else a fold does is done per branch: batch norm, dropout, snapshots,
    cyclical momentum, early stopping, SGD (momentum, Nesterov), Adam and RMSprop.
    Whether the model's layers can be vectorised over branches is :func:`model_support`'s
    question.

    Args:
        config: ExperimentConfig.
        strategy_names: list of str. Strategies of `config` to train together.

    Returns:
        Tuple `(ok, reason)`: `reason` is a one-line explanation, empty when `ok`.

    Example:

    ```python
    ok, reason = fused_support(config, ["clr_reset", "clr_continue"])
    if not ok:
        print(f"training folds one by one: {reason}")
    ```
    """
    names = list(strategy_names)
    if not names:
        raise ValueError(f"Argument `strategy_names` must name at least one strategy. Received: {names!r}")
    unknown = [name for name in names if name not in config.strategies]
    if unknown:
        raise ValueError(f"Argument `strategy_names` must be strategies of the config "
                         f"({', '.join(config.strategies)}). Received: {unknown[0]!r}")
    training = config.training
    if training.precision != "float32":
        return False, (f"training.precision {training.precision!r}: fused branches train in float32 "
                       "(their optimizer step has no mixed-precision form)")
    if training.loss is not None and loss_function(training.loss) is None:
        return False, f"loss {training.loss!r}: no per-sample form to mask per branch"
    for metric in training.metrics or ():
        if metric not in ("accuracy", "acc") and metric_function(metric, 2) is None:
            return False, f"metric {metric!r}: no per-sample form to mask per branch"
    optimizer = training.optimizer
    for name in names:
        strategy = config.strategies[name]
        if strategy.is_chain:
            return False, f"{name}: carry_weights needs folds in sequence"
        if strategy.momentum_cycle is not None and momentum_key(optimizer) is None:
            return False, f"{name}: cycle_momentum needs SGD with momentum > 0 or Adam"
    return True, ""


_VECTORISED_RANDOM = ("StatelessRandom", "RandomGetKeyCounter")  # dropout and noise masks: per-branch seeds


def model_support(template: keras.Model, x: np.ndarray, y: np.ndarray,
                  loss_fn: Callable[..., Any]) -> tuple[bool, str]:
    """Whether a built Keras model can be trained as branches of a stacked model; if not, why.

    The model must be one Keras model with one input and one output that trains with
    Keras's own train step, and every op of its forward and backward pass must have a
    vectorised form over branches (`tf.vectorized_map`); only random-mask ops (dropout,
    noise) may loop over branches. Checked by tracing one step of two branches on `x`, `y`.

    Returns:
        Tuple `(ok, reason)`.
    """
    import keras
    import tensorflow as tf

    from kfold_clr.training.fused.model import StackedModel
    from kfold_clr.training.fused.vectorize import looped_ops

    if not isinstance(template, keras.Model):
        return False, f"{type(template).__name__} is not a keras.Model"
    for method in ("train_step", "compute_loss", "test_step"):
        if getattr(type(template), method) is not getattr(keras.Model, method):
            return False, f"{type(template).__name__} overrides {method}; fused branches use Keras's own"
    if len(getattr(template, "inputs", None) or [None]) != 1 or len(getattr(template, "outputs", None) or [None]) != 1:
        return False, "only models with one input and one output are fused"
    from kfold_clr.config import OptimizerConfig

    states = [([v.numpy() for v in template.trainable_variables],
               [v.numpy() for v in template.non_trainable_variables])] * 2
    fallbacks = []
    try:
        with looped_ops(fallbacks):
            probe = StackedModel(template, states, OptimizerConfig(name="sgd"), loss_fn, [], [[0.0], [0.0]])
            probe.traced_train_steps(tf.constant(x), tf.constant(y))
    except Exception as error:  # noqa: BLE001 - any failure to trace means: train these folds one by one
        text = str(error).strip().splitlines()
        return False, f"the model does not trace as stacked branches ({type(error).__name__}: " \
                      f"{text[0][:160] if text else ''})"
    looped = sorted({op for op in fallbacks if not op.startswith(_VECTORISED_RANDOM)})
    if looped:
        return False, f"op{'s' if len(looped) > 1 else ''} {', '.join(looped)} cannot be vectorised over branches"
    return True, ""
