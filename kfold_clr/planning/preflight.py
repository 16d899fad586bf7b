"""Preflight: load the config and data, make the splits and check everything before training.

Every problem of the user's input (config, data, model factory, schedule plan) is found
here, before a results directory is touched or a fold is trained, and reported as a
one-line ConfigError or DataError. What the checks build (every strategy's fold plans, a
tuned strategy's inner splits, the fingerprints) is built here once and handed on (`Prepared`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from kfold_clr.config import import_object, load_config
from kfold_clr.data.datasets import _resolve_path, data_file, load_dataset
from kfold_clr.data.memory import check_model_size
from kfold_clr.data.splits import load_given_splits, make_splits, reserve_rows
from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.storage import provenance
from kfold_clr.storage.ownership import check_output_dir
from kfold_clr.storage.tracking import check_tracking
from kfold_clr.training.fold_plans import plan_folds

if TYPE_CHECKING:
    import numpy as np

    from kfold_clr.config import ExperimentConfig
    from kfold_clr.config.strategy_base import BaseStrategy
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.data.splits import Split

PLACEHOLDER_BOUNDS = (1e-4, 1e-3)  # stand-in range-test bounds: the checks need a schedule's shape, not its LRs


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What preflight hands the run: the checked input and what is built from it, once.

    Unpacks as `config, dataset, splits, reserved = prepare(...)`.

    Attributes:
        config: ExperimentConfig. With the task's loss and metrics filled in.
        dataset: Dataset.
        splits: list of Split. Every (repeat, fold), repeat-major.
        reserved: array of int or None. The rows set aside for the shared range test
            (`range_test.reserve`).
        plans: dict. Strategy -> [FoldPlan] in (repeat, fold) order (`plan_folds`, once per strategy).
        inner: dict. (tuned strategy, outer fold key) -> [Split]: the inner splits that score its
            grid (`kfold_clr.training.tuning.inner_splits`; empty for `select: outer`).
        prints: Fingerprints. Every strategy's fingerprint, fused and fold by fold
            (`kfold_clr.storage.provenance.run_fingerprints`).
    """

    config: ExperimentConfig
    dataset: Dataset
    splits: list
    reserved: np.ndarray | None
    plans: dict
    inner: dict
    prints: provenance.Fingerprints

    def __iter__(self) -> Iterator[Any]:
        return iter((self.config, self.dataset, self.splits, self.reserved))


