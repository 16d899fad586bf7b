"""Plans, schedules and fingerprints are built once, in preflight, and handed on; jobs are formed in
one function (issue 25)."""

import copy
import sys
import types

import numpy as np
import pytest

from kfold_clr.data.splits import Split
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.planning import jobs
from kfold_clr.planning.preflight import Prepared, prepare
from kfold_clr.storage import provenance
from kfold_clr.training import fold_plans
from kfold_clr.training.fold_plans import FoldPlan, plan_folds


def _counting(monkeypatch, module, name, *, everywhere=False) -> dict:
    """Replace `module.name` (and, with `everywhere`, every kfold_clr module's binding of it) by a
    wrapper that counts its calls; returns the counts, keyed by the first argument."""
    original, counts = getattr(module, name), {}

    def counted(*args, **kwargs):
        key = args[0] if args and isinstance(args[0], str) else "calls"
        counts[key] = counts.get(key, 0) + 1
        return original(*args, **kwargs)

    modules = [module] + ([m for m in list(sys.modules.values()) if m is not None and m is not module
                           and getattr(m, "__name__", "").startswith("kfold_clr")
                           and getattr(m, name, None) is original] if everywhere else [])
    for target in modules:
        monkeypatch.setattr(target, name, counted)
    return counts


def _with_tuned(tiny_experiment) -> dict:
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 1
    experiment["strategies"] = {
        "constant": experiment["strategies"]["constant"],
        "clr_continue": experiment["strategies"]["clr_continue"],
        "step": {"schedule": "step", "lr": [0.01, 0.1], "factor": 0.5, "every_epochs": 1,
                 "tune": {"select": "inner_cv", "n_splits": 2}},
    }
    return experiment


@pytest.mark.slow
def test_a_run_plans_each_strategy_once_and_computes_its_fingerprints_once(tiny_experiment, monkeypatch):
    planned = _counting(monkeypatch, fold_plans, "plan_folds", everywhere=True)
    dependencies = _counting(monkeypatch, provenance, "fold_dependencies")
    strategy_prints = _counting(monkeypatch, provenance, "_strategy_prints")
    experiment = _with_tuned(tiny_experiment)
    experiment["cv"]["n_splits"] = 2
    results = run_experiment(experiment, verbosity=0)
    assert len(results.folds) == 3 * 2
    assert planned == {name: 1 for name in experiment["strategies"]}  # preflight's plans, handed on
    assert dependencies == {"calls": 1}  # strategies, range tests and the worker payload share them
    assert sum(strategy_prints.values()) == len(experiment["strategies"])


def test_prepare_hands_on_its_plans_inner_splits_and_fingerprints_and_still_unpacks(tiny_experiment):
    from kfold_clr.training.tuning import inner_splits

    prepared = prepare(_with_tuned(tiny_experiment))
    config, dataset, splits, reserved = prepared  # every earlier caller of prepare unpacks four values
    assert isinstance(prepared, Prepared) and reserved is None and len(splits) == 3
    for name, strategy in config.strategies.items():
        again = plan_folds(name, strategy, splits, seed=config.seed, epochs=1, batch_size=16)
        assert [(p.key, p.steps_per_epoch, p.initial_step, p.seed) for p in prepared.plans[name]] == \
            [(p.key, p.steps_per_epoch, p.initial_step, p.seed) for p in again]
        for fused in (False, True):
            assert prepared.prints.of(name, fused=fused) == \
                provenance.strategy_fingerprint(config, dataset, name, fused=fused)
    continued = prepared.plans["clr_continue"]
    assert continued[2].initial_step == continued[0].iterations + continued[1].iterations
    # a tuned strategy's inner splits, of every outer fold (not only the first), handed on as they are
    assert sorted(prepared.inner) == [("step", plan.key) for plan in prepared.plans["step"]]
    for plan in prepared.plans["step"]:
        assert [s.val.tolist() for s in prepared.inner["step", plan.key]] == \
            [s.val.tolist() for s in inner_splits(config, dataset, plan)]


def test_preflight_builds_each_folds_schedule_once(tiny_experiment, monkeypatch):
    from kfold_clr.config.strategies import ClrStrategy

    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {"snap": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 1,
                                         "snapshots": {"keep": 2}}}
    built = []
    original = ClrStrategy.schedule_for
    monkeypatch.setattr(ClrStrategy, "schedule_for",
                        lambda self, plan, **kwargs: built.append(plan.key) or original(self, plan, **kwargs))
    prepare(experiment)
    assert built == ["r0_f0", "r0_f1", "r0_f2"]  # the first fold's schedule serves the plan check and the snapshots


