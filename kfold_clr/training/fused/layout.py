"""Data layout of fused folds: every fold's rows stored once, each branch's data order and batches,
and each branch's LR per update as one table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from kfold_clr.data.images.streaming import PixelRows
    from kfold_clr.training.fold_plans import FoldSpec
    from kfold_clr.training.trainer import FoldData


class FoldTable:
    """Every fold's rows of one array, stored once (a TensorFlow variable): fold k at `offset[k] + i`.

    Filled one fold at a time, so the folds' arrays need not all be in memory at once. Rows of
    an image cache (`PixelRows`) are not copied: the table keeps them and `inputs` reads the
    rows a call needs (scaled, augmented for training) into a small array for that call.
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = [int(size) for size in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype("int64")
        self.values = None
        self.lazy = {}  # fold -> PixelRows (image caches)
        self._array = None  # numpy copy of `values` (labels read on the host)

    def fill(self, fold: int, array: np.ndarray | PixelRows) -> None:
        import tensorflow as tf

        from kfold_clr.data.images.streaming import is_lazy

        if len(array) != self.sizes[fold]:
            raise ValueError(f"fold {fold} has {len(array)} rows; its split has {self.sizes[fold]}")
        if is_lazy(array):
            self.lazy[fold] = array
            return
        array = np.asarray(array)
        if self.values is None:
            self.values = tf.Variable(tf.zeros([sum(self.sizes), *array.shape[1:]], array.dtype), trainable=False)
        start = int(self.offsets[fold])
        self.values[start:start + len(array)].assign(array.astype(self.values.dtype.as_numpy_dtype, copy=False))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.lazy:
            return tuple(next(iter(self.lazy.values())).sample_shape)
        return tuple(self.values.shape[1:])

    @property
    def augmented(self) -> bool:
        return any(rows.augmenter is not None for rows in self.lazy.values())

    def probe(self, count: int) -> np.ndarray | tf.Tensor:
        """The first `count` rows (to build a model on)."""
        if self.lazy:
            return self.lazy[0].take(np.arange(count))
        return self.values[:count]

    def fold_rows(self, fold: int) -> np.ndarray | PixelRows:
        """Fold `fold`'s rows as they were filled: its `PixelRows` (image cache), else a numpy copy."""
        if fold in self.lazy:
            return self.lazy[fold]
        start = int(self.offsets[fold])
        return self.values[start:start + self.sizes[fold]].numpy()

    def rows(self, fold: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of all rows of `fold`, padded to `count` (weights 0 on the padding)."""
        size = self.sizes[fold]
        index = np.full(count, self.offsets[fold], dtype="int32")
        index[:size] = self.offsets[fold] + np.arange(size)
        weights = np.zeros(count, dtype="float32")
        weights[:size] = 1.0
        return index, weights

    def inputs(self, labels: FoldTable, index: np.ndarray, *, active: np.ndarray | None = None,
               keys: Sequence[tuple[int, ...]] | None = None,
               ) -> tuple[tf.Variable | np.ndarray, tf.Variable | np.ndarray, np.ndarray]:
        """(x, y, index) for the stacked model to read the rows `index` (..., rows) of this table
        with their `labels` (a FoldTable): the tables themselves, or for an image cache the rows
        read into an array (cells not `active` left zero; each cell of index augmented with
        `keys[cell]` where given) with the index into it."""
        if not self.lazy:
            return self.values, labels.values, index
        index = np.asarray(index)
        cells, width = index.reshape(-1, index.shape[-1]), index.shape[-1]
        running = np.ones(len(cells), dtype=bool) if active is None else np.asarray(active).reshape(-1)
        x = np.empty((len(cells) * width, *self.sample_shape), dtype=np.float32)
        read = {}  # the same rows with the same key (branches of one fold) are read once
        for cell, rows in enumerate(cells):
            if not running[cell]:
                x[cell * width:(cell + 1) * width] = 0.0
                continue
            fold = int(np.searchsorted(self.offsets, rows[0], side="right") - 1)
            key = None if keys is None else keys[cell]
            memo = (fold, rows.tobytes(), key)
            target = slice(cell * width, (cell + 1) * width)
            if memo in read:
                x[target] = x[read[memo]]
            else:
                self.lazy[fold].take(rows - self.offsets[fold], key=key, out=x[target])
                read[memo] = target
        if labels._array is None:
            labels._array = labels.values.numpy()
        local = np.arange(len(cells) * width, dtype="int32").reshape(index.shape)
        return x, labels._array[index.reshape(-1)], local

    def cell_bytes(self, rows: int) -> int:
        """Bytes `inputs` reads for one cell of `rows` rows (0 for an in-memory table)."""
        return next(iter(self.lazy.values())).sample_bytes * rows if self.lazy else 0


class FoldLayout:
    """Which fold each branch trains on, with every fold's data stored once.

    Attributes:
        fold_keys: list of str. The distinct folds, in first-seen order.
        fold_of: int array (branches,). The fold index of each branch.
        fold_seeds: list of int. Each fold's seed (its dropout masks).
        batch_seeds: list of int. Each fold's batch seed (its data order).
        train, train_y, val, val_y: `FoldTable` of x_train, y_train, x_val, y_val.
    """

    def __init__(self, specs: Sequence[FoldSpec], fold_data: Mapping[str, FoldData]) -> None:
        self.fold_keys = list(dict.fromkeys(spec.key for spec in specs))
        self.fold_of = np.array([self.fold_keys.index(spec.key) for spec in specs])
        first = {key: next(spec for spec in specs if spec.key == key) for key in self.fold_keys}
        self.fold_seeds = [first[key].plan.seed for key in self.fold_keys]
        self.batch_seeds = [first[key].batch_seed for key in self.fold_keys]
        train_sizes = [len(first[key].plan.split.train) for key in self.fold_keys]
        val_sizes = [len(first[key].plan.split.val) for key in self.fold_keys]
        self.train, self.train_y = FoldTable(train_sizes), FoldTable(train_sizes)
        self.val, self.val_y = FoldTable(val_sizes), FoldTable(val_sizes)
        for fold, key in enumerate(self.fold_keys):  # one fold's arrays in memory at a time
            for table, array in zip((self.train, self.train_y, self.val, self.val_y), fold_data[key]):
                table.fill(fold, array)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape

    def train_inputs(self, batches: EpochBatches, index: np.ndarray, active: np.ndarray,
                     steps: np.ndarray) -> tuple:
        """Arguments of `StackedModel.train_steps` for these steps of `batches` (EpochBatches):
        image rows read and augmented with the key (fold's batch seed, epoch, batch of the epoch)."""
        keys = None
        if self.train.augmented:
            within = np.asarray(steps) - batches.first_step[None, :]
            keys = [(self.batch_seeds[self.fold_of[b]], batches.epoch, int(within[s, b]))
                    for s in range(within.shape[0]) for b in range(within.shape[1])]
        return (*self.train.inputs(self.train_y, index, active=active, keys=keys), active, steps)

    def sizes(self, table: FoldTable) -> np.ndarray:
        """Rows of each branch's fold in `table`."""
        return np.array([table.sizes[k] for k in self.fold_of])


def lr_table(specs: Sequence[FoldSpec]) -> np.ndarray:
    """(branches, longest) float32: each branch's LR per update, its last value repeated past its end."""
    lrs = [np.asarray(spec.lrs) for spec in specs]
    width = max(len(values) for values in lrs)
    return np.stack([np.pad(values, (0, width - len(values)), mode="edge") for values in lrs]).astype("float32")


def momentum_table(specs: Sequence[FoldSpec], width: int) -> np.ndarray | None:
    """(branches, width) float32: each branch's momentum (SGD) or beta_1 (Adam) per update under
    cyclical momentum, the configured constant for branches without it; None when no branch cycles."""
    if all(spec.momentum is None for spec in specs):
        return None
    from kfold_clr.config.optimizers import OPTIMIZERS
    from kfold_clr.training.fold_plans import momentum_callback

    rows = []
    for spec in specs:
        cfg = spec.optimizer
        callback = momentum_callback(spec)
        if callback is None:
            key = OPTIMIZERS[cfg.name].momentum_key  # the hyper-parameter the update rule reads as momentum
            rows.append(np.full(width, getattr(cfg, key) if key else 0.0))
        else:
            rows.append(callback.momentum_at(np.arange(width), schedule=spec.learning_rate))
    return np.stack(rows).astype("float32")


class EpochBatches:
    """One epoch of every branch as calls into the train step: full batches, then last partial ones.

    Branch b walks its fold's permutation `orders[fold][epoch]` in consecutive batches of
    `batch_size` rows, the last one partial, exactly as the sequential trainer does. Full
    batches of every branch run together (branch b takes part in step s while it has a full
    batch s); then each distinct partial size runs as one more step in which only the branches
    with that last batch take part. A branch's own updates stay in order, and no batch is
    padded (batch normalization and dropout see the rows Keras would).

    `cuts` splits the full steps into segments (after full step s), so that a branch's
    weights can be read right after a given update (snapshots).

    Args:
        layout: FoldLayout.
        orders: dict fold index -> (epochs, n_train) int array (`strategies.batch_order`).
        epoch: int. 0-based.
        running: bool array (branches,). Branches that train in this epoch.
        steps_per_epoch: int array (branches,). Updates of a full epoch of each branch.
        batch_size: int.
    """

    def __init__(self, layout: FoldLayout, orders: Mapping[int, np.ndarray], epoch: int, running: np.ndarray,
                 steps_per_epoch: np.ndarray, batch_size: int) -> None:
        self.layout, self.epoch, self.batch_size = layout, epoch, batch_size
        sizes = layout.sizes(layout.train)
        self.full = sizes // batch_size  # full batches of each branch
        self.last = sizes % batch_size  # rows of its partial batch (0: none)
        self.running = np.asarray(running, dtype=bool)
        self.first_step = epoch * np.asarray(steps_per_epoch)  # each branch's step at the epoch's start
        self._orders = [layout.train.offsets[k] + orders[k][epoch] for k in layout.fold_of]

    def full_steps(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arrays (index (S, B, batch), active (S, B), steps (S, B)) of full steps [start, stop)."""
        count = stop - start
        batch, n_branches = self.batch_size, len(self._orders)
        index = np.zeros((count, n_branches, batch), dtype="int32")
        for b, order in enumerate(self._orders):
            usable = max(0, min(stop, self.full[b]) - start)
            if usable:
                index[:usable, b] = order[start * batch:(start + usable) * batch].reshape(usable, batch)
            index[usable:, b] = order[0]  # idle: any row of the fold, never applied
        step = np.arange(start, stop)[:, None]
        active = (step < self.full[None, :]) & self.running[None, :]
        steps = (self.first_step[None, :] + step).astype("int32")
        return index, active, steps

    def partial_steps(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One (index (1, B, r), active (1, B), steps (1, B)) per distinct partial size r."""
        calls = []
        for size in sorted(set(int(r) for r, run in zip(self.last, self.running) if r and run)):
            index = np.zeros((1, len(self._orders), size), dtype="int32")
            active = np.zeros((1, len(self._orders)), dtype=bool)
            for b, order in enumerate(self._orders):
                take = self.full[b] * self.batch_size
                index[0, b] = order[take:take + size] if self.last[b] == size else order[:size]
                active[0, b] = self.last[b] == size and self.running[b]
            # A branch that sits this call out reads its epoch's first step: a branch without a
            # partial batch would otherwise point one past the end of its LR table.
            steps = np.where(active[0], self.first_step + self.full, self.first_step)[None, :].astype("int32")
            calls.append((index, active, steps))
        return calls

    @property
    def n_full(self) -> int:
        return int(self.full.max())
