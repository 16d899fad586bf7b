"""Run a whole experiment: every strategy on every (repeat, fold), resumable.

This is the Python API behind the command line::

    results = kfold_clr.run_experiment("experiments/digits-clr.yaml")
    results.folds        # one row per strategy x repeat x fold
    results.summary      # mean, std, interval per strategy and metric
    again = kfold_clr.load_results("results/digits-clr")
"""

import dataclasses
import json
import pathlib
import sys
import warnings

import numpy as np
import pandas as pd

from kfold_clr import interrupt, provenance
from kfold_clr.config import config_base_dir, dump_yaml, import_object, load_config
from kfold_clr.data import data_file, load_dataset
from kfold_clr.errors import ConfigError, KfoldClrError, ResultsError
from kfold_clr.ownership import check_output_dir
from kfold_clr.resources import check_model_size
from kfold_clr.splits import Split, make_splits, reserve_rows, resolve_splitter, splits_to_json
from kfold_clr.store import ResultsStore, fingerprint
from kfold_clr.strategies import epochs_to_iterations, plan_folds, uses_range_test


@dataclasses.dataclass
class Results:
    """What a run produced, as DataFrames, plus where it lives on disk."""

    directory: pathlib.Path
    folds: pd.DataFrame
    history: pd.DataFrame
    summary: pd.DataFrame = None
    comparison: pd.DataFrame = None

    @property
    def n_failed(self) -> int:
        if self.folds.empty or "status" not in self.folds:
            return 0
        return int((self.folds["status"] == "failed").sum())


# ----------------------------------------------------------------------------- preparation
def _fold_dependencies(config, dataset) -> dict:
    """The config parts (and the data) every fold's result depends on."""
    dependencies = {"seed": config.seed, "data": config.data.model_dump(mode="json"),
                    "data_content": dataset.content_hash(),
                    "model": config.model.model_dump(mode="json"),
                    "training": config.training.model_dump(mode="json"),
                    "cv": config.cv.model_dump(mode="json")}
    if config.range_test.reserve is not None:  # rows out of every split
        dependencies["reserve"] = config.range_test.reserve
    if config.model.factory is not None:
        dependencies["factory_source"] = provenance.code_fingerprint(config.model.factory)
    return dependencies


def strategy_fingerprint(config, dataset, name, *, fused=False) -> str:
    """What a strategy's saved folds must match to be reused: config, data, execution path."""
    strategy = config.strategies[name]
    payload = {**_fold_dependencies(config, dataset), "strategy": strategy.model_dump(mode="json"),
               "path": "fused" if fused else "sequential"}
    if uses_range_test(strategy):
        payload["range_test"] = config.range_test.model_dump(mode="json")
    if getattr(strategy, "scale_fn", None) is not None:
        payload["scale_fn_source"] = provenance.code_fingerprint(strategy.scale_fn)
    return fingerprint(payload)


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


def _select_strategies(config, only):
    names = list(config.strategies)
    if not only:
        return names
    unknown = [name for name in only if name not in config.strategies]
    if unknown:
        raise ConfigError(f"--only: {unknown[0]!r} is not one of the strategies: {', '.join(names)}")
    return [name for name in names if name in only]