# ----------------------------------------------------------------------------- jobs
def _plan(strategy, fold, *, inner="", carry_from=None, fit=None):
    rows = np.arange(30)
    split = Split(0, fold, np.setdiff1d(rows, rows[fold::3]), rows[fold::3], inner=inner)
    return FoldPlan(strategy, split, 1, 1, 1, carry_from=carry_from, fit=fit)


class _Bounds:
    """A bounds source that names the plan it was asked for."""

    def __init__(self):
        self.prefetched = []

    def bounds(self, strategy, plan):
        return ("lr of", plan.key)

    def prefetch(self, splits, *, group_size):
        self.prefetched.append([split.key for split in splits])


def _strategies(**kinds):
    return {name: types.SimpleNamespace(range_test_scope=scope, is_chain=chain)
            for name, (scope, chain) in kinds.items()}


def test_every_job_is_formed_by_one_function(monkeypatch):
    config = types.SimpleNamespace(strategies=_strategies(single=(None, False), chain=(None, True),
                                                           fused=("per_fold_range_test", False)))
    store = types.SimpleNamespace(load_record=lambda name, key: {"row": {"status": "ok"}},
                                  load_weights=lambda name, key: ["weights of", key])
    formed = _counting(monkeypatch, jobs, "form_jobs")
    fusion, source = jobs.Fusion(frozenset({"fused"}), group_size=2), _Bounds()
    todo = {"single": [_plan("single", 0), _plan("single", 2)],
            "chain": [_plan("chain", 0), _plan("chain", 2, carry_from="r0_f1")],  # r0_f1 finished: two jobs
            "fused": [_plan("fused", fold) for fold in range(3)]}
    built = jobs.build_jobs(config, store, list(todo), todo, source, fusion)
    assert formed == {"calls": 1}
    assert [([p.key for p in job.plans], job.fused) for job in built] == [
        (["r0_f0", "r0_f1"], True), (["r0_f2"], True),  # fused groups of at most group_size, first
        (["r0_f0"], False), (["r0_f2"], False), (["r0_f0"], False), (["r0_f2"], False)]
    assert built[-1].initial_weights == ["weights of", "r0_f1"] and built[-2].initial_weights is None
    assert built[0].bounds == (("lr of", "r0_f0"), ("lr of", "r0_f1")) and built[2].bounds == (None,)
    assert source.prefetched == [["r0_f0", "r0_f1", "r0_f2"]]  # the per-fold range tests, once, as one sweep

    fits = [("fused", index, _plan("fused", fold, inner=f"i{j}of2", fit=index))
            for index in range(2) for fold in range(2) for j in range(2)]
    grid_jobs = jobs.tuning_jobs(config, fits, {"fused": todo["fused"][:2]}, source, fusion)
    assert formed == {"calls": 2}
    assert all(job.fused and len(job.plans) <= 2 for job in grid_jobs) and sum(len(j.plans) for j in grid_jobs) == 8
    # a grid fit takes its outer fold's range-test bounds
    assert {(plan.key, bound) for job in grid_jobs for plan, bound in zip(job.plans, job.bounds)} == \
        {(f"r0_f{fold}_i{j}of2", ("lr of", f"r0_f{fold}")) for fold in range(2) for j in range(2)}


def test_a_range_test_that_gave_no_bounds_fails_only_its_folds():
    from kfold_clr.planning.bounds import RangeTestFailed

    class Failing(_Bounds):
        def bounds(self, strategy, plan):
            if plan.key == "r0_f1":
                raise RangeTestFailed("no minimum")
            return super().bounds(strategy, plan)

    config = types.SimpleNamespace(strategies=_strategies(per_fold=("per_fold_range_test", False)))
    formed = jobs.form_jobs(config, None, [_plan("per_fold", fold) for fold in range(3)], Failing(), jobs.Fusion())
    assert [job.bounds[0] for job in formed] == [("lr of", "r0_f0"), jobs.BoundsUnavailable("no minimum"),
                                                 ("lr of", "r0_f2")]


@pytest.mark.parametrize("rows, batch_size, steps", [(96, 16, 6), (97, 16, 7), (1, 16, 1), (15.5, 16, 1)])
def test_steps_per_epoch_counts_a_short_last_batch(rows, batch_size, steps):
    from kfold_clr.data.splits import steps_per_epoch

    assert steps_per_epoch(rows, batch_size) == steps
