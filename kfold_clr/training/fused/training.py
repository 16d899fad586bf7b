"""Training fused folds: a short driver (`train_fused`) over named steps."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.process import interrupt
from kfold_clr.training.fold_plans import batch_order
from kfold_clr.training.fused.layout import EpochBatches, FoldLayout, lr_table, momentum_table
from kfold_clr.training.fused.model import StackedModel, initial_states
from kfold_clr.training.fused.support import fused_support, loss_function, metric_function

if TYPE_CHECKING:
    import keras

    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.storage.checkpoints import Checkpointer
    from kfold_clr.training.fold_plans import FoldPlan, FoldSpec
    from kfold_clr.training.trainer import FoldData

EVAL_CHUNK_FLOATS = 2**22  # bound on branches x rows x widest activation in one evaluation call
STEP_CHUNK_BYTES = 2**26  # bound on the image rows one training call reads (images: read per call)


def activation_width(model: keras.Model, input_shape: Sequence[int]) -> int:
    """Values per sample of the model's widest layer output (its input size if unknown)."""
    from kfold_clr.data.memory import layer_output_sizes

    return max([int(np.prod(input_shape)), *layer_output_sizes(model)])


class _Evaluator:
    """Per-branch means of loss and metrics over each branch's rows of a fold table, in chunks
    small enough that branches x rows x widest layer stays under `EVAL_CHUNK_FLOATS`."""

    def __init__(self, model, layout, widest):
        self.model, self.layout = model, layout
        self.chunk_rows = max(1, EVAL_CHUNK_FLOATS // (len(layout.fold_of) * widest))
        self._rows = {}

    def __call__(self, table, labels):
        if id(table) not in self._rows:  # the same rows every epoch: laid out once
            longest = int(max(self.layout.sizes(table)))
            size = min(longest, self.chunk_rows)
            full = [table.rows(k, math.ceil(longest / size) * size) for k in self.layout.fold_of]
            self._rows[id(table)] = (size, np.stack([f[0] for f in full]), np.stack([f[1] for f in full]))
        size, index, weights = self._rows[id(table)]
        sums, total = 0.0, 0.0
        for start in range(0, index.shape[1], size):
            x, y, rows = table.inputs(labels, index[:, start:start + size])
            part_sums, part_count = self.model.evaluate(x, y, rows, weights[:, start:start + size])
            sums, total = sums + part_sums.numpy(), total + part_count.numpy()
        return sums / np.maximum(total, 1.0)


class _BranchStopping:
    """Keras's `EarlyStopping` rule applied to every branch on its own (its direction from Keras)."""

    def __init__(self, cfg, template, n_branches):
        import keras

        self.cfg = cfg
        callback = keras.callbacks.EarlyStopping(monitor=cfg.monitor, patience=cfg.patience,
                                                 restore_best_weights=cfg.restore_best_weights)
        callback.set_model(template)
        callback._set_monitor_op()
        self.greater = callback.monitor_op is keras.ops.greater
        self.wait = np.zeros(n_branches, dtype=int)
        self.best = [None] * n_branches
        self.best_state = {}  # branch -> saved values (restore_best_weights)

    def _improves(self, current, best):
        return best is None or (current > best if self.greater else current < best)

    def epoch_end(self, model, epoch, logs_of):
        """Update every branch that trained this epoch (`logs_of`: branch -> logs); the branches to stop."""
        save, stop = [], []
        for b, logs in logs_of.items():
            current = logs.get(self.cfg.monitor)
            if current is None:
                continue
            if self.cfg.restore_best_weights and b not in self.best_state:
                save.append(b)
            self.wait[b] += 1
            if self._improves(current, self.best[b]):
                self.best[b], self.wait[b] = current, 0
                if self.cfg.restore_best_weights and b not in save:
                    save.append(b)
                continue
            if self.wait[b] >= self.cfg.patience and epoch > 0:
                stop.append(b)
        if save:
            trainable, non_trainable = model.snapshot()
            for b in save:
                self.best_state[b] = ([t[b] for t in trainable], [n[b] for n in non_trainable])
        return stop

    def state(self) -> dict:
        return {"wait": self.wait, "best": self.best, "best_state": self.best_state}

    def load_state(self, state):
        self.wait, self.best = np.asarray(state["wait"], dtype=int), list(state["best"])
        self.best_state = dict(state["best_state"])

    def restore(self, model):
        """Put each branch's best weights back (Keras restores them at the end of training)."""
        if not self.best_state:
            return []
        branches = sorted(self.best_state)
        trainable, non_trainable = model.snapshot()
        for b in branches:
            for stack, value in zip(trainable, self.best_state[b][0]):
                stack[b] = value
            for stack, value in zip(non_trainable, self.best_state[b][1]):
                stack[b] = value
        model.restore_branches(branches, (trainable, non_trainable))
        return branches


class _Snapshots:
    """Each branch's weights after the updates its snapshot plan names (`FoldSpec.snapshot_at`)."""

    def __init__(self, specs, template):
        self.specs, self.order = specs, template.weights
        self.taken = {b: [] for b, spec in enumerate(specs) if spec.snapshot_keep is not None}
        self.at = {b: set(specs[b].snapshot_at) for b in self.taken}

    def cuts(self, epoch, batches):
        """Full steps of `epoch` after which some branch takes a snapshot."""
        cuts = set()
        for b in self.taken:
            spe = self.specs[b].plan.steps_per_epoch
            for k in self.at[b]:
                if (k - 1) // spe == epoch and (k - 1) % spe < batches.full[b]:
                    cuts.add((k - 1) % spe + 1)
        return sorted(cuts)

    def capture(self, model, alive):
        """Take the snapshots due now: branches whose update count is one of their snapshot points."""
        due = [b for b in self.taken if alive[b]]
        if not due:
            return
        counts = model.iterations.numpy()
        due = [b for b in due if int(counts[b]) in self.at[b]
               and not (self.taken[b] and self.taken[b][-1][0] == int(counts[b]))]
        for b in due:
            self.taken[b].append((int(counts[b]), model.branch_weights(b, self.order)))

    def kept(self, b):
        keep = self.specs[b].snapshot_keep
        return self.taken[b][-keep:]


def _check_fusable(config, specs, fold_data):
    if not specs:
        raise ValueError(f"Argument `specs` must hold at least one FoldSpec. Received: specs={specs!r}")
    ok, reason = fused_support(config, list(dict.fromkeys(spec.strategy for spec in specs)))
    if not ok:
        raise ValueError(f"Argument `specs` cannot be trained fused: {reason}")
    missing = [spec.key for spec in specs if spec.key not in fold_data]
    if missing:
        raise ValueError(f"Argument `fold_data` must hold every plan's split. Received no data for {missing[0]!r}")


def _build_stacked_model(config, dataset, specs, layout):
    """The stacked model: each branch starts from its fold's initial model (built once per fold)."""
    from kfold_clr.training.models import compile_model, make_optimizer

    template, states = initial_states(config, dataset, [spec.plan for spec in specs], layout.input_shape)
    compile_model(template, make_optimizer(specs[0].optimizer, 0.0), loss=specs[0].loss, metrics=specs[0].metrics)
    probe_x, probe_y = layout.train.probe(2), layout.train_y.values[:2]
    template.compute_metrics(probe_x, probe_y, template(probe_x, training=False))  # builds the compiled metrics
    template.reset_metrics()
    lrs = lr_table(specs)
    loss_fn = loss_function(specs[0].loss)
    metric_fns = [metric_function(name, dataset.n_outputs) for name in specs[0].metrics]
    model = StackedModel(template, states, specs[0].optimizer, loss_fn, metric_fns, lrs,
                         momentum_table(specs, lrs.shape[1]))
    return model, template


def _epoch_logs(score_names, train_scores, val_scores, b):
    logs = {name: float(train_scores[i, b]) for i, name in enumerate(score_names)}
    logs.update({f"val_{name}": float(val_scores[i, b]) for i, name in enumerate(score_names)})
    return dict(sorted(logs.items()))  # Keras's history order


def _segments(bounds, layout, batch_size):
    """Consecutive full-step ranges between `bounds`, shorter for an image cache so that the
    rows one call reads stay under `STEP_CHUNK_BYTES`."""
    per_step = layout.train.cell_bytes(batch_size) * len(layout.fold_of)
    longest = max(1, STEP_CHUNK_BYTES // per_step) if per_step else None
    segments = []
    for start, stop in zip(bounds, bounds[1:]):
        cuts = range(start, stop, longest) if longest else [start]
        segments += [(cut, min(stop, cut + longest) if longest else stop) for cut in cuts if stop > cut]
    return segments


def _train_epoch(model, layout, batches, snapshots):
    """One epoch of every running branch; returns the per-branch sums of `StackedModel.train_steps`.

    Image rows are read for the next call while the current one runs (`prefetched`)."""
    from kfold_clr.data.images.streaming import prefetched

    bounds = [0, *(snapshots.cuts(batches.epoch, batches) if snapshots else ()), batches.n_full]
    calls = [batches.full_steps(start, stop) for start, stop in _segments(bounds, layout, batches.batch_size)]
    n_full = len(calls)
    calls += batches.partial_steps()
    thunks = [lambda call=call: layout.train_inputs(batches, *call) for call in calls]
    inputs = prefetched(thunks) if layout.train.lazy else (thunk() for thunk in thunks)
    totals = 0.0
    for number, arguments in enumerate(inputs):
        totals = totals + model.train_steps(*arguments).numpy().sum(axis=0)
        if snapshots and number < n_full:
            snapshots.capture(model, model.alive.numpy())
    if snapshots:
        snapshots.capture(model, model.alive.numpy())
    return totals


def _train_epochs(model, specs, layout, evaluate, *, batch_size, score_names, progress, stopping, snapshots,
                  checkpoint=None, elapsed=None):
    """Every epoch of every branch; returns (histories, diverged_epoch, last validation scores).

    With a `checkpoint` (`kfold_clr.storage.checkpoints.Checkpointer`) the job's state is saved at epoch
    ends (`elapsed()`: its training seconds so far), and a saved state is gone on from."""
    from kfold_clr.training.fold_record import epoch_lr

    steps_of = np.array([spec.plan.steps_per_epoch for spec in specs])
    epochs_of = np.array([spec.plan.epochs for spec in specs])
    n_epochs = int(epochs_of.max())
    orders = {k: batch_order(seed, layout.train.sizes[k], epochs=n_epochs)  # paired across strategies
              for k, seed in enumerate(layout.batch_seeds)}
    histories, diverged_epoch = [[] for _ in specs], [None] * len(specs)
    val_scores, first = None, 0
    saved = checkpoint.saved_state if checkpoint is not None else None
    if saved is not None:
        first, histories, diverged_epoch, val_scores = (saved["epoch"], saved["histories"], saved["diverged_epoch"],
                                                        saved["val_scores"])
        _load_job_state(model, stopping, snapshots, saved)
    for epoch in range(first, n_epochs):
        running = (epoch < epochs_of) & model.alive.numpy()
        if not running.any():
            break
        batches = EpochBatches(layout, orders, epoch, running, steps_of, batch_size)
        totals = _train_epoch(model, layout, batches, snapshots)
        train_scores = totals[:-1] / np.maximum(totals[-1], 1.0)
        val_scores = evaluate(layout.val, layout.val_y)
        diverged = running & ~np.isfinite(train_scores[0])  # as DivergenceStop: a NaN or infinite epoch loss
        logs_of = {}
        for b, spec in enumerate(specs):
            if not running[b]:
                continue
            if diverged[b]:
                diverged_epoch[b] = epoch + 1
            logs = _epoch_logs(score_names, train_scores, val_scores, b)
            histories[b].append(logs)
            if not diverged[b]:
                logs_of[b] = logs
            if progress is not None:
                progress(spec.plan, epoch + 1, {**logs, "lr": epoch_lr(spec.lrs, epoch + 1, spec.plan.steps_per_epoch)})
        stop = stopping.epoch_end(model, epoch, logs_of) if stopping is not None else []
        model.stop([*np.flatnonzero(diverged), *stop])
        if checkpoint is None:
            interrupt.check()  # a stop signal that landed in a callback of TensorFlow's is not lost
            continue
        ending = not ((epoch + 1 < epochs_of) & model.alive.numpy()).any()
        checkpoint.epoch_end(functools.partial(_job_state, model, stopping, snapshots, epoch=epoch + 1,
                                               seconds=elapsed, histories=histories,
                                               diverged_epoch=diverged_epoch, val_scores=val_scores),
                             stopping=ending)
    return histories, diverged_epoch, val_scores


def _job_state(model, stopping, snapshots, *, epoch, seconds, histories, diverged_epoch, val_scores):
    """All a fused job needs to go on exactly after `epoch` epochs (the data order: `batch_order`)."""
    return {"epoch": epoch, "seconds": seconds(), "histories": histories, "diverged_epoch": diverged_epoch,
            "val_scores": val_scores, "model": model.state(), "stopping": stopping and stopping.state(),
            "snapshots": snapshots and snapshots.taken}


def _load_job_state(model, stopping, snapshots, saved):
    """Put a checkpoint's stacked variables, stopping and snapshot state back."""
    model.load_state(saved["model"])
    if stopping is not None:
        stopping.load_state(saved["stopping"])
    if snapshots is not None:
        snapshots.taken = {int(b): [(int(count), weights) for count, weights in taken]
                           for b, taken in saved["snapshots"].items()}


def _snapshot_fields(spec, kept, template, x_val, y_val, diverged, snapshot_store):
    """The snapshot columns of a branch's row (`fold_record.Snapshots`, as `trainer.train_fold` sets
    them) and the ensemble's mean validation prediction (None when it was not scored)."""
    from kfold_clr.training.fold_record import Snapshots
    from kfold_clr.training.trainer import evaluate_ensemble

    ensemble, mean = {}, None
    if kept and not diverged:
        weights = [w for _, w in kept]
        ensemble, mean = evaluate_ensemble(template, weights, x_val, y_val, return_mean=True)
        if spec.save_snapshots and snapshot_store is not None:
            snapshot_store(spec.plan, weights)
    return Snapshots(len(kept), tuple(int(k) for k, _ in kept), ensemble), mean


def _records(specs, model, template, *, dataset, config, score_names, histories, diverged_epoch, final_train,
             final_val, seconds, keep_weights, snapshots, layout, snapshot_store):
    """One fold record per branch, in the format of :func:`kfold_clr.training.trainer.train_fold`
    (predictions included: one inference pass of each branch's weights on its validation rows)."""
    from kfold_clr.training import fold_predictions
    from kfold_clr.training.fold_record import trained_record, update_row

    iterations = model.iterations.numpy()
    order = sorted(range(len(score_names)), key=score_names.__getitem__)  # Keras's order
    records = []
    for b, spec in enumerate(specs):
        done = int(iterations[b])
        diverged = diverged_epoch[b] is not None
        record = trained_record(
            spec, iterations=done, lrs=spec.lrs[:max(done, 1)], fit_seconds=seconds / len(specs),
            job_seconds=seconds, job_folds=len(specs),
            diverged_epoch=diverged_epoch[b], epoch_logs=histories[b],
            train_scores=None if diverged else {score_names[i]: float(final_train[i, b]) for i in order},
            val_scores=None if diverged else {score_names[i]: float(final_val[i, b]) for i in order})
        weights, mean = model.branch_weights(b, template.weights), None
        if not diverged or (snapshots and b in snapshots.taken):  # as the layout holds them: not prepared again
            fold = int(layout.fold_of[b])
            x_val, y_val = layout.val.fold_rows(fold), layout.val_y.fold_rows(fold)
        if snapshots and b in snapshots.taken:
            taken, mean = _snapshot_fields(spec, snapshots.kept(b), template, x_val, y_val, diverged, snapshot_store)
            update_row(record, snapshots=taken)
        if not diverged:
            template.set_weights(weights)
            record["predictions"] = fold_predictions.payload(dataset, spec.plan.split, config.data,
                                                             fold_predictions.predict(template, x_val), mean)
        if keep_weights:
            record["weights"] = weights
        records.append(record)
    return records


def train_fused(config: ExperimentConfig, dataset: Dataset, specs: Iterable[FoldSpec], *,
                fold_data: Mapping[str, FoldData], progress: Callable[[FoldPlan, int, dict], object] | None = None,
                keep_weights: bool = False,
                snapshot_store: Callable[[FoldPlan, list[list[np.ndarray]]], object] | None = None,
                checkpoint: Checkpointer | None = None) -> list[dict]:
    """Train several (strategy, fold) specifications as one fused model; one record per spec.

    Each spec is a branch with its own weights, non-trainable state (batch-norm
    statistics, dropout seed), optimizer slots, step counter, learning rate and
    momentum per update; it trains only on its fold's training rows, in the batches
    the sequential trainer uses, takes its snapshots at its own cycle ends and stops
    early on its own (see the package docstring).

    Args:
        config: ExperimentConfig. Must pass :func:`fused_support` for the specs' strategies.
        dataset: Dataset.
        specs: list of FoldSpec (`kfold_clr.training.fold_plans.fold_spec`), possibly of several strategies.
        fold_data: mapping. `split.key -> (x_train, y_train, x_val, y_val)` as made by
            :func:`kfold_clr.training.trainer.prepare_fold` for every spec's split
            (`kfold_clr.training.trainer.PreparedFolds` makes each when read).
        progress: callable `(plan, epoch, logs)` or None. Called for every branch
            after each of its epochs.
        keep_weights: bool. Put each branch's final weights in its record.
        snapshot_store: callable `(plan, list of weight lists)` or None. Saves snapshot
            weights for strategies with `snapshots.save_weights`.
        checkpoint: kfold_clr.storage.checkpoints.Checkpointer or None. Saves the job's state at epoch
            ends; the job goes on from its `saved_state` when there is one.

    Returns:
        List of dicts, in the order of `specs`, in the format of
        :func:`kfold_clr.training.trainer.train_fold` (`row`, `history`, `lr`; `weights`
        when asked). `job_seconds` is the fused training time, shared by
        `job_folds` branches; `fit_seconds` is its share per branch.

    Example:

    ```python
    plans = plan_folds("clr_reset", config.strategies["clr_reset"], splits, seed=0,
                       epochs=20, batch_size=32)
    specs = [fold_spec(config, plan) for plan in plans]
    data = {p.key: prepare_fold(dataset, p.split, config.data) for p in plans}
    records = train_fused(config, dataset, specs, fold_data=data)
    ```
    """
    specs = list(specs)
    _check_fusable(config, specs, fold_data)
    layout = FoldLayout(specs, fold_data)
    model, template = _build_stacked_model(config, dataset, specs, layout)
    evaluate = _Evaluator(model, layout, activation_width(template, layout.input_shape))
    score_names = ["loss", *specs[0].metrics]
    stop_cfg = config.training.early_stopping
    stopping = _BranchStopping(stop_cfg, template, len(specs)) if stop_cfg is not None else None
    snapshots = _Snapshots(specs, template) if any(s.snapshot_keep is not None for s in specs) else None
    started = time.perf_counter()
    before = float(checkpoint.saved_state["seconds"]) if checkpoint is not None and checkpoint.saved_state else 0.0
    histories, diverged_epoch, final_val = _train_epochs(
        model, specs, layout, evaluate, batch_size=config.training.batch_size, score_names=score_names,
        progress=progress, stopping=stopping, snapshots=snapshots, checkpoint=checkpoint,
        elapsed=lambda: before + time.perf_counter() - started)
    seconds = before + time.perf_counter() - started
    if stopping is not None and stopping.restore(model):
        final_val = evaluate(layout.val, layout.val_y)
    # Otherwise the last epoch's validation pass already saw the final weights.
    final_train = (evaluate(layout.train, layout.train_y) if config.training.train_scores
                   else np.full_like(final_val, np.nan))  # not scored: empty train_<metric> columns
    return _records(specs, model, template, dataset=dataset, config=config, score_names=score_names,
                    histories=histories,
                    diverged_epoch=diverged_epoch, final_train=final_train, final_val=final_val, seconds=seconds,
                    keep_weights=keep_weights, snapshots=snapshots, layout=layout,
                    snapshot_store=snapshot_store)
