"""Run one job: train its folds and return one record per fold, in this process or a worker.

In a worker (a process or a Ray task) the config and data are rebuilt from plain
data once per process (`context_from_payload`).
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from typing import TYPE_CHECKING, Callable, Optional

from kfold_clr.errors import KfoldClrError, describe_error
from kfold_clr.planning.jobs import BoundsUnavailable
from kfold_clr.storage.checkpoints import Checkpointer, stops_held_to_epoch_end
from kfold_clr.training.fold_plans import fold_spec
from kfold_clr.training.fold_record import failed_record, update_row

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.planning.jobs import Job
    from kfold_clr.training.fold_plans import FoldPlan


@dataclasses.dataclass
class WorkerContext:
    """What `run_job` needs: the validated config and the loaded data set."""

    config: ExperimentConfig
    dataset: Dataset


_CONTEXTS = {}


def context_from_payload(payload: dict) -> WorkerContext:
    """Rebuild (once per process) the context that a worker receives as plain data."""
    from kfold_clr.config import load_config
    from kfold_clr.planning.preflight import load_experiment_data

    key = payload["fingerprint"]
    if key not in _CONTEXTS:
        config = load_config(payload["config"], base_dir=payload["base_dir"])  # output.dir: the driver's, absolute
        config, dataset = load_experiment_data(config)
        _CONTEXTS.clear()
        _CONTEXTS[key] = WorkerContext(config, dataset)
    return _CONTEXTS[key]


@dataclasses.dataclass(frozen=True)
class Reporter:
    """Where a running job reports: epochs (progress), snapshot weights to save, tracebacks.

    Attributes:
        epoch_done: callable(plan, epoch, logs) or None. Called after every epoch of every fold.
        save_snapshots: callable(plan, snapshots) or None. Writes a fold's snapshot weights
            (for `snapshots.save_weights`).
        verbose_errors: bool. Print the traceback of a fold that fails.
    """

    epoch_done: Optional[Callable[[FoldPlan, int, dict], None]] = None
    save_snapshots: Optional[Callable[[FoldPlan, list], None]] = None
    verbose_errors: bool = False


def run_job(context: WorkerContext | dict, job: Job, *, reporter: Reporter = Reporter()) -> list[dict]:
    """Train the folds of `job`; return one record per plan, in order.

    A fold that raises becomes a `failed` record (its error kept). A fused job that raises
    trains its folds one by one instead under `fused_folds: auto` (their rows say
    `fused = False`); under `true` every fold of it fails. In a carry
    chain, the folds after it fail too (they have no weights to start from). After
    a fold that diverged, a carry chain starts again from the next fold's fresh
    initial weights; its row says so (`restarted_after`) and is not leaky.
    With a checkpoint slot (`job.checkpoint`) the job saves its state every
    `execution.checkpoint_every` seconds and goes on from the last one saved
    (`kfold_clr.storage.checkpoints`); a stop signal lets the epoch end and saves first.
    Models are built under the config's `training.precision` (`models.precision_policy`),
    here and in worker processes alike.
    Errors in the user's input (KfoldClrError) and interrupts propagate.

    Args:
        context: WorkerContext, or the payload dict a worker receives.
        job: Job.
        reporter: Reporter. Where epochs, snapshots and tracebacks go.
    """
    from kfold_clr.training.models import precision_policy

    if isinstance(context, dict):
        context = context_from_payload(context)
    checkpoint = Checkpointer(job.checkpoint, context.config.execution.checkpoint_every)
    with stops_held_to_epoch_end(checkpoint), precision_policy(context.config.training.precision):
        return _run_job(context, job, reporter, checkpoint)


def _run_job(context, job, reporter, checkpoint) -> list:
    from kfold_clr.training import trainer

    config, dataset = context.config, context.dataset
    if job.fused:
        try:
            return _run_fused(config, dataset, job, reporter, checkpoint)
        except (KeyboardInterrupt, KfoldClrError):
            raise
        except Exception as error:  # noqa: BLE001 - the fused folds fail together, the run goes on
            if reporter.verbose_errors:
                traceback.print_exc()
            if config.execution.fused_folds is True:  # insisted on: the folds fail, named
                return [failed_record(plan, describe_error(error)) for plan in job.plans]
            # auto: the same numbers fold by fold (e.g. the fused model did not fit in memory)
            print(f"kfold-clr: warning: fused training failed ({describe_error(error)}); training its "
                  f"{len(job.plans)} folds one by one", file=sys.stderr)
            job = dataclasses.replace(job, fused=False)
            return [_sequential(record) for record in _run_job(context, job, reporter, checkpoint)]

    records, carried, restart = [], job.initial_weights, job.restart
    finished = checkpoint.finished_records()  # folds of a chain finished before the checkpoint
    for index, (plan, bounds) in enumerate(zip(job.plans, job.bounds)):
        carry = config.strategies[plan.strategy].is_chain
        if index < len(finished):
            record = finished[index]
            restart = carry and record["row"]["status"] == "diverged"
            carried = record.get("weights") if carry and not restart else None
            records.append(record)
            continue
        if restart:
            carried = None
        try:
            if isinstance(bounds, BoundsUnavailable):
                raise RuntimeError(bounds.reason)
            if plan.carry_from is not None and carried is None and not restart:
                raise RuntimeError(f"fold {plan.carry_from} left no weights to carry")
            checkpoint.start_fold(index, "sequential")
            record = trainer.train_fold(config, dataset, fold_spec(config, plan, bounds=bounds),
                                        initial_weights=carried, progress=reporter.epoch_done,
                                        keep_weights=carry, snapshot_store=reporter.save_snapshots,
                                        checkpoint=checkpoint)
        except (KeyboardInterrupt, KfoldClrError):
            raise
        except Exception as error:  # noqa: BLE001 - a failed fold is data, not the end of the run
            if reporter.verbose_errors:
                traceback.print_exc()
            record = failed_record(plan, describe_error(error))
        if carry:
            carried_from = "" if restart or plan.carry_from is None else plan.carry_from
            update_row(record, carried_from=carried_from, restarted_after=plan.carry_from if restart else "",
                       leaky=bool(carried_from))
            restart = record["row"]["status"] == "diverged"
        carried = record.get("weights") if carry and not restart else None
        records.append(record)
        checkpoint.fold_done(record, more=index + 1 < len(job.plans))
    return records


def _sequential(record) -> dict:
    return update_row(record, fused=False)


def _run_fused(config, dataset, job, reporter=Reporter(), checkpoint=None) -> list:
    """Train a fused job; plans whose range test gave no bounds fail without training."""
    from kfold_clr.training.fused import train_fused
    from kfold_clr.training.trainer import PreparedFolds

    runnable = [fold_spec(config, plan, bounds=bounds) for plan, bounds in zip(job.plans, job.bounds)
                if not isinstance(bounds, BoundsUnavailable)]
    fold_data = PreparedFolds(dataset, [spec.plan.split for spec in runnable], config.data)
    if checkpoint is not None:
        checkpoint.start_fold(0, "fused")
    trained = iter(train_fused(config, dataset, runnable, fold_data=fold_data, progress=reporter.epoch_done,
                               snapshot_store=reporter.save_snapshots, checkpoint=checkpoint) if runnable else [])
    return [failed_record(plan, bounds.reason) if isinstance(bounds, BoundsUnavailable) else next(trained)
            for plan, bounds in zip(job.plans, job.bounds)]

