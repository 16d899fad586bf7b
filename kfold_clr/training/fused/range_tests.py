"""Fused range tests: the LR range tests of several folds as branches of one stacked model.

Each branch is the range test that :func:`kfold_clr.planning.bounds.range_test_on_split` runs on its
fold: the fold's initial model, the fold's seed for the data order (`lr_range_test`'s
`rng.permutation` per pass, the last batch of a pass partial), the same sweep of LRs, one
update per batch and that batch's own loss and metrics. A branch stops counting when its
smoothed loss diverges (its later updates are masked off); the sweep stops when every
branch has. So k per-fold range tests cost about one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.data.splits import steps_per_epoch
from kfold_clr.training.fused.layout import FoldTable
from kfold_clr.training.fused.model import StackedModel, initial_states
from kfold_clr.training.fused.support import loss_function, metric_function

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.range_test.result import RangeTestResult
    from kfold_clr.training.fold_plans import FoldPlan
    from kfold_clr.training.trainer import FoldData

STEPS_PER_CALL = 25  # sweep steps per call into the stacked model: a finished sweep stops within this many
CALL_BYTES = 2**26  # bound on the image rows one call reads (image caches are read per call)


def _sweep_batches(n_train, iterations, batch_size, seed):
    """The batches of `lr_range_test`'s data order (no holdout): row indices, one array per batch."""
    rng = np.random.default_rng(seed)
    steps = steps_per_epoch(n_train, batch_size)
    batches, remaining, train = [], iterations, np.arange(n_train)
    while remaining > 0:
        take = min(remaining, steps)
        order = train[rng.permutation(n_train)][:take * batch_size]
        batches.extend(order[start:start + batch_size] for start in range(0, len(order), batch_size))
        remaining -= take
    return batches


def _calls(batches, table, start, stop, batch_size, running):
    """Calls into `train_steps` for sweep steps [start, stop): runs of full batches, then one call
    per distinct partial size (each branch takes part in exactly one call per step)."""
    n_branches = len(batches)
    for step in range(start, stop):
        sizes = {len(batches[b][step]) for b in range(n_branches) if running[b]}
        if sizes == {batch_size}:
            continue
        break
    else:
        step = stop
    calls = []
    if step > start:  # every running branch has full batches on [start, step)
        index = np.zeros((step - start, n_branches, batch_size), dtype="int32")
        for b in range(n_branches):
            index[:, b] = table.offsets[b] + (np.stack(batches[b][start:step]) if running[b] else 0)
        active = np.repeat(running[None, :], step - start, axis=0)
        calls.append((index, active, np.tile(np.arange(start, step, dtype="int32")[:, None], (1, n_branches))))
        return calls, step
    for size in sorted({len(batches[b][start]) for b in range(n_branches) if running[b]}):
        index = np.zeros((1, n_branches, size), dtype="int32")
        active = np.zeros((1, n_branches), dtype=bool)
        for b in range(n_branches):
            rows = batches[b][start]
            index[0, b] = table.offsets[b] + (rows if len(rows) == size else np.zeros(size, dtype=int))
            active[0, b] = running[b] and len(rows) == size
        calls.append((index, active, np.full((1, n_branches), start, dtype="int32")))
    return calls, start + 1


