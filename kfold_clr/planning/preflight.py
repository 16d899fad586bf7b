"""Preflight: load the config and data, make the splits and check everything before training.

Every problem of the user's input (config, data, model factory, schedule plan) is found
here, before a results directory is touched or a fold is trained, and reported as a
one-line ConfigError or DataError.
"""

import os
import pathlib
import warnings

from kfold_clr.config import import_object, load_config
from kfold_clr.data.datasets import _resolve_path, data_file, load_dataset
from kfold_clr.data.memory import check_model_size
from kfold_clr.data.splits import load_given_splits, make_splits, reserve_rows
from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.storage.ownership import check_output_dir
from kfold_clr.storage.tracking import check_tracking
from kfold_clr.training.fold_plans import plan_folds

PLACEHOLDER_BOUNDS = (1e-4, 1e-3)  # stand-in range-test bounds: the checks need a schedule's shape, not its LRs


def prepare(source, *, overrides=None) -> tuple:
    """Load config and data, make the splits and check everything before training.

    Returns:
        (config, dataset, splits, reserved): `reserved` holds the rows set aside for
        the shared range test (`range_test.reserve`), or None. Raises ConfigError /
        DataError on bad input.
    """
    config = load_config(source, overrides=overrides)
    data = data_file(config.data, base_dir=config.base_dir)
    check_output_dir(config.output_dir, protected=inputs(config),
                     data_folder=data if data is not None and data.is_dir() else None)
    config, dataset = load_experiment_data(config)
    if config.model.kind == "cnn" and config.data.image_shape is None:
        raise ConfigError("data.image_shape: None must be a per-sample shape such as "
                          "[8, 8, 1] (required for model.kind 'cnn')")
    reserved = None
    if config.range_test.reserve is not None:
        reserved = reserve_rows(dataset, config.range_test.reserve, seed=config.seed)
        if not any(s.range_test_scope == "shared_range_test" for s in config.strategies.values()):
            warnings.warn(f"range_test.reserve: {config.range_test.reserve} of the rows are set aside, but no "
                          "strategy uses bounds: shared_range_test; they are used by nothing", UserWarning,
                          stacklevel=2)
    if config.cv.splitter == "given":
        if reserved is not None:
            raise ConfigError(f"range_test.reserve: {config.range_test.reserve} cannot set rows aside from given "
                              "splits; reserve them before making the splits, or leave reserve out")
        splits = load_given_splits(config.base_dir / pathlib.Path(config.cv.path).expanduser(), dataset.n_samples)
    else:
        splits = make_splits(dataset, splitter=config.cv.splitter, n_splits=config.cv.n_splits,
                             n_repeats=config.cv.n_repeats, shuffle=config.cv.shuffle, seed=config.seed,
                             exclude=reserved)
    from kfold_clr.training.models import default_loss, default_metrics

    # The task's defaults, filled once: config.yaml, fingerprints and every fold see them.
    config = config.with_training(loss=config.training.loss or default_loss(dataset.task),
                                  metrics=config.training.metrics if config.training.metrics is not None
                                  else default_metrics(dataset.task))
    _check_keras_names(config)
    check_model_size(config, input_shape=config.data.image_shape or dataset.x.shape[1:],
                     n_outputs=dataset.n_outputs)
    if config.model.factory is not None:
        import_object(config.model.factory, key="model.factory")
    _check_training_choices(config, dataset.task)
    _check_model(config, dataset, splits[0])
    _check_range_test_monitor(config)
    check_tracking(config)  # TensorBoard / MLflow asked for but not installed
    if config.execution.fused_folds is True:
        from kfold_clr.planning.jobs import fusion_groups

        fusion_groups(config, dataset)
    for name, strategy in config.strategies.items():
        for key, path in strategy.import_paths().items():
            import_object(path, key=f"strategies.{name}.{key}")
        plan = plan_folds(name, strategy, splits[:1], seed=config.seed, epochs=config.training.epochs,
                          batch_size=config.training.batch_size)[0]
        bounds = PLACEHOLDER_BOUNDS if strategy.range_test_scope else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            strategy.schedule_for(plan, bounds=bounds, warn=True)
        _check_snapshots(name, strategy, splits, config)
        _check_tuning(name, strategy, plan, config, dataset)
        for warning in caught:
            warnings.warn(f"strategies.{name}: {warning.message}", UserWarning, stacklevel=2)
    return config, dataset, splits, reserved


def load_experiment_data(config) -> tuple:
    """The config's data set, as training reads it; (config, dataset).

    A pretrained backbone (`model.kind: pretrained`) may replace the pixels of an image set
    by its features (`kfold_clr.data.images.backbones.prepare_pretrained`, imported only then).
    """
    dataset = load_dataset(config.data, base_dir=config.base_dir, seed=config.seed)
    if getattr(config.model, "kind", None) == "pretrained":
        from kfold_clr.data.images.backbones import prepare_pretrained

        config, dataset = prepare_pretrained(config, dataset)
    return config, dataset


