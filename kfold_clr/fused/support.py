"""What can be fused exactly, and the per-sample losses and metrics a fused model masks per branch."""


def _per_sample(obj, base, attribute):
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


def _loss_function(name):
    """The per-sample form of a Keras loss name, or None."""
    import keras

    try:
        loss = keras.losses.get(name)
    except (ValueError, TypeError):
        return None
    return _per_sample(loss, keras.losses.Loss, "fn")


def _metric_function(name, n_outputs):
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


def fused_support(config, strategy_names) -> tuple:
    """Whether these strategies can be trained fused, exactly; if not, why.

    Fusing needs the declarative MLP without batch normalization, per-sample
    losses and metrics, no early stopping, and strategies whose folds are
    independent of each other (no `carry_weights`), with no per-batch callbacks
    (`cycle_momentum`, `snapshots`). SGD (with or without momentum / Nesterov),
    Adam and RMSprop are all applied exactly per branch.

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
    model, training = config.model, config.training
    if model.factory is not None:
        return False, "factory model: only the declarative MLP is fused"
    if model.kind != "mlp":
        return False, f"{model.kind}: only the declarative MLP is fused"
    if model.batch_norm:
        return False, "batch_norm: moving statistics are not per-branch exact"
    if training.early_stopping is not None:
        return False, "early_stopping: folds stop and restore weights one by one"
    if training.loss is not None and _loss_function(training.loss) is None:
        return False, f"loss {training.loss!r}: no per-sample form to mask per branch"
    for metric in training.metrics or ():
        if metric not in ("accuracy", "acc") and _metric_function(metric, 2) is None:
            return False, f"metric {metric!r}: no per-sample form to mask per branch"
    for name in names:
        strategy = config.strategies[name]
        if getattr(strategy, "carry_weights", False):
            return False, f"{name}: carry_weights needs folds in sequence"
        if getattr(strategy, "cycle_momentum", None) is not None:
            return False, f"{name}: cycle_momentum changes the optimizer per batch"
        if getattr(strategy, "snapshots", None) is not None:
            return False, f"{name}: snapshots are taken per fold by a callback"
    return True, ""
