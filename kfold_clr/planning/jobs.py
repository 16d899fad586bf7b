"""Jobs: the units of work an executor runs, and how the folds still to do become jobs.

A job is one fold of one strategy, or a chain of folds that must run in order
(`carry_weights`), or a group of folds trained together (fused). `form_jobs` makes
them, for the folds still to do (`build_jobs`) and a tuned strategy's grid fits (`tuning_jobs`)
alike; :func:`kfold_clr.execution.worker.run_job` runs one, in this process or in a worker.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

from kfold_clr.data.splits import steps_per_epoch
from kfold_clr.errors import ConfigError, KfoldClrError

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.planning.bounds import RangeTestBounds
    from kfold_clr.storage.provenance import Fingerprints
    from kfold_clr.storage.store import ResultsStore
    from kfold_clr.training.fold_plans import FoldPlan


@dataclasses.dataclass(frozen=True)
class BoundsUnavailable:
    """A fold's range test gave no bounds (in `Job.bounds`): the fold is recorded as failed with `reason`."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Job:
    """Folds to train in one go.

    Attributes:
        plans: tuple of FoldPlan. In order; a carry chain passes weights along.
        bounds: tuple. Per plan: (base_lr, max_lr) from a range test, None for fixed
            bounds, or BoundsUnavailable when its range test gave none.
        initial_weights: list of arrays or None. Weights that start a carry chain.
        fused: bool. Train the plans together as one fused model.
        restart: bool. The fold before the chain's first plan diverged: start it from
            fresh initial weights instead of that fold's (NaN) weights.
        checkpoint: kfold_clr.storage.checkpoints.Slot or None. Where the job saves its training state
            while it trains, and resumes from (`execution.checkpoint_every`).
    """

    plans: tuple
    bounds: tuple
    initial_weights: list | None = None
    fused: bool = False
    restart: bool = False
    checkpoint: object | None = None


@dataclasses.dataclass(frozen=True)
class Fusion:
    """Which strategies train fused, in fused models of at most `group_size` folds, and why not the others.

    Attributes:
        strategies: frozenset of str. Strategies whose folds train as branches of fused models.
        group_size: int. Most folds (branches) in one fused model: what fits in memory, or
            `execution.fused_group_size`.
        notes: list of str. Lines for the log.
    """

    strategies: frozenset = frozenset()
    group_size: int = 0
    notes: tuple = ()

    def __contains__(self, name):
        return name in self.strategies


_PROBES = {}  # what model_support said, per model and data shape (a run asks once)


def _probe(config, dataset):
    """(ok, reason, group size, values per sample) of the config's model, built once for the data's shape
    (`measure.values_per_sample`)."""
    import keras
    import numpy as np

    from kfold_clr.config.optimizers import slots_per_weight
    from kfold_clr.data.memory import fused_group_size
    from kfold_clr.training.fused.measure import values_per_sample
    from kfold_clr.training.fused.support import loss_function, model_support
    from kfold_clr.training.models import build_model

    input_shape = tuple(config.data.image_shape or dataset.x.shape[1:])
    key = (config.model.model_dump_json(), input_shape, dataset.n_outputs, dataset.task, config.training.loss,
           config.training.batch_size, config.training.optimizer.name, slots_per_weight(config.training.optimizer),
           config.execution.fused_group_size)
    if key not in _PROBES:
        keras.backend.clear_session(free_memory=False)
        try:
            model = build_model(config.model, input_shape=input_shape, n_outputs=dataset.n_outputs,
                                task=dataset.task)
            x = np.zeros((2, *input_shape), dtype="float32")
            y = np.asarray(dataset.y[:2])
            ok, reason = model_support(model, x, y, loss_function(config.training.loss))
            _PROBES[key] = (ok, reason, fused_group_size(model, config), values_per_sample(model))
        except KfoldClrError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a factory out of memory: its folds fail one by one
            first = str(error).splitlines()[0] if str(error) else ""
            reason = f"building the model raised {error.__class__.__name__}: {first}".rstrip(": ")
            _PROBES[key] = (False, reason, 0, 0.0)
        finally:
            keras.backend.clear_session(free_memory=False)
    return _PROBES[key]


