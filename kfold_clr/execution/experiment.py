"""Run a whole experiment: every strategy on every (repeat, fold), resumable.

`run_experiment` hands each step's result to the next: preflight (config, data,
splits, checks) -> the folds still to do -> range-test bounds -> jobs -> an
executor -> one saved record per fold -> tables and report. This is the Python
API behind the command line::

    results = kfold_clr.run_experiment("experiments/digits-clr.yaml")
    results.folds        # one row per strategy x repeat x fold
    results.summary      # mean, std, interval per strategy and metric
    again = kfold_clr.load_results("results/digits-clr")

Preflight builds every strategy's fold plans, a tuned strategy's inner splits and the
fingerprints once (`preflight.Prepared`); the phases here use them as they are.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kfold_clr.analysis import tables
from kfold_clr.config import dump_yaml
from kfold_clr.data.splits import resolve_splitter, splits_to_json
from kfold_clr.errors import ConfigError, ResultsError
from kfold_clr.planning.preflight import inputs, prepare
from kfold_clr.process import interrupt
from kfold_clr.results import Results, load_results  # noqa: F401  (load_results: the old import path)
from kfold_clr.storage import checkpoints, provenance
from kfold_clr.storage.provenance import fingerprint
from kfold_clr.storage.store import ResultsStore
from kfold_clr.training.fold_record import failed_record, update_row

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.planning.preflight import Prepared


# ----------------------------------------------------------------------------- running
def _select_strategies(config, only):
    names = list(config.strategies)
    if not only:
        return names
    unknown = [name for name in only if name not in config.strategies]
    if unknown:
        raise ConfigError(f"--only: {unknown[0]!r} is not one of the strategies: {', '.join(names)}")
    return [name for name in names if name in only]


def _payload(config: ExperimentConfig, dataset: Dataset, *, verbose_errors: bool = False,
             dependencies: dict | None = None) -> dict:
    """The plain-data context a worker process or Ray task rebuilds the run from.

    Its `fingerprint` (the key under which a worker caches the context) covers the
    whole config and the data's content (`dependencies`: the run's `fold_dependencies`,
    computed here when not given), so a reused worker never trains an older config.
    """
    payload = {"config": config.with_output_dir(config.output_dir.resolve()).to_dict(),
               "base_dir": str(config.base_dir.resolve())}
    if dependencies is None:
        dependencies = provenance.fold_dependencies(config, dataset)
    return {**payload, "fingerprint": fingerprint({**payload, "data": dependencies}), "verbose_errors": verbose_errors}


def run_experiment(source: str | pathlib.Path | dict, *, overrides: list[str] | None = None,
                   only: list[str] | None = None, resume: bool = True, verbosity: int = 1,
                   accept_versions: bool = False, command: str | None = None) -> Results:
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
    from kfold_clr.execution.progress import run_summary
    from kfold_clr.training.models import precision_policy

    started = time.perf_counter()
    prepared = prepare(source, overrides=overrides)
    config = prepared.config
    names = _select_strategies(config, only)
    store = ResultsStore(config.output_dir).open(protected=inputs(config))
    with interrupt.watching(), precision_policy(config.training.precision,
                                                log=lambda note: print(f"kfold-clr: {note}", file=sys.stderr)):
        results, trained = _run(prepared, names, store, verbosity, accept_versions=accept_versions,
                                discard=None if resume else (names if only else "all"),
                                command=command or " ".join(sys.argv) or "python")
    print(run_summary(results, seconds=time.perf_counter() - started, trained=trained), file=sys.stderr)
    return results


def _run(prepared, names, store, verbosity, *, command, discard=None, accept_versions=False):
    """Train what is still to do; `discard` ("all" or strategy names) first deletes earlier results.

    The phases, each handing its result to the next: plan and resume (`_plan_and_resume`), plan
    the tuning grids (`_plan_grids`), train (`_train`), tune (`_tune`: choose and refit), finish.
    """
    from kfold_clr.errors import describe_error
    from kfold_clr.execution.progress import RunProgress
    from kfold_clr.storage.tracking import Trackers

    log = lambda message: print(f"kfold-clr: {message}", file=sys.stderr)  # noqa: E731
    config, planned, session = prepared.config, None, None
    try:
        planned = _plan_and_resume(prepared, names, store, command=command, discard=discard,
                                   accept_versions=accept_versions, log=log)
        grids = _plan_grids(config, prepared.inner, store, planned)
        with RunProgress(grids.epochs, verbosity=verbosity) as progress:
            session = _Session(config, store, planned, progress, Trackers(), fresh=discard is not None)
            session.open(prepared, verbosity=verbosity)
            _train(session, grids)
            _tune(session, grids)
        _record_run(store, planned.run, planned.runs, finished=provenance.now(), outcome="finished")
        results = _finish(store, config, log=log)
        session.trackers.run_done(store.directory, results.summary)
        return results, sum(len(group) for group in planned.todo.values())
    except KeyboardInterrupt as stop:
        # What finished is saved; tables and report show it at once. Rerun to resume.
        if planned is not None:
            _record_run(store, planned.run, planned.runs, finished=provenance.now(),
                        outcome=f"interrupted ({stop.args[0] if stop.args else 'SIGINT'})")
        try:
            _finish(store, config, log=log)
        except Exception as error:  # noqa: BLE001 - never mask the interrupt
            log(f"tables not rebuilt after the interrupt: {describe_error(error)}")
        raise
    finally:
        if session is not None:
            session.close()
        from kfold_clr.training.model_pool import MODEL_POOL

        MODEL_POOL.clear()
        store.close()


@dataclasses.dataclass(frozen=True)
class _Planned:
    """What the plan-and-resume phase hands on: every strategy's fold plans, what is still to do."""

    run: dict  # this run's entry in meta.json
    runs: list  # every run's entry
    plans: dict  # strategy -> [FoldPlan]
    fused: object  # FusionGroups (`kfold_clr.planning.jobs.fusion_groups`)
    prints: dict  # strategy -> fingerprint, on the path it trains (fused or fold by fold)
    todo: dict  # strategy (of those run) -> [FoldPlan] not finished yet
    versions: dict  # the tracked library versions, saved in every record