def _check_model(config, dataset, split):
    """Build, compile and evaluate the model once on two samples: bad factories, shapes,
    losses or metrics are reported before any results directory exists."""
    import keras

    from kfold_clr.training.models import build_model, compile_model, make_optimizer
    from kfold_clr.training.trainer import prepare_fold

    x_train, y_train, _, _ = prepare_fold(dataset, split, config.data)
    try:
        model = build_model(config.model, input_shape=x_train.shape[1:], n_outputs=dataset.n_outputs,
                            task=dataset.task)
        compile_model(model, make_optimizer(config.training.optimizer, 0.01), loss=config.training.loss,
                      metrics=config.training.metrics)
        # Eagerly on two samples: the same checks as `evaluate` without tracing a graph.
        predictions = model(x_train[:2], training=False)
        keras.losses.get(model.loss)(y_train[:2], predictions)
        model.compute_metrics(x_train[:2], y_train[:2], predictions, sample_weight=None)
        model.reset_metrics()
    except KfoldClrError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here is a problem of the model settings
        key = "model.factory" if config.model.factory else "model"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[-1] if lines else ""
        raise ConfigError(f"{key}: the model cannot be built and evaluated on this data with loss "
                          f"{config.training.loss!r} and metrics {config.training.metrics} "
                          f"({error.__class__.__name__}: {detail[:300]})") from None
    finally:
        keras.backend.clear_session(free_memory=False)  # a full collection costs a quarter second


def _check_training_choices(config, task):
    """Settings that validate one by one but cannot work together."""
    loss = str(config.training.loss)
    if task == "regression" and ("categorical" in loss or "binary" in loss):
        raise ConfigError(f"training.loss: {loss!r} is a classification loss but the task is regression "
                          "(set data.task: classification, or use mse / mae / huber)")
    stop = config.training.early_stopping
    if stop is not None:
        allowed = [prefix + name for prefix in ("", "val_") for name in ["loss", *config.training.metrics]]
        if stop.monitor not in allowed:
            raise ConfigError(f"training.early_stopping.monitor: {stop.monitor!r} is not one of {', '.join(allowed)}")


def _check_range_test_monitor(config):
    settings = config.range_test
    allowed = ["loss", *config.training.metrics]
    if settings.holdout is not None:
        allowed += ["holdout_loss", *(f"holdout_{metric}" for metric in config.training.metrics)]
    if settings.monitor not in allowed:
        raise ConfigError(f"range_test.monitor: {settings.monitor!r} is not one of {', '.join(allowed)}"
                          + ("" if settings.holdout is not None else " (holdout_* needs range_test.holdout)"))


def _check_tuning(name, strategy, plan, config, dataset):
    """A tuned strategy's metric is one the folds record, and its inner splits can be made."""
    from kfold_clr.training.tuning import inner_splits

    tune = strategy.tune
    if tune is None:
        return
    allowed = ["loss", *config.training.metrics]
    if tune.metric not in allowed:
        raise ConfigError(f"strategies.{name}.tune.metric: {tune.metric!r} must be one of {', '.join(allowed)} "
                          "(the loss or a metric of training.metrics)")
    try:
        inner = inner_splits(config, dataset, plan)
    except ValueError as error:
        raise ConfigError(f"strategies.{name}.tune: {tune.model_dump(exclude={'grid'})} cannot split the "
                          f"{len(plan.split.train)} training rows of fold {plan.key}: {error}") from None
    for split in inner:
        if len(split.train) == 0 or len(split.val) == 0:
            raise ConfigError(f"strategies.{name}.tune: {tune.model_dump(exclude={'grid'})} leaves no rows on "
                              f"one side of {split.key} ({len(split.train)} train, {len(split.val)} validation)")


def _check_snapshots(name, strategy, splits, config):
    """Warn when a fold's training holds fewer valid snapshot points than a snapshot ensemble
    asks for; every fold is checked (`continue` shifts each fold's cycle ends)."""
    from kfold_clr.training.fold_plans import snapshot_updates

    snapshots = strategy.snapshot_settings
    if snapshots is None:
        return
    plans = plan_folds(name, strategy, splits, seed=config.seed, epochs=config.training.epochs,
                       batch_size=config.training.batch_size)
    bounds = PLACEHOLDER_BOUNDS if strategy.range_test_scope else None
    counts = {plan.key: len(snapshot_updates(strategy.schedule_for(plan, bounds=bounds, warn=False)[0],
                                             plan.iterations)) for plan in plans}
    short = {key: count for key, count in counts.items() if count < snapshots.keep}
    if short:
        fewest = min(short, key=short.get)
        warnings.warn(f"strategies.{name}.snapshots.keep: {snapshots.keep} snapshots asked for, but "
                      f"{len(short)} of {len(plans)} folds hold fewer cycle ends after a full cycle of "
                      f"training (fold {fewest}: {short[fewest]}); those ensembles have fewer members "
                      "(n_snapshots in folds.csv)", UserWarning, stacklevel=3)


def _check_keras_names(config):
    import keras

    loss = config.training.loss
    try:
        keras.losses.get(loss)
    except (ValueError, TypeError):
        raise ConfigError(f"training.loss: {loss!r} is not a Keras loss") from None
    for metric in config.training.metrics:
        if metric in ("accuracy", "acc", "mse", "mae"):
            continue
        try:
            keras.metrics.get(metric)
        except (ValueError, TypeError):
            raise ConfigError(f"training.metrics: {metric!r} is not a Keras metric") from None


def inputs(config) -> list:
    """What a results directory must never contain: the config's folder, the data file or
    folder, the table of an image set and the folder its decoded pixels are cached in."""
    inputs = [config.base_dir]
    path = data_file(config.data, base_dir=config.base_dir)
    inputs += [path] if path is not None else []
    if config.data.source == "images":  # both resolved as the loader resolves them
        if config.data.table is not None:
            inputs.append(_resolve_path(config.data.table, config.base_dir))
        if config.data.cache is not None:
            inputs.append(config.base_dir / pathlib.Path(os.path.expandvars(config.data.cache)).expanduser())
    return inputs