def fusion_groups(config: ExperimentConfig, dataset: Dataset, n_folds: int | None = None, *,
                  keep: bool | None = None) -> Fusion:
    """The strategies to train fused, how many folds per fused model, and notes for the log.

    A fused branch trains exactly as its sequential fold (same batches, updates, dropout
    masks and batch-norm statistics, to floating-point order), so fused and sequential
    strategies stay paired. `auto` (the default) fuses every strategy that can be fused
    (all but `carry_weights` chains) when the model's layers vectorise over branches, else
    trains every fold one by one and says why; on a run large enough to be worth it
    (`measure.MEASURE_ABOVE`) it first times a few steps of the first fused group against one
    fold's model and trains fold by fold when fused is predicted slower (`kfold_clr.training.fused.measure`);
    `true` insists and refuses, naming the reason;
    `n_folds` (splits per strategy) only words the note;
    `false` never fuses. The choice is part of each strategy's fingerprint; a fused job that
    fails under `auto` trains its folds one by one (`worker.run_job`), rows `fused = False`.
    `keep` (True / False, `saved_fused_path`): a resumed run's saved folds trained that way, so
    `auto` goes on that way instead of measuring again (a new choice would refuse them).
    """
    if config.execution.fused_folds is False:
        return Fusion()
    from kfold_clr.training.fused import fused_support

    insist = config.execution.fused_folds is True
    fusable, notes = [], []
    for name in config.strategies:
        ok, reason = fused_support(config, [name])
        if ok:
            fusable.append(name)
        elif insist and not config.strategies[name].is_chain:
            raise ConfigError(f"execution.fused_folds: true, but strategy {name!r} cannot be fused "
                              f"({reason}); use 'auto' to train it fold by fold")
        else:
            notes.append(f"{name} trains fold by fold ({reason})")
    if not fusable:
        return Fusion(notes=tuple(notes))
    ok, reason, group_size, per_sample = _probe(config, dataset)
    if not ok:
        if insist:
            raise ConfigError(f"execution.fused_folds: true, but the model cannot be fused ({reason}); "
                              "use 'auto' to train folds one by one")
        return Fusion(notes=(*notes, f"every fold trains one by one: {reason}"))
    if not insist and keep is False:
        return Fusion(notes=(*notes, "training fold by fold, as the saved folds of this run were"))
    timing = None if insist or keep else _measured(config, dataset, n_folds, len(fusable), group_size, per_sample)
    if timing is not None and not timing.fused_faster:
        return Fusion(notes=(*notes, timing.note()))
    if timing is not None:
        notes.append(timing.note())
    if n_folds is not None and group_size >= n_folds * len(fusable):
        notes.append(f"training {', '.join(fusable)} as one fused model")
    else:
        notes.append(f"training {', '.join(fusable)} as fused models of up to {group_size} folds"
                     + ("" if config.execution.fused_group_size else " (what fits in a quarter of the memory)"))
    return Fusion(frozenset(fusable), group_size, tuple(notes))


def _measured(config, dataset, n_folds, n_strategies, group_size, per_sample):
    """`auto` on a run large enough to ask: a few timed steps of the first fused group against one
    fold's model (`kfold_clr.training.fused.measure`), or None where nothing is measured (a group of one
    branch, a tiny run, or `n_folds` unknown). Called once per run, by `fusion_groups`."""
    from kfold_clr.training.fused import measure

    if n_folds is None:
        return None
    folds = n_folds * n_strategies
    branches = min(group_size or folds, folds)
    work = per_sample * len(dataset.y) * config.training.epochs * folds
    if branches < 2 or work < measure.MEASURE_ABOVE:
        return None
    input_shape = tuple(config.data.image_shape or dataset.x.shape[1:])
    held_out = 1 / config.cv.n_splits if config.cv.n_splits else 0.2
    run_steps = config.training.epochs * steps_per_epoch(len(dataset.y) * (1 - held_out), config.training.batch_size)
    try:
        return measure.time_paths(config, dataset, input_shape, branches, run_steps=run_steps)
    except KfoldClrError:
        raise
    except Exception:  # noqa: BLE001 - not timed (e.g. out of memory): auto fuses, as without measuring
        return None


def saved_fused_path(config: ExperimentConfig, dataset: Dataset, store: ResultsStore, plans: dict,
                     prints: Fingerprints | None = None) -> Optional[bool]:
    """True / False when a saved fold of a strategy that could fuse was trained fused / sequentially
    (its fingerprint names the path), else None: what `fusion_groups(keep=...)` takes on a resume.
    `prints`: the run's fingerprints (`preflight.Prepared.prints`); computed here when not given."""
    from kfold_clr.training.fused import fused_support

    prints = prints if prints is not None else _fingerprints(config, dataset)
    for name, group in plans.items():
        if not fused_support(config, [name])[0]:
            continue  # trained fold by fold whatever auto chooses
        for plan in group:
            record = store.load_record(name, plan.key) or {}
            for path in (True, False):
                if record.get("fingerprint") == prints.of(name, fused=path) and \
                        record.get("row", {}).get("status") != "failed":
                    return path
    return None


def _fingerprints(config, dataset) -> Fingerprints:
    """The run's fingerprints, for a caller without preflight's (as `preflight.prepare` builds them)."""
    from kfold_clr.storage import provenance
    from kfold_clr.training.tuning import fingerprint_inputs

    return provenance.run_fingerprints(config, dataset, extra=fingerprint_inputs(config, dataset))