def prepare(source, *, overrides=None):
    """Load config and data, make the splits and check everything before training.

    Returns:
        (config, dataset, splits, reserved): `reserved` holds the rows set aside for
        the shared range test (`range_test.reserve`), or None. Raises ConfigError /
        DataError on bad input.
    """
    from kfold_clr.strategies import build_schedule

    config = load_config(source, overrides=overrides)
    check_output_dir(config.output_dir, protected=_inputs(config))
    dataset = load_dataset(config.data, base_dir=config_base_dir(config), seed=config.seed)
    if config.model.kind == "cnn" and config.data.image_shape is None:
        raise ConfigError("data.image_shape: None must be a per-sample shape such as "
                          "[8, 8, 1] (required for model.kind 'cnn')")
    reserved = None
    if config.range_test.reserve is not None:
        reserved = reserve_rows(dataset, config.range_test.reserve, seed=config.seed)
        if not any(getattr(s, "bounds", None) == "shared_range_test" for s in config.strategies.values()):
            warnings.warn(f"range_test.reserve: {config.range_test.reserve} of the rows are set aside, but no "
                          "strategy uses bounds: shared_range_test; they are used by nothing", UserWarning,
                          stacklevel=2)
    splits = make_splits(dataset, splitter=config.cv.splitter, n_splits=config.cv.n_splits,
                         n_repeats=config.cv.n_repeats, shuffle=config.cv.shuffle, seed=config.seed,
                         exclude=reserved)
    from kfold_clr.models import default_loss, default_metrics

    # The task's defaults, filled once: config.yaml, fingerprints and every fold see them.
    config.training.loss = config.training.loss or default_loss(dataset.task)
    if config.training.metrics is None:
        config.training.metrics = default_metrics(dataset.task)
    _check_keras_names(config)
    check_model_size(config, input_shape=config.data.image_shape or dataset.x.shape[1:],
                     n_outputs=dataset.n_outputs)
    if config.model.factory is not None:
        import_object(config.model.factory, key="model.factory")
    _check_training_choices(config, dataset.task)
    _check_model(config, dataset, splits[0])
    _check_range_test_monitor(config)
    if config.execution.fused_folds is True:
        _fusion_groups(config)
    for name, strategy in config.strategies.items():
        if strategy.schedule == "clr" and strategy.scale_fn is not None:
            import_object(strategy.scale_fn, key=f"strategies.{name}.scale_fn")
        plan = plan_folds(name, strategy, splits[:1], seed=config.seed, epochs=config.training.epochs,
                          batch_size=config.training.batch_size)[0]
        bounds = (1e-4, 1e-3) if uses_range_test(strategy) else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            schedule, _ = build_schedule(strategy, plan, bounds=bounds, warn=True)
        _check_snapshots(name, strategy, splits, config)
        for warning in caught:
            warnings.warn(f"strategies.{name}: {warning.message}", UserWarning, stacklevel=2)
    return config, dataset, splits, reserved


def _check_model(config, dataset, split):
    """Build, compile and evaluate the model once on two samples: bad factories, shapes,
    losses or metrics are reported before any results directory exists."""
    import keras

    from kfold_clr.models import build_model, compile_model, make_optimizer
    from kfold_clr.trainer import prepare_fold

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


def _check_snapshots(name, strategy, splits, config):
    """Warn when a fold's training holds fewer valid snapshot points than a snapshot ensemble
    asks for; every fold is checked (`continue` shifts each fold's cycle ends)."""
    from kfold_clr.strategies import build_schedule, snapshot_updates

    snapshots = getattr(strategy, "snapshots", None)
    if snapshots is None:
        return
    plans = plan_folds(name, strategy, splits, seed=config.seed, epochs=config.training.epochs,
                       batch_size=config.training.batch_size)
    bounds = (1e-4, 1e-3) if uses_range_test(strategy) else None
    counts = {plan.key: len(snapshot_updates(build_schedule(strategy, plan, bounds=bounds, warn=False)[0],
                                             plan.iterations)) for plan in plans}
    short = {key: count for key, count in counts.items() if count < snapshots.keep}
    if short:
        fewest = min(short, key=short.get)
        warnings.warn(f"strategies.{name}.snapshots.keep: {snapshots.keep} snapshots asked for, but "
                      f"{len(short)} of {len(plans)} folds hold fewer cycle ends after a full cycle of "
                      f"training (fold {fewest}: {short[fewest]}); those ensembles have fewer members "
                      "(n_snapshots in folds.csv)", UserWarning, stacklevel=3)