def prepare(source: str | os.PathLike | dict | ExperimentConfig, *, overrides: Sequence[str] | None = None) -> Prepared:
    """Load config and data, make the splits and check everything before training.

    Returns:
        Prepared: config, dataset, splits, reserved (unpacking as that 4-tuple), and each
        strategy's fold plans, inner splits and fingerprints. Raises ConfigError / DataError
        on bad input.
    """
    config = load_config(source, overrides=overrides)
    data = data_file(config.data, base_dir=config.base_dir)
    check_output_dir(config.output_dir, protected=inputs(config),
                     data_folder=data if data is not None and data.is_dir() else None)
    config, dataset = load_experiment_data(config)
    if config.model.kind == "cnn" and config.data.image_shape is None:
        raise ConfigError("data.image_shape: None must be a per-sample shape such as "
                          "[8, 8, 1] (required for model.kind 'cnn')")
    splits, reserved = _split(config, dataset)
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
    plans, inner = {}, {}
    for name, strategy in config.strategies.items():
        for key, path in strategy.import_paths().items():
            import_object(path, key=f"strategies.{name}.{key}")
        plans[name] = plan_folds(name, strategy, splits, seed=config.seed, epochs=config.training.epochs,
                                 batch_size=config.training.batch_size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = strategy.schedule_for(plans[name][0], bounds=_placeholder(strategy), warn=True)[0]
        _check_snapshots(name, strategy, plans[name], first)
        inner.update(_check_tuning(name, strategy, plans[name], config, dataset))
        for warning in caught:
            warnings.warn(f"strategies.{name}: {warning.message}", UserWarning, stacklevel=2)
    from kfold_clr.training.tuning import fingerprint_inputs

    prints = provenance.run_fingerprints(config, dataset, extra=fingerprint_inputs(config, dataset))
    return Prepared(config, dataset, splits, reserved, plans, inner, prints)


def _split(config: ExperimentConfig, dataset: Dataset) -> tuple[list[Split], np.ndarray | None]:
    """The splits, and the rows reserved for the shared range test (or None)."""
    reserved = None
    if config.range_test.reserve is not None:
        reserved = reserve_rows(dataset, config.range_test.reserve, seed=config.seed)
        if not any(s.range_test_scope == "shared_range_test" for s in config.strategies.values()):
            warnings.warn(f"range_test.reserve: {config.range_test.reserve} of the rows are set aside, but no "
                          "strategy uses bounds: shared_range_test; they are used by nothing", UserWarning,
                          stacklevel=3)
    if config.cv.splitter == "given":
        if reserved is not None:
            raise ConfigError(f"range_test.reserve: {config.range_test.reserve} cannot set rows aside from given "
                              "splits; reserve them before making the splits, or leave reserve out")
        return load_given_splits(config.base_dir / pathlib.Path(config.cv.path).expanduser(),
                                 dataset.n_samples), None
    return make_splits(dataset, splitter=config.cv.splitter, n_splits=config.cv.n_splits,
                       n_repeats=config.cv.n_repeats, shuffle=config.cv.shuffle, seed=config.seed,
                       exclude=reserved), reserved


def _placeholder(strategy: BaseStrategy) -> tuple[float, float] | None:
    """Stand-in bounds for a range-test strategy's schedule checks (None for fixed bounds)."""
    return PLACEHOLDER_BOUNDS if strategy.range_test_scope else None


def load_experiment_data(config: ExperimentConfig) -> tuple[ExperimentConfig, Dataset]:
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


def _check_tuning(name, strategy, plans, config, dataset) -> dict:
    """A tuned strategy's metric is one the folds record, and every fold's inner splits can be made;
    returns them, {(name, fold key): [Split]} (empty for an untuned strategy)."""
    from kfold_clr.training.tuning import inner_splits

    tune = strategy.tune
    if tune is None:
        return {}
    allowed = ["loss", *config.training.metrics]
    if tune.metric not in allowed:
        raise ConfigError(f"strategies.{name}.tune.metric: {tune.metric!r} must be one of {', '.join(allowed)} "
                          "(the loss or a metric of training.metrics)")
    inner = {}
    for plan in plans:
        try:
            inner[name, plan.key] = inner_splits(config, dataset, plan)
        except ValueError as error:
            raise ConfigError(f"strategies.{name}.tune: {tune.model_dump(exclude={'grid'})} cannot split the "
                              f"{len(plan.split.train)} training rows of fold {plan.key}: {error}") from None
        for split in inner[name, plan.key]:
            if len(split.train) == 0 or len(split.val) == 0:
                raise ConfigError(f"strategies.{name}.tune: {tune.model_dump(exclude={'grid'})} leaves no rows on "
                                  f"one side of {split.key} ({len(split.train)} train, {len(split.val)} validation)")
    return inner


def _check_snapshots(name, strategy, plans, first_schedule) -> None:
    """Warn when a fold's training holds fewer valid snapshot points than a snapshot ensemble
    asks for; every fold is checked (`continue` shifts each fold's cycle ends). `first_schedule`:
    the first fold's schedule, already built."""
    from kfold_clr.training.fold_plans import snapshot_updates

    snapshots = strategy.snapshot_settings
    if snapshots is None:
        return
    schedules = [first_schedule] + [strategy.schedule_for(plan, bounds=_placeholder(strategy), warn=False)[0]
                                    for plan in plans[1:]]
    counts = {plan.key: len(snapshot_updates(schedule, plan.iterations)) for plan, schedule in zip(plans, schedules)}
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


def inputs(config: ExperimentConfig) -> list[pathlib.Path]:
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
