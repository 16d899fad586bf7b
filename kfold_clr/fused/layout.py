"""Data layout of fused folds: every fold's rows stored once, each branch's data order and batches,
and each branch's LR per update as one table."""

import numpy as np



class _FoldTable:
    """Every fold's rows of one array, stored once (a TensorFlow variable): fold k at `offset[k] + i`.

    Filled one fold at a time, so the folds' arrays need not all be in memory at once.
    """

    def __init__(self, sizes):
        self.sizes = [int(size) for size in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype("int64")
        self.values = None

    def fill(self, fold, array):
        import tensorflow as tf

        array = np.asarray(array)
        if len(array) != self.sizes[fold]:
            raise ValueError(f"fold {fold} has {len(array)} rows; its split has {self.sizes[fold]}")
        if self.values is None:
            self.values = tf.Variable(tf.zeros([sum(self.sizes), *array.shape[1:]], array.dtype), trainable=False)
        start = int(self.offsets[fold])
        self.values[start:start + len(array)].assign(array.astype(self.values.dtype.as_numpy_dtype, copy=False))

    def rows(self, fold, count):
        """Flat indices of all rows of `fold`, padded to `count` (weights 0 on the padding)."""
        size = self.sizes[fold]
        index = np.full(count, self.offsets[fold], dtype="int32")
        index[:size] = self.offsets[fold] + np.arange(size)
        weights = np.zeros(count, dtype="float32")
        weights[:size] = 1.0
        return index, weights


class FoldLayout:
    """Which fold each branch trains on, with every fold's data stored once.

    Attributes:
        fold_keys: list of str. The distinct folds, in first-seen order.
        fold_of: int array (branches,). The fold index of each branch.
        fold_seeds: list of int. Each fold's seed (its dropout masks).
        batch_seeds: list of int. Each fold's batch seed (its data order).
        train, train_y, val, val_y: `_FoldTable` of x_train, y_train, x_val, y_val.
    """

    def __init__(self, specs, fold_data):
        self.fold_keys = list(dict.fromkeys(spec.key for spec in specs))
        self.fold_of = np.array([self.fold_keys.index(spec.key) for spec in specs])
        first = {key: next(spec for spec in specs if spec.key == key) for key in self.fold_keys}
        self.fold_seeds = [first[key].plan.seed for key in self.fold_keys]
        self.batch_seeds = [first[key].batch_seed for key in self.fold_keys]
        train_sizes = [len(first[key].plan.split.train) for key in self.fold_keys]
        val_sizes = [len(first[key].plan.split.val) for key in self.fold_keys]
        self.train, self.train_y = _FoldTable(train_sizes), _FoldTable(train_sizes)
        self.val, self.val_y = _FoldTable(val_sizes), _FoldTable(val_sizes)
        for fold, key in enumerate(self.fold_keys):  # one fold's arrays in memory at a time
            for table, array in zip((self.train, self.train_y, self.val, self.val_y), fold_data[key]):
                table.fill(fold, array)

    @property
    def input_shape(self):
        return tuple(self.train.values.shape[1:])

    def sizes(self, table):
        """Rows of each branch's fold in `table`."""
        return np.array([table.sizes[k] for k in self.fold_of])


def lr_table(specs):
    """(branches, longest) float32: each branch's LR per update, its last value repeated past its end."""
    lrs = [np.asarray(spec.lrs) for spec in specs]
    width = max(len(values) for values in lrs)
    return np.stack([np.pad(values, (0, width - len(values)), mode="edge") for values in lrs]).astype("float32")


def batch_layout(layout, orders, epoch, *, n_steps, batch_size):
    """Row indices and weights of every branch's batches in `epoch`: two (steps, branches, batch) arrays.

    Branch b walks its fold's permutation `orders[fold][epoch]` in consecutive batches; steps
    past its fold's last batch, and the padding of the last partial batch, get weight 0.
    """
    n_branches = len(layout.fold_of)
    index = np.zeros((n_branches, n_steps * batch_size), dtype="int32")
    weights = np.zeros_like(index, dtype="float32")
    for b, k in enumerate(layout.fold_of):
        size = layout.train.sizes[k]
        index[b] = layout.train.offsets[k]
        index[b, :size] = layout.train.offsets[k] + orders[k][epoch]
        weights[b, :size] = 1.0
    shape = (n_branches, n_steps, batch_size)
    return index.reshape(shape).transpose(1, 0, 2), weights.reshape(shape).transpose(1, 0, 2)