def validate_experiment(source, *, overrides=None) -> str:
    """Check config and data without training; return the resolved config as YAML."""
    config, dataset, splits, reserved = prepare(source, overrides=overrides)
    splitter = resolve_splitter(config.cv.splitter, task=dataset.task, has_groups=dataset.groups is not None)
    header = (f"# OK: {dataset.description}; task {dataset.task}, {dataset.n_samples} samples, "
              f"{dataset.x.shape[1]} features, {dataset.n_outputs} output(s)\n"
              f"# {len(splits)} splits ({splitter}, {config.cv.n_splits} folds x "
              f"{config.cv.n_repeats} repeats); {len(config.strategies)} strategies\n"
              + (f"# {len(reserved)} rows set aside for the shared range test\n" if reserved is not None else ""))
    return header + dump_yaml(config.to_dict())


# ----------------------------------------------------------------------------- range tests
def _range_test_kwargs(config, seed):
    """`lr_range_test`'s arguments from the `range_test:` section (`reserve` acts before splitting)."""
    return {**config.range_test.model_dump(exclude={"reserve"}), "batch_size": config.training.batch_size,
            "seed": seed}


def auto_beta(iterations: int) -> float:
    """EMA factor whose memory (~1/(1-beta) points) is 5% of the sweep, within [0.6, 0.98].

    A fixed 0.98 remembers ~50 points: on a short sweep the smoothed curve lags
    the raw one by a large part of the LR range and the bounds come out too high.
    """
    return float(min(0.98, max(0.6, 1.0 - 20.0 / iterations)))


def range_test_plan(config, split):
    """The plan a range test on `split` runs under: the fold's seed, one epoch of its batches."""
    return plan_folds("range_test", None, [split], seed=config.seed, epochs=1,
                      batch_size=config.training.batch_size)[0]


def range_test_on_split(config, dataset, plan):
    """Run the configured LR range test on one split's training data (weights restored after)."""
    from kfold_clr.models import compile_model, make_optimizer
    from kfold_clr.range_test import lr_range_test
    from kfold_clr.range_test.runner import DEFAULT_ITERATIONS
    from kfold_clr.trainer import initial_model, prepare_fold

    x_train, y_train, _, _ = prepare_fold(dataset, plan.split, config.data)
    model = initial_model(config, dataset, plan, x_train.shape[1:])
    compile_model(model, make_optimizer(config.training.optimizer, config.range_test.min_lr),
                  loss=config.training.loss, metrics=config.training.metrics)
    kwargs = _range_test_kwargs(config, plan.seed)
    epochs = kwargs.pop("epochs")
    if kwargs["iterations"] is None and epochs is None:
        kwargs["iterations"] = DEFAULT_ITERATIONS
    kwargs["iterations"] = max(2, epochs_to_iterations(kwargs["iterations"], epochs, plan.steps_per_epoch))
    if kwargs["beta"] is None:
        kwargs["beta"] = auto_beta(kwargs["iterations"])
    try:
        return lr_range_test(model, x_train, y_train, **kwargs)
    except ValueError as error:
        raise ConfigError(f"range_test: {error}") from None


