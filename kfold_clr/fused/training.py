"""Training fused folds: a short driver (`train_fused`) over named steps."""

import math
import time

import numpy as np

from kfold_clr import interrupt
from kfold_clr.fused.layout import FoldLayout, batch_layout, lr_table
from kfold_clr.fused.model import _FusedModel, _layer_program
from kfold_clr.fused.support import _loss_function, _metric_function, fused_support
from kfold_clr.strategies import batch_order

EVAL_CHUNK_FLOATS = 2**20  # bound on branches x rows x widest layer in one evaluation call


class _Evaluator:
    """Per-branch means of loss and metrics over each branch's rows of a fold table, in chunks
    small enough that branches x rows x widest layer stays under `EVAL_CHUNK_FLOATS`."""

    def __init__(self, model, layout):
        widest = max([int(np.prod(layout.input_shape))] + [int(v.shape[-1]) for v in model.variables])
        self.model, self.layout = model, layout
        self.chunk_rows = max(32, EVAL_CHUNK_FLOATS // (len(layout.fold_of) * widest))

    def __call__(self, x, y, table):
        longest = int(max(self.layout.sizes(table)))
        size = min(longest, self.chunk_rows)
        full = [table.rows(k, math.ceil(longest / size) * size) for k in self.layout.fold_of]
        index, weights = np.stack([f[0] for f in full]), np.stack([f[1] for f in full])
        sums, total = 0.0, 0.0
        for start in range(0, index.shape[1], size):
            part_sums, part_count = self.model.evaluate(x, y, index[:, start:start + size],
                                                        weights[:, start:start + size])
            sums, total = sums + part_sums.numpy(), total + part_count.numpy()
        return sums / np.maximum(total, 1.0)


def _check_fusable(config, specs, fold_data):
    if not specs:
        raise ValueError(f"Argument `specs` must hold at least one FoldSpec. Received: specs={specs!r}")
    ok, reason = fused_support(config, list(dict.fromkeys(spec.strategy for spec in specs)))
    if not ok:
        raise ValueError(f"Argument `specs` cannot be trained fused: {reason}")
    missing = [spec.key for spec in specs if spec.key not in fold_data]
    if missing:
        raise ValueError(f"Argument `fold_data` must hold every plan's split. Received no data for {missing[0]!r}")


def _build_fused_model(config, dataset, specs, layout):
    """The stacked model: each branch starts from its fold's initial model (built once per fold)."""
    from kfold_clr.trainer import initial_model

    initial, program = {}, None
    for spec in specs:
        if spec.plan.seed not in initial:
            model = initial_model(config, dataset, spec.plan, layout.input_shape)
            program, weights = _layer_program(model)
            initial[spec.plan.seed] = [np.asarray(w.numpy()) for w in weights]
    loss_fn = _loss_function(specs[0].loss)
    metric_fns = [_metric_function(name, dataset.n_outputs) for name in specs[0].metrics]
    return _FusedModel(program, [initial[spec.plan.seed] for spec in specs], specs[0].optimizer, loss_fn,
                       metric_fns, lr_table(specs), layout.fold_seeds, layout.fold_of)


def _epoch_logs(score_names, train_scores, val_scores, b):
    logs = {name: float(train_scores[i, b]) for i, name in enumerate(score_names)}
    logs.update({f"val_{name}": float(val_scores[i, b]) for i, name in enumerate(score_names)})
    return dict(sorted(logs.items()))  # Keras's history order


def _train_epochs(model, specs, layout, evaluate, *, batch_size, score_names, progress):
    """Every epoch of every branch; returns (histories, diverged_epoch, last validation scores)."""
    import tensorflow as tf

    steps_of = np.array([spec.plan.steps_per_epoch for spec in specs])
    epochs_of = np.array([spec.plan.epochs for spec in specs])
    n_steps, n_epochs, width = int(steps_of.max()), int(epochs_of.max()), model.lr_table.shape[1]
    orders = {k: batch_order(seed, layout.train.sizes[k], epochs=n_epochs)  # paired across strategies
              for k, seed in enumerate(layout.batch_seeds)}
    counts = layout.sizes(layout.train).astype("float64")
    histories, diverged_epoch = [[] for _ in specs], [None] * len(specs)
    for epoch in range(n_epochs):
        index, weights = batch_layout(layout, orders, epoch, n_steps=n_steps, batch_size=batch_size)
        step = np.arange(n_steps)[:, None]
        active = (step < steps_of[None, :]) & (epoch < epochs_of[None, :])
        steps = np.minimum(epoch * steps_of[None, :] + step, width - 1).astype("int32")
        was_alive = model.alive.numpy()
        totals = model.train_epoch(layout.train.values, layout.train_y.values, index, weights, steps, active,
                                   tf.constant(epoch, "int32")).numpy()
        train_scores = totals / counts
        val_scores = evaluate(layout.val.values, layout.val_y.values, layout.val)
        alive = model.alive.numpy()
        for b, spec in enumerate(specs):
            if epoch >= spec.plan.epochs or not was_alive[b]:
                continue
            if not alive[b]:
                diverged_epoch[b] = epoch + 1
                train_scores[0, b] = math.nan
            logs = _epoch_logs(score_names, train_scores, val_scores, b)
            histories[b].append(logs)
            if progress is not None:
                progress(spec.plan, epoch + 1, dict(logs))
        if not alive.any():
            break
        interrupt.check()  # a stop signal that landed in a callback of TensorFlow's is not lost
    return histories, diverged_epoch, val_scores


def _records(specs, model, *, score_names, histories, diverged_epoch, final_train, final_val, seconds,
             keep_weights):
    """One fold record per branch, in the format of :func:`kfold_clr.trainer.train_fold`."""
    from kfold_clr.trainer import fold_record

    iterations = model.iterations.numpy()
    stacked = [v.numpy() for v in model.variables] if keep_weights else None
    order = sorted(range(len(score_names)), key=score_names.__getitem__)  # Keras's order
    records = []
    for b, spec in enumerate(specs):
        done = int(iterations[b])
        diverged = diverged_epoch[b] is not None
        record = fold_record(
            spec, iterations=done, lrs=spec.lrs[:max(done, 1)], fit_seconds=seconds / len(specs),
            diverged_epoch=diverged_epoch[b], epoch_logs=histories[b],
            train_scores=None if diverged else {score_names[i]: float(final_train[i, b]) for i in order},
            val_scores=None if diverged else {score_names[i]: float(final_val[i, b]) for i in order})
        if keep_weights:
            record["weights"] = [values[b] for values in stacked]
        records.append(record)
    return records


def train_fused(config, dataset, specs, *, fold_data, progress=None, keep_weights=False):
    """Train several (strategy, fold) specifications as one fused model; one record per spec.

    Each spec is a branch with its own weights, optimizer state, step counter and
    learning rates; a branch trains only on its fold's training rows (see the module
    docstring for the data order and the exact update).

    Args:
        config: ExperimentConfig. Must pass :func:`fused_support` for the specs' strategies.
        dataset: Dataset.
        specs: list of FoldSpec (`kfold_clr.strategies.fold_spec`), possibly of several strategies.
        fold_data: mapping. `split.key -> (x_train, y_train, x_val, y_val)` as made by
            :func:`kfold_clr.trainer.prepare_fold` for every spec's split
            (`kfold_clr.trainer.PreparedFolds` makes each when read).
        progress: callable `(plan, epoch, logs)` or None. Called for every branch
            after each of its epochs.
        keep_weights: bool. Put each branch's final weights in its record.

    Returns:
        List of dicts, in the order of `specs`, in the format of
        :func:`kfold_clr.trainer.train_fold` (`row`, `history`, `lr`; `weights`
        when asked). `fit_seconds` is the fused training time divided by the
        number of branches.

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
    model = _build_fused_model(config, dataset, specs, layout)
    evaluate = _Evaluator(model, layout)
    score_names = ["loss", *specs[0].metrics]
    started = time.perf_counter()
    histories, diverged_epoch, final_val = _train_epochs(
        model, specs, layout, evaluate, batch_size=config.training.batch_size, score_names=score_names,
        progress=progress)
    seconds = time.perf_counter() - started
    # The last epoch's validation pass already saw the final weights.
    final_train = evaluate(layout.train.values, layout.train_y.values, layout.train)
    return _records(specs, model, score_names=score_names, histories=histories, diverged_epoch=diverged_epoch,
                    final_train=final_train, final_val=final_val, seconds=seconds, keep_weights=keep_weights)