def _plan_and_resume(prepared, names, store, *, command, discard, accept_versions, log) -> _Planned:
    """Choose the fused path, refuse or discard stale results, find the folds still to do (of
    preflight's plans, by its fingerprints), write the run's config, splits and meta.json entry."""
    from kfold_clr.planning.jobs import fusion_groups, saved_fused_path

    config, dataset, splits, plans = prepared.config, prepared.dataset, prepared.splits, prepared.plans
    run = provenance.run_record(seed=config.seed, command=command)
    run["base_dir"] = str(config.base_dir.resolve())  # where the report finds a relative data.path
    keep = None if discard == "all" else saved_fused_path(config, dataset, store, plans, prepared.prints)
    fused = fusion_groups(config, dataset, n_folds=len(splits), keep=keep)
    prints = {name: prepared.prints.of(name, fused=name in fused) for name in plans}
    _refuse_stale_others(store, names, plans, prints)
    if discard is not None:
        store.discard(None if discard == "all" else discard)
    todo = {name: [p for p in plans[name] if store.finished(name, p.key, prints[name]) is None] for name in names}
    kept = [record for record in store.records(list(plans)) if record["row"].get("status") != "failed"]
    changes = provenance.check_versions([*kept, *store.range_tests()], run, directory=store.directory,
                                        accept=accept_versions)
    if changes:
        run["accepted_version_changes"] = changes
        log(f"keeping results computed with other versions: {'; '.join(changes)}")
    store.write_text("config.yaml", dump_yaml(config.to_dict()))
    splitter = resolve_splitter(config.cv.splitter, task=dataset.task, has_groups=dataset.groups is not None)
    store.write_text("splits.json", splits_to_json(splits, splitter=splitter, reserved=prepared.reserved))
    runs = _record_run(store, run)
    return _Planned(run, runs, plans, fused, prints, todo, {name: run[name] for name in provenance.TRACKED})


@dataclasses.dataclass(frozen=True)
class _Grids:
    """The tuned strategies' grid fits: which are saved, which are still to train."""

    untuned: dict  # strategy -> [FoldPlan] still to do, for strategies without `tune:`
    grid: dict  # tuned strategy -> outer key -> [(point index, grid fit FoldPlan)]
    fitted: dict  # (strategy, fit key) -> saved record, or None while still to do (filled as fits end)
    fits_todo: list  # [(strategy, point index, grid fit FoldPlan)] still to train
    epochs: int  # epochs still to train: folds, grid fits and refits