class RangeTestBounds:
    """Runs (or reloads) the range tests that `bounds: *_range_test` strategies use.

    The shared range test runs on the reserved rows (`range_test.reserve`), or else on
    the first split's training rows, which are validation rows of the other folds:
    `rows_seen` tells which rows chose a fold's bounds, so that overlap can be flagged.
    """

    def __init__(self, config, dataset, splits, store, log, reserved=None, warn=None):
        self.config, self.dataset, self.splits, self.store, self.log = config, dataset, splits, store, log
        self.warn = warn or log
        self.fingerprint = fingerprint({**_fold_dependencies(config, dataset),
                                        "range_test": config.range_test.model_dump(mode="json")})
        self._shared_split = (Split(0, 0, reserved, reserved[:0]) if reserved is not None else splits[0])
        self._bounds = {}  # scope -> saved payload, read or run once

    def rows_seen(self, strategy_cfg, plan):
        """The rows whose data chose this fold's bounds (empty for fixed bounds)."""
        kind = uses_range_test(strategy_cfg)
        if kind is None:
            return np.array([], dtype=int)
        return self._shared_split.train if kind == "shared_range_test" else plan.split.train

    def bounds(self, strategy_cfg, plan):
        """(base_lr, max_lr) for a fold of a `*_range_test` strategy; RangeTestFailed if none."""
        shared = strategy_cfg.bounds == "shared_range_test"
        scope, split = ("shared", self._shared_split) if shared else (plan.split.key, plan.split)
        if scope not in self._bounds:
            saved = self.store.load_range_test(scope, self.fingerprint)
            self._bounds[scope] = saved if saved is not None else self._run(scope, split)
        saved = self._bounds[scope]
        if saved.get("error"):
            raise RangeTestFailed(f"range test ({scope}): {saved['error']}")
        return saved["base_lr"], saved["max_lr"]

    def _run(self, scope, split):
        result = range_test_on_split(self.config, self.dataset, range_test_plan(self.config, split))
        payload = {"scope": scope, "fingerprint": self.fingerprint, "versions": provenance.versions(),
                   "history": result.history.to_dict(orient="records")}
        payload.update(turned_up=result.turned_up, next_max_lr=result.next_max_lr)
        try:
            suggestion = result.suggest()
            payload.update(base_lr=float(suggestion.base_lr), max_lr=float(suggestion.max_lr),
                           method=suggestion.method)
            self.log(f"range test ({scope}, {result.describe_sweep()}): base_lr={suggestion.base_lr:.3g} "
                     f"max_lr={suggestion.max_lr:.3g} ({suggestion.method})")
        except KfoldClrError as error:
            payload.update(base_lr=None, max_lr=None, error=str(error))
        if result.top_note():
            self.warn(f"range test ({scope}): {result.top_note()}")
        self.store.save_range_test(scope, payload)
        return payload


class RangeTestFailed(RuntimeError):
    """A range test gave no usable bounds; the folds that needed it are recorded as failed."""


# ----------------------------------------------------------------------------- running
def _payload(config, dataset):
    """The plain-data context a worker process or Ray task rebuilds the run from.

    Its `fingerprint` (the key under which a worker caches the context) covers the
    whole config and the data's content, so a reused worker never trains an older config.
    """
    payload = {"config": config.to_dict(), "base_dir": str(config_base_dir(config).resolve()),
               "output_dir": str(config.output_dir.resolve())}
    return {**payload, "fingerprint": fingerprint({**payload, "data": _fold_dependencies(config, dataset)})}


def _fusion_groups(config):
    """The strategies to train fused, and notes for the log.

    `auto` fuses only when every strategy of the config can be fused exactly, so
    that all strategies keep sharing batch order (fused and sequential folds draw
    their batches differently); `true` insists and names what cannot be fused.
    The choice is part of each strategy's fingerprint: a results directory never
    mixes the two paths.
    """
    names = list(config.strategies)
    if config.execution.fused_folds is False:
        return set(), []
    from kfold_clr.fused import fused_support

    for name in names:
        ok, reason = fused_support(config, [name])
        if ok:
            continue
        if config.execution.fused_folds is True:
            raise ConfigError(f"execution.fused_folds: true, but strategy {name!r} cannot be fused "
                              f"exactly ({reason}); use 'auto' to fall back to sequential folds")
        return set(), [f"sequential folds for every strategy, to keep them paired: {name!r} cannot be "
                       f"fused exactly ({reason})"]
    return set(names), [f"training {', '.join(names)} as one fused model"]


