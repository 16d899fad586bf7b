"""Jobs: the units of work an executor runs, and how the folds still to do become jobs.

A job is one fold of one strategy, or a chain of folds that must run in order
(`carry_weights`), or a group of folds trained together (fused). `build_jobs`
makes them; :func:`kfold_clr.worker.run_job` runs one, in this process or in a worker.
"""

import dataclasses
from typing import Optional

from kfold_clr.errors import ConfigError
from kfold_clr.strategies import uses_range_test


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
    """

    plans: tuple
    bounds: tuple
    initial_weights: Optional[list] = None
    fused: bool = False
    restart: bool = False


def fusion_groups(config):
    """The strategies to train fused, and notes for the log.

    Fused and sequential folds walk the same batches (`strategies.batch_order`) with the
    same updates, so without dropout they give the same numbers up to floating-point
    order. `auto` (the default) fuses when every strategy of the config can be fused
    exactly and the model has no dropout (fused dropout masks are not Keras's); else
    every strategy runs sequentially, so they stay paired. `true` insists (dropout
    included) and names what cannot be fused. The choice is part of each strategy's
    fingerprint: a results directory never mixes the two paths.
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
    if config.execution.fused_folds == "auto" and config.model.dropout:
        return set(), [f"sequential folds: dropout {config.model.dropout} draws other masks when fused "
                       "(execution.fused_folds: true fuses anyway)"]
    return set(names), [f"training {', '.join(names)} as one fused model"]


def build_jobs(config, store, names, todo, bounds_source, fused):
    """Jobs for the folds still to do: fused groups, carry chains, or single folds."""
    from kfold_clr.bounds import RangeTestFailed

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
                    jobs.append(chain_job(store, name, group, group_bounds))
                    group, group_bounds = [], []
                group.append(plan)
                group_bounds.append(bound)
            jobs.append(chain_job(store, name, group, group_bounds))
        else:
            jobs.extend(Job((plan,), (bound,)) for plan, bound in zip(remaining, bounds))
    if fused_plans:
        jobs.insert(0, Job(tuple(fused_plans), tuple(fused_bounds), fused=True))
    return jobs


def chain_job(store, name, plans, bounds):
    first = plans[0]
    if first.carry_from is None:
        return Job(tuple(plans), tuple(bounds))
    before = store.load_record(name, first.carry_from) or {}
    if before.get("row", {}).get("status") == "diverged":  # NaN weights: the chain starts afresh
        return Job(tuple(plans), tuple(bounds), restart=True)
    return Job(tuple(plans), tuple(bounds), initial_weights=store.load_weights(name, first.carry_from))