def _plan_grids(config, inner, store, planned) -> _Grids:
    """The grid fits of every outer fold still to do of a tuned strategy (`kfold_clr.training.tuning`) on
    its inner splits (`inner`: preflight's, by (strategy, fold key))."""
    from kfold_clr.training import tuning

    todo, prints = planned.todo, planned.prints
    untuned = {name: group for name, group in todo.items() if config.strategies[name].tune is None}
    grid = {name: {plan.key: tuning.grid_plans(config, plan, inner[name, plan.key])
                   for plan in todo[name]} for name in todo if name not in untuned}
    every_fit = [(name, index, fit) for name, outer in grid.items() for fits in outer.values() for index, fit in fits]
    fitted = {(name, tuning.fit_key(fit)): store.finished_fit(name, tuning.fit_key(fit), prints[name])
              for name, _, fit in every_fit}  # saved grid fits; None: still to do
    fits_todo = [item for item in every_fit if fitted[item[0], tuning.fit_key(item[2])] is None]
    refits = sum(p.epochs for name in grid for p in todo[name] if config.strategies[name].tune.select != "outer")
    total = sum(p.epochs for group in untuned.values() for p in group) + sum(f.epochs for *_, f in fits_todo)
    return _Grids(untuned, grid, fitted, fits_todo, total + refits)


class _Session:
    """What the train and tune phases share: the executor that runs jobs, where records land."""

    def __init__(self, config, store, planned, progress, trackers, *, fresh):
        self.config, self.store, self.planned, self.progress, self.fresh = config, store, planned, progress, fresh
        self.trackers, self.bounds_source, self.executor, self.reporter = trackers, None, None, None

    def open(self, prepared: Prepared, *, verbosity: int) -> None:
        """Start the trackers, range-test bounds and executor."""
        from kfold_clr.execution.executors import make_executor
        from kfold_clr.execution.worker import Reporter, WorkerContext
        from kfold_clr.planning.bounds import RangeTestBounds
        from kfold_clr.storage.tracking import Trackers

        config, progress, dataset = self.config, self.progress, prepared.dataset
        dependencies = prepared.prints.dependencies
        for note in self.planned.fused.notes if any(self.planned.todo.values()) else ():
            progress.log(f"fused folds: {note}")
        self.trackers = Trackers.from_config(config, self.store.directory, warn=progress.warn)
        self.bounds_source = RangeTestBounds(config, dataset, prepared.splits, self.store, progress.log,
                                             reserved=prepared.reserved, warn=progress.warn, dependencies=dependencies)
        self.executor = make_executor(config.execution, context=WorkerContext(config, dataset),
                                      payload=_payload(config, dataset, verbose_errors=verbosity >= 2,
                                                       dependencies=dependencies),
                                      log=progress.warn)
        self.reporter = Reporter(epoch_done=progress.epoch_done, verbose_errors=verbosity >= 2,
                                 save_snapshots=self.store.save_plan_snapshots)

    def close(self):
        self.trackers.close()
        if self.executor is not None:
            self.executor.close()

    def jobs(self, plans) -> list:
        """The jobs that train `plans` (strategy -> [FoldPlan])."""
        from kfold_clr.planning.jobs import build_jobs

        return build_jobs(self.config, self.store, list(plans), plans, self.bounds_source, self.planned.fused)

    def outcomes(self, jobs):
        """Run jobs; yield (plan, record) as each job ends (a dead worker: failed records).
        A job's checkpoint goes once its records are saved (a dead worker's stays: rerun resumes)."""
        from kfold_clr.errors import describe_error
        from kfold_clr.execution.executors import WorkerDied
        from kfold_clr.planning.jobs import checkpointed

        prints, versions = self.planned.prints, self.planned.versions
        for job, outcome in self.executor.run(checkpointed(jobs, self.store, prints, fresh=self.fresh),
                                              reporter=self.reporter):
            died = isinstance(outcome, Exception)
            if died:
                error = str(outcome) if isinstance(outcome, WorkerDied) else f"worker failed: {describe_error(outcome)}"
                outcome = [failed_record(plan, error) for plan in job.plans]
            for plan, record in zip(job.plans, outcome):
                record["fingerprint"], record["versions"] = prints[plan.strategy], versions
                if "fused" not in record["row"]:  # a fused job may fall back: its rows say so
                    update_row(record, fused=job.fused)
                yield plan, record
            if not died:
                checkpoints.remove(job.checkpoint)
            interrupt.check()

    def land(self, plan, record, tuning=None):
        """Save an outer fold's record (with its tuning columns and optimism flags) and report it."""
        update_row(record, **({} if tuning is None else {"tuning": tuning}),
                   **_optimism(self.config, plan, self.bounds_source))
        if record.get("weights") is not None:
            self.store.save_weights(plan.strategy, plan.key, record["weights"])
        self.store.save_record(plan.strategy, plan.key, record)
        self.trackers.fold_done(plan, record)
        self.progress.fold_done(plan, record["row"])