def _make_jobs(config, store, names, todo, bounds_source, fused):
    """Jobs for the folds still to do: fused groups, carry chains, or single folds."""
    from kfold_clr.jobs import BoundsUnavailable, Job

    jobs, fused_plans, fused_bounds = [], [], []
    for name in names:
        strategy, remaining = config.strategies[name], todo[name]
        if not remaining:
            continue
        bounds = []
        for plan in remaining:
            if not uses_range_test(strategy):
                bounds.append(None)
                continue
            try:
                bounds.append(bounds_source.bounds(strategy, plan))
            except RangeTestFailed as error:
                bounds.append(BoundsUnavailable(str(error)))
        if name in fused:
            fused_plans.extend(remaining)
            fused_bounds.extend(bounds)
        elif getattr(strategy, "carry_weights", False):
            group, group_bounds = [], []
            for plan, bound in zip(remaining, bounds):
                if group and plan.carry_from != group[-1].key:  # a finished fold breaks the chain
                    jobs.append(_chain(store, name, group, group_bounds))
                    group, group_bounds = [], []
                group.append(plan)
                group_bounds.append(bound)
            jobs.append(_chain(store, name, group, group_bounds))
        else:
            jobs.extend(Job((plan,), (bound,)) for plan, bound in zip(remaining, bounds))
    if fused_plans:
        jobs.insert(0, Job(tuple(fused_plans), tuple(fused_bounds), fused=True))
    return jobs


def _chain(store, name, plans, bounds):
    from kfold_clr.jobs import Job

    first = plans[0]
    if first.carry_from is None:
        return Job(tuple(plans), tuple(bounds))
    before = store.load_record(name, first.carry_from) or {}
    if before.get("row", {}).get("status") == "diverged":  # NaN weights: the chain starts afresh
        return Job(tuple(plans), tuple(bounds), restart=True)
    return Job(tuple(plans), tuple(bounds), initial_weights=store.load_weights(name, first.carry_from))


def run_experiment(source, *, overrides=None, only=None, resume=True, verbosity=1,
                   accept_versions=False, command=None) -> Results:
    """Run every strategy of an experiment on every split and write the results directory.

    Args:
        source: str, path or dict. The experiment YAML (or its content).
        overrides: list of str. ``key.path=value`` items applied to the config.
        only: list of str. Run only these strategies (others keep their saved results).
        resume: bool. Skip folds already finished under the same config (default);
            False wipes earlier results first.
        verbosity: int. 0 quiet, 1 progress, 2 per-epoch lines.
        accept_versions: bool. Reuse saved folds computed with other versions of
            kfold_clr, Keras, TensorFlow or scikit-learn (refused by default).
        command: str or None. How the run was started, for `meta.json`
            (default: this process's command line).

    Returns:
        Results.
    """
    config, dataset, splits, reserved = prepare(source, overrides=overrides)
    names = _select_strategies(config, only)
    store = ResultsStore(config.output_dir).open(protected=_inputs(config))
    with interrupt.watching():
        return _run(config, dataset, splits, names, store, verbosity, reserved=reserved,
                    accept_versions=accept_versions,
                    discard=None if resume else (names if only else "all"),
                    command=command or " ".join(sys.argv) or "python")


def _inputs(config) -> list:
    """What a results directory must never contain: the config's folder and the data file."""
    inputs = [config_base_dir(config)]
    path = data_file(config.data, base_dir=config_base_dir(config))
    return inputs + ([path] if path is not None else [])