def fused_range_tests(config: ExperimentConfig, dataset: Dataset, plans: list[FoldPlan],
                      fold_data: Mapping[str, FoldData]) -> list[RangeTestResult]:
    """Run the configured range test on each plan's training split, fused; one RangeTestResult per plan.

    Args:
        config: ExperimentConfig, with `range_test.holdout` unset.
        dataset: Dataset.
        plans: list of FoldPlan (`range_test.settings.range_test_plan` of each split).
        fold_data: mapping `split.key -> (x_train, y_train, ...)`, as `trainer.prepare_fold` makes.
    """
    import keras

    import kfold_clr.range_test.smoothing as smoothing_lib
    from kfold_clr.range_test.result import RangeTestResult
    from kfold_clr.range_test.runner import history_frame
    from kfold_clr.range_test.sweep import sweep_values
    from kfold_clr.training.range_test_plans import range_test_settings

    if config.range_test.holdout is not None:
        raise ValueError("fused range tests have no holdout; run them one by one")
    settings = [range_test_settings(config, plan) for plan in plans]
    kwargs = settings[0]
    iterations, batch_size = kwargs["iterations"], kwargs["batch_size"]
    sizes = [len(plan.split.train) for plan in plans]
    x_table, y_table = FoldTable(sizes), FoldTable(sizes)
    for b, plan in enumerate(plans):
        x_train, y_train = fold_data[plan.split.key][:2]
        x_table.fill(b, x_train)
        y_table.fill(b, y_train)
    template, states = initial_states(config, dataset, plans, x_table.sample_shape)
    lrs = sweep_values(kwargs["min_lr"], kwargs["max_lr"], iterations, mode=kwargs["mode"])
    names = ["loss", *config.training.metrics]
    stacked = StackedModel(template, states, config.training.optimizer, loss_function(config.training.loss),
                           [metric_function(name, dataset.n_outputs) for name in config.training.metrics],
                           np.tile(lrs.astype("float32"), (len(plans), 1)))
    batches = [_sweep_batches(size, iterations, batch_size, s["seed"]) for size, s in zip(sizes, settings)]
    window = kwargs["window"]
    if kwargs["smoothing"] == "window" and window is None:
        window = smoothing_lib.default_window(iterations)
    smoothers = [smoothing_lib.OnlineSmoother(smoothing=kwargs["smoothing"], beta=kwargs["beta"], window=window or 1)
                 for _ in plans]
    rows, best = [[] for _ in plans], [None] * len(plans)
    diverged_at = [None] * len(plans)
    running = np.ones(len(plans), dtype=bool)
    per_step = x_table.cell_bytes(batch_size) * len(plans)
    steps_per_call = max(1, min(STEPS_PER_CALL, CALL_BYTES // per_step)) if per_step else STEPS_PER_CALL
    step = 0
    while step < iterations and running.any():
        stop = min(iterations, step + steps_per_call)
        calls, step_after = _calls(batches, x_table, step, stop, batch_size, running)
        outputs = [(call, stacked.train_steps(*x_table.inputs(y_table, call[0], active=call[1]), *call[1:]).numpy())
                   for call in calls]
        for i in range(step, step_after):
            for (_index, active, steps), out in outputs:
                s = i - int(steps[0, 0])
                if not 0 <= s < len(out):
                    continue
                for b in np.flatnonzero(active[s] & running):
                    count = out[s, -1, b]
                    row = {"iteration": i, "lr": float(lrs[i]), "loss": float(out[s, 0, b] / count)}
                    row.update({name: float(out[s, 1 + j, b] / count) for j, name in enumerate(names[1:])})
                    rows[b].append(row)
                    smoothed = smoothers[b].update(row["loss"])
                    if smoothed is None:
                        continue
                    if smoothing_lib.is_diverged(smoothed, best[b], kwargs["divergence_threshold"]):
                        diverged_at[b], running[b] = i, False
                    else:
                        best[b] = smoothed if best[b] is None else min(best[b], smoothed)
        step = step_after
    keras.backend.clear_session(free_memory=False)
    results = []
    for b in range(len(plans)):
        history = history_frame(rows[b], names=names, holdout=False, smoothing=kwargs["smoothing"],
                                 beta=kwargs["beta"], window=window, diverged_at=diverged_at[b])
        info = {key: settings[b][key] for key in ("min_lr", "max_lr", "iterations", "batch_size", "mode",
                                                  "monitor", "smoothing", "beta", "divergence_threshold",
                                                  "method", "seed")}
        info.update(epochs=None, holdout=None, eval_every=None, window=window, n_train=sizes[b], n_holdout=0)
        results.append(RangeTestResult(history, info, monitor=settings[b]["monitor"]))
    return results