def _train(session, grids) -> None:
    """Train the folds of untuned strategies and every grid fit still to do, saving each as it ends."""
    from kfold_clr.planning.jobs import tuning_jobs
    from kfold_clr.training import tuning

    planned = session.planned
    jobs = session.jobs(grids.untuned)
    jobs += tuning_jobs(session.config, grids.fits_todo, planned.todo, session.bounds_source, planned.fused)
    for plan, record in session.outcomes(jobs):
        if plan.fit is not None:  # a grid fit of a tuned strategy
            session.store.save_fit(plan.strategy, tuning.fit_key(plan), record)
            grids.fitted[plan.strategy, tuning.fit_key(plan)] = record
            session.progress.fold_done(plan, record["row"], tuning=True)
        else:
            session.land(plan, record)


def _tune(session, grids) -> None:
    """Choose each tuned outer fold's grid point from its fits and refit it (or land the fold as
    `select: outer` chose it, or failed when its grid could not be scored)."""
    from kfold_clr.training import tuning

    planned, chosen, refit_plans = session.planned, {}, {}
    for name, outer in grids.grid.items():
        for plan in planned.todo[name]:
            fits = [(index, grids.fitted[name, tuning.fit_key(fit)]) for index, fit in outer[plan.key]]
            decision = tuning.decide(session.config, plan, fits)
            chosen[name, plan.key] = decision.tuning
            if decision.refit is not None:
                refit_plans.setdefault(name, []).append(decision.refit)
                continue
            # the grid could not be scored (a failed fold), or select: outer's chosen fit
            record = decision.record or failed_record(plan, decision.error)
            record = {**record, "fingerprint": planned.prints[name], "versions": planned.versions}
            if decision.error:
                session.progress.warn(f"{name} {plan.key}: {decision.error}")
            session.land(plan, record, decision.tuning)
    for plan, record in session.outcomes(session.jobs(refit_plans)):
        session.land(plan, record, chosen[plan.strategy, plan.key])


def _optimism(config, plan, bounds_source) -> dict:
    """`optimistic` and its reason for a fold whose validation rows helped choose its training:
    early stopping, a shared range test that ran on some of those rows, or tuning on them (select: outer)."""
    reasons = []
    if config.training.early_stopping is not None:
        reasons.append(tables.EARLY_STOPPING_REASON)
    tune = config.strategies[plan.strategy].tune
    if tune is not None and tune.select == "outer":
        from kfold_clr.training.tuning import OUTER_REASON

        reasons.append(OUTER_REASON)
    seen = np.intersect1d(bounds_source.rows_seen(config.strategies[plan.strategy], plan), plan.split.val)
    if len(seen):
        reasons.append(f"{tables.RANGE_TEST_REASON} ran on {len(seen)} of its "
                       f"{len(plan.split.val)} validation rows")
    return {"optimistic": bool(reasons), "optimistic_reason": "; ".join(reasons)}


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
            saved = store.load_record(name, plan.key) or {}  # the fold whose record differs
            change = provenance.describe_change(saved.get("fingerprint_parts"), prints[name])
            raise ResultsError(f"--only: strategy {name!r} has results from a different config in "
                               f"{str(store.directory)!r} ({change}); run it too (add it to --only), or "
                               "drop --only and rerun with --fresh") from None


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