def _run(config, dataset, splits, names, store, verbosity, *, command, reserved=None, discard=None,
         accept_versions=False):
    """Train what is still to do; `discard` ("all" or strategy names) first deletes earlier results."""
    from kfold_clr.executors import WorkerDied, make_executor
    from kfold_clr.jobs import WorkerContext, describe_error, failed_record
    from kfold_clr.progress import RunProgress

    executor, runs = None, None
    log = lambda message: print(f"kfold-clr: {message}", file=sys.stderr)  # noqa: E731
    try:
        run = provenance.run_record(seed=config.seed, command=command)
        plans = {name: plan_folds(name, strategy, splits, seed=config.seed, epochs=config.training.epochs,
                                  batch_size=config.training.batch_size)
                 for name, strategy in config.strategies.items()}
        fused, fusion_notes = _fusion_groups(config)
        prints = {name: strategy_fingerprint(config, dataset, name, fused=name in fused) for name in plans}
        _refuse_stale_others(store, names, plans, prints)
        if discard is not None:
            store.discard(None if discard == "all" else discard)
        todo = {name: [p for p in plans[name] if store.finished(name, p.key, prints[name]) is None]
                for name in names}
        kept = [record for record in store.records(list(plans)) if record["row"].get("status") != "failed"]
        changes = provenance.check_versions([*kept, *store.range_tests()], run, directory=store.directory,
                                            accept=accept_versions)
        if changes:
            run["accepted_version_changes"] = changes
            log(f"keeping results computed with other versions: {'; '.join(changes)}")
        store.write_text("config.yaml", dump_yaml(config.to_dict()))
        splitter = resolve_splitter(config.cv.splitter, task=dataset.task, has_groups=dataset.groups is not None)
        store.write_text("splits.json", splits_to_json(splits, splitter=splitter, reserved=reserved))
        runs = _record_run(store, run)
        versions = {name: run[name] for name in provenance.TRACKED}
        with RunProgress(sum(p.epochs for group in todo.values() for p in group), verbosity=verbosity) as progress:
            for note in fusion_notes if any(todo.values()) else ():
                progress.log(f"fused folds: {note}")
            bounds_source = RangeTestBounds(config, dataset, splits, store, progress.log, reserved=reserved,
                                            warn=progress.warn)
            jobs = _make_jobs(config, store, names, todo, bounds_source, fused)
            executor = make_executor(config.execution, context=WorkerContext(config, dataset),
                                     payload=_payload(config, dataset), log=progress.warn)
            options = {}
            if executor.name == "local":
                options = {"progress": progress.epoch_done,
                           "snapshot_store": lambda plan, snaps: store.save_snapshots(plan.strategy, plan.key, snaps),
                           "verbose_errors": verbosity >= 2}
            for job, outcome in executor.run(jobs, **options):
                if isinstance(outcome, Exception):
                    error = (str(outcome) if isinstance(outcome, WorkerDied)
                             else f"worker failed: {describe_error(outcome)}")
                    outcome = [failed_record(plan, error) for plan in job.plans]
                for plan, record in zip(job.plans, outcome):
                    _flag_optimism(record["row"], config, plan, bounds_source)
                    record["fingerprint"] = prints[plan.strategy]
                    record["versions"] = versions
                    record["row"]["fused"] = job.fused
                    if record.get("weights") is not None:
                        store.save_weights(plan.strategy, plan.key, record["weights"])
                    store.save_record(plan.strategy, plan.key, record)
                    progress.fold_done(plan, record["row"])
                interrupt.check()
        _record_run(store, run, runs, finished=provenance.now(), outcome="finished")
        return _finish(store, config, log=log)
    except KeyboardInterrupt as stop:
        # What finished is saved; tables and report show it at once. Rerun to resume.
        if runs is not None:
            _record_run(store, run, runs, finished=provenance.now(),
                        outcome=f"interrupted ({stop.args[0] if stop.args else 'SIGINT'})")
        try:
            _finish(store, config, log=log)
        except Exception as error:  # noqa: BLE001 - never mask the interrupt
            log(f"tables not rebuilt after the interrupt: {describe_error(error)}")
        raise
    finally:
        if executor is not None:
            executor.close()
        from kfold_clr.trainer import MODEL_POOL

        MODEL_POOL.clear()
        store.close()


EARLY_STOPPING_REASON = "early stopping chose the epoch on the validation fold"