def form_jobs(config: ExperimentConfig, store: ResultsStore | None, plans: list[FoldPlan],
              bounds_source: RangeTestBounds, fused: Fusion, *, bounds_of: list[FoldPlan] | None = None) -> list[Job]:
    """The one place jobs are formed: `plans` (in order) with their range-test bounds, as fused groups
    (the strategies in `fused`), carry chains (a finished fold breaks a chain), or single folds.

    Args:
        plans: list of FoldPlan. Folds of any strategies, outer folds or grid fits.
        bounds_of: list of FoldPlan or None. Per plan, the plan whose range-test bounds it takes (a
            grid fit takes its outer fold's); None: each its own.
        store: ResultsStore. Where a chain that starts after a finished fold finds its weights.
    """
    planned = list(zip(plans, bounds_of if bounds_of is not None else plans))
    per_fold = [outer.split for plan, outer in planned
                if config.strategies[plan.strategy].range_test_scope == "per_fold_range_test"]
    if per_fold and fused.strategies:  # the model fuses: k per-fold range tests as one sweep
        bounds_source.prefetch(per_fold, group_size=fused.group_size)
    by_strategy = {}
    for plan, outer in planned:
        by_strategy.setdefault(plan.strategy, []).append((plan, _bounds(config, bounds_source, outer)))
    jobs, fused_items = [], []
    for name, items in by_strategy.items():
        if name in fused:
            fused_items.extend(items)
        elif config.strategies[name].is_chain:
            jobs.extend(_chain_jobs(store, name, items))
        else:
            jobs.extend(Job((plan,), (bound,)) for plan, bound in items)
    if fused_items:
        jobs[:0] = fused_jobs([plan for plan, _ in fused_items], [bound for _, bound in fused_items],
                              fused.group_size or len(fused_items))
    return jobs


def _bounds(config, bounds_source, plan):
    """A plan's (base_lr, max_lr) from its range test, None for fixed bounds, or BoundsUnavailable."""
    from kfold_clr.planning.bounds import RangeTestFailed

    strategy = config.strategies[plan.strategy]
    if not strategy.range_test_scope:
        return None
    try:
        return bounds_source.bounds(strategy, plan)
    except RangeTestFailed as error:
        return BoundsUnavailable(str(error))


def _chain_jobs(store, name, items) -> list:
    """A carry chain's folds still to do as jobs: one per unbroken run of consecutive folds."""
    jobs, group = [], []
    for plan, bound in items:
        if group and plan.carry_from != group[-1][0].key:  # a finished fold breaks the chain
            jobs.append(chain_job(store, name, [p for p, _ in group], [b for _, b in group]))
            group = []
        group.append((plan, bound))
    jobs.append(chain_job(store, name, [p for p, _ in group], [b for _, b in group]))
    return jobs


def build_jobs(config: ExperimentConfig, store: ResultsStore, names: list[str], todo: dict,
               bounds_source: RangeTestBounds, fused: Fusion) -> list[Job]:
    """Jobs for the folds still to do (`todo`: strategy -> [FoldPlan]) of the strategies `names`."""
    return form_jobs(config, store, [plan for name in names for plan in todo[name]], bounds_source, fused)


def fused_jobs(plans: list[FoldPlan], bounds: list, group_size: int) -> list[Job]:
    """Fused jobs of at most `group_size` folds, fold by fold (a fold's strategies share its data)."""
    order = sorted(range(len(plans)), key=lambda i: (plans[i].split.repeat, plans[i].split.fold))
    return [Job(tuple(plans[i] for i in part), tuple(bounds[i] for i in part), fused=True)
            for part in (order[start:start + group_size] for start in range(0, len(order), group_size))]


def tuning_jobs(config: ExperimentConfig, fits: list, todo: dict, bounds_source: RangeTestBounds,
                fused: Fusion) -> list[Job]:
    """Jobs for the grid fits of tuned strategies (`fits`: (name, point index, plan) items): fused
    groups where the strategy fuses, else one job per fit. A fit takes its outer fold's range-test
    bounds: they saw no outer validation row, but a per-fold range test did see the inner
    validation rows, so inner scores of range-test strategies lean slightly optimistic."""
    outer = {(p.strategy, p.split.repeat, p.split.fold): p for group in todo.values() for p in group}
    plans = [fit for _, _, fit in fits]
    bounds_of = [outer[fit.strategy, fit.split.repeat, fit.split.fold] for fit in plans]
    return form_jobs(config, None, plans, bounds_source, fused, bounds_of=bounds_of)


def chain_job(store: ResultsStore, name: str, plans: list[FoldPlan], bounds: list) -> Job:
    """One carry chain's job: from its first fold's carried weights, or afresh after a fold that diverged."""
    first = plans[0]
    if first.carry_from is None:
        return Job(tuple(plans), tuple(bounds))
    before = store.load_record(name, first.carry_from) or {}
    if before.get("row", {}).get("status") == "diverged":  # NaN weights: the chain starts afresh
        return Job(tuple(plans), tuple(bounds), restart=True)
    return Job(tuple(plans), tuple(bounds), initial_weights=store.load_weights(name, first.carry_from))


def checkpointed(jobs: list[Job], store: ResultsStore, prints: dict[str, str], *, fresh: bool = False) -> list[Job]:
    """The jobs, each with its checkpoint slot in `store` (`kfold_clr.storage.checkpoints`); `fresh` (a run
    that discarded earlier results) first deletes their saved checkpoints, so nothing resumes."""
    from kfold_clr.storage import checkpoints

    placed = [dataclasses.replace(job, checkpoint=checkpoints.slot(store, job, prints)) for job in jobs]
    for job in placed if fresh else ():
        checkpoints.remove(job.checkpoint)
    return placed