def _flag_optimism(row, config, plan, bounds_source):
    """Mark a fold `optimistic` when its validation rows helped choose its training:
    early stopping, or a shared range test that ran on some of those rows."""
    reasons = []
    if config.training.early_stopping is not None:
        reasons.append(EARLY_STOPPING_REASON)
    seen = np.intersect1d(bounds_source.rows_seen(config.strategies[plan.strategy], plan), plan.split.val)
    if len(seen):
        reasons.append(f"the shared range test that chose its LR bounds ran on {len(seen)} of its "
                       f"{len(plan.split.val)} validation rows")
    row["optimistic"] = bool(reasons)
    row["optimistic_reason"] = "; ".join(reasons)


def _record_run(store, run, runs=None, **updates):
    """Append this run's record to `meta.json` (first call) or update it; returns the run list."""
    if runs is None:
        runs = [*provenance.run_history(store.load_meta()), run]
    run.update(updates)
    store.write_text("meta.json", json.dumps({"runs": runs}, indent=2))
    return runs


def _refuse_stale_others(store, names, plans, prints):
    """Strategies left out by `--only` keep their results, which the tables and report show next
    to the new ones: they must come from the same config, or the comparison is not paired."""
    for name in plans:
        if name in names:
            continue
        try:
            for plan in plans[name]:
                store.finished(name, plan.key, prints[name])
        except ResultsError:
            raise ResultsError(f"--only: strategy {name!r} has results from a different config in "
                               f"{str(store.directory)!r}; run it too (add it to --only), or drop --only "
                               f"and rerun with --fresh") from None


def _save_tables(store, config):
    names = list(config.strategies)
    return store.write_tables(store.records(names), strategies=names, range_tests=store.range_tests())


def _finish(store, config, log=print) -> Results:
    """Rebuild the tables, summary, comparison and report from the saved records."""
    from kfold_clr.report import build_report

    folds, history = _save_tables(store, config)
    summary = comparison = None
    if not folds.empty:
        try:
            build_report(store.directory)
        except ResultsError as error:  # e.g. every fold failed or diverged: nothing to score
            log(f"report not written: {error}")
        else:
            summary = _read_csv(store.directory / "summary.csv")
            comparison = _read_csv(store.directory / "comparison.csv")
    return Results(store.directory, folds, history, summary, comparison)


def _read_csv(path):
    path = pathlib.Path(path)
    return pd.read_csv(path) if path.exists() else None


def load_results(directory) -> Results:
    """Load a results directory written by `run_experiment`."""
    directory = pathlib.Path(directory)
    if not (directory / "folds.csv").exists():
        raise ResultsError(f"{directory}: no folds.csv here; is it a kfold_clr results directory?")
    try:
        folds = pd.read_csv(directory / "folds.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsError(f"{directory / 'folds.csv'}: cannot be read ({error})") from None
    history = _read_csv(directory / "history.csv")
    return Results(directory, folds, history if history is not None else pd.DataFrame(),
                   _read_csv(directory / "summary.csv"), _read_csv(directory / "comparison.csv"))


# ----------------------------------------------------------------------------- range-test verb
def run_range_test_command(source, *, fold=0, overrides=None):
    """`kfold-clr range-test`: one range test on a fold's training split; writes CSV and PNG."""
    config, dataset, splits, _ = prepare(source, overrides=overrides)
    if not 0 <= fold < len(splits):
        raise ConfigError(f"--fold: {fold} must be between 0 and {len(splits) - 1}")
    plan = range_test_plan(config, splits[fold])
    store = ResultsStore(config.output_dir).open(protected=_inputs(config))
    try:
        result = range_test_on_split(config, dataset, plan)
        paths = result.save(store.path("range_test", plan.key))
    finally:
        store.close()
    print(f"range test on fold {plan.key}'s training split: {result.describe_sweep()}")
    print(result.summary())
    try:
        print("\nPaste into a strategy:\n" + result.yaml_snippet())
    except KfoldClrError as error:
        print(f"\nNo bounds to suggest: {error}")
    for path in paths.values():
        print(f"wrote {path}")
    return result
