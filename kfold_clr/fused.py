"""Fused folds: train many (strategy, fold) pairs of a small MLP as one stacked model.

A k-fold experiment of small Keras models spends most of its time in per-step
framework overhead, graph tracing and model building. Here every (strategy,
fold) pair is a *branch* of one model whose weights are stacked along a leading
branch axis (a Dense kernel of shape `(in, out)` becomes `(n_branches, in,
out)`), and a whole epoch of every branch runs in one `tf.function`.

What each branch sees, and why it matches the sequential path
(:func:`kfold_clr.trainer.train_fold`):

- Data: each branch reads only its own fold's training rows, scaled by its own
  fold's preprocessor (the data of each fold is stored once and shared by the
  branches of that fold). An epoch is one pass over a permutation of the fold's
  training rows, cut into `ceil(n_train / batch_size)` consecutive batches, the
  last one partial. The permutations come from
  `numpy.random.default_rng(spec.batch_seed)` (see :func:`batch_order`), so they
  are reproducible and identical for every strategy on the same fold (paired).
  Branches whose fold has fewer batches than the longest one are idle (no
  update, no step) on the extra steps.
- Initial weights: those of :func:`kfold_clr.trainer.initial_model` for the plan.
- Dropout: masks drawn per fold from the plan's seed, shared by the fold's strategies
  (they are not Keras's masks: fused and sequential folds are never mixed).
- Learning rate: each branch's LR per update comes from its fold specification
  (`FoldSpec.lrs`, the schedule evaluated once for all its steps by the same
  function Keras calls), and the graph gathers `lr[b, t_b]` at the branch's own
  step `t_b`.
- Update: the optimizer step is written out per branch with the branch's LR,
  exactly as Keras's optimizers compute it (SGD with momentum and Nesterov,
  Adam, RMSprop; `weight_decay` and `clipnorm` per branch too)::

      sgd:      m = momentum * m - lr * g;  w += m                (nesterov: w += momentum * m - lr * g)
      adam:     m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
                w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + 1e-7)
      rmsprop:  v = rho * v + (1 - rho) g^2;  w -= lr * g / sqrt(v + 1e-7)

  so a branch's weights follow the same trajectory as a single model trained
  on the same batches.
- Divergence: a branch whose batch loss becomes NaN or infinite is frozen from
  that batch on (no further update) and recorded as diverged in that epoch.

Only what can be fused exactly is fused: :func:`fused_support` says why not
otherwise, and the caller trains those folds one by one.
"""

import math
import time

import numpy as np

EVAL_CHUNK_FLOATS = 2**20  # bound on branches x rows x widest layer in one evaluation call

_EPSILON = 1e-7  # Keras's default epsilon of Adam and RMSprop


# ----------------------------------------------------------------------------- support
def _per_sample(obj, base, attribute):
    """The per-sample function behind a Keras loss or metric object, or None.

    Keras wraps plain functions (`mse`, `sparse_categorical_accuracy`) in an object of
    class `base` that keeps the function in `attribute` with its keyword arguments; any
    other object of that class is stateful and has no per-sample form to mask per branch.
    """
    fn = getattr(obj, attribute, None)
    if isinstance(obj, base) and callable(fn):
        kwargs = dict(getattr(obj, "_fn_kwargs", {}) or {})
        return lambda y_true, y_pred: fn(y_true, y_pred, **kwargs)
    if isinstance(obj, base) or not callable(obj):
        return None
    return obj


def _loss_function(name):
    """The per-sample form of a Keras loss name, or None."""
    import keras

    try:
        loss = keras.losses.get(name)
    except (ValueError, TypeError):
        return None
    return _per_sample(loss, keras.losses.Loss, "fn")


def _metric_function(name, n_outputs):
    """The per-sample form of a Keras metric name (as `compile` resolves it), or None."""
    import keras

    if name in ("accuracy", "acc"):
        return (keras.metrics.sparse_categorical_accuracy if n_outputs > 1
                else keras.metrics.binary_accuracy)
    try:
        metric = keras.metrics.get(name)
    except (ValueError, TypeError):
        return None
    if isinstance(metric, keras.metrics.Metric) and not isinstance(metric, keras.metrics.Mean):
        return None  # stateful (AUC, precision, ...)
    return _per_sample(metric, keras.metrics.Mean, "_fn")


def fused_support(config, strategy_names) -> tuple:
    """Whether these strategies can be trained fused, exactly; if not, why.

    Fusing needs the declarative MLP without batch normalization, per-sample
    losses and metrics, no early stopping, and strategies whose folds are
    independent of each other (no `carry_weights`), with no per-batch callbacks
    (`cycle_momentum`, `snapshots`). SGD (with or without momentum / Nesterov),
    Adam and RMSprop are all applied exactly per branch.

    Args:
        config: ExperimentConfig.
        strategy_names: list of str. Strategies of `config` to train together.

    Returns:
        Tuple `(ok, reason)`: `reason` is a one-line explanation, empty when `ok`.

    Example:

    ```python
    ok, reason = fused_support(config, ["clr_reset", "clr_continue"])
    if not ok:
        print(f"training folds one by one: {reason}")
    ```
    """
    names = list(strategy_names)
    if not names:
        raise ValueError(f"Argument `strategy_names` must name at least one strategy. Received: {names!r}")
    unknown = [name for name in names if name not in config.strategies]
    if unknown:
        raise ValueError(f"Argument `strategy_names` must be strategies of the config "
                         f"({', '.join(config.strategies)}). Received: {unknown[0]!r}")
    model, training = config.model, config.training
    if model.factory is not None:
        return False, "factory model: only the declarative MLP is fused"
    if model.kind != "mlp":
        return False, f"{model.kind}: only the declarative MLP is fused"
    if model.batch_norm:
        return False, "batch_norm: moving statistics are not per-branch exact"
    if training.early_stopping is not None:
        return False, "early_stopping: folds stop and restore weights one by one"
    if training.loss is not None and _loss_function(training.loss) is None:
        return False, f"loss {training.loss!r}: no per-sample form to mask per branch"
    for metric in training.metrics or ():
        if metric not in ("accuracy", "acc") and _metric_function(metric, 2) is None:
            return False, f"metric {metric!r}: no per-sample form to mask per branch"
    for name in names:
        strategy = config.strategies[name]
        if getattr(strategy, "carry_weights", False):
            return False, f"{name}: carry_weights needs folds in sequence"
        if getattr(strategy, "cycle_momentum", None) is not None:
            return False, f"{name}: cycle_momentum changes the optimizer per batch"
        if getattr(strategy, "snapshots", None) is not None:
            return False, f"{name}: snapshots are taken per fold by a callback"
    return True, ""


# ----------------------------------------------------------------------------- data order
def batch_order(seed, n_train, *, epochs):
    """The order in which a branch visits its training rows, one permutation per epoch.

    Epoch `e` trains on `order[e]` cut into consecutive batches of
    `batch_size` rows (the last one partial). The order depends only on the
    fold's batch seed, so every strategy on the same fold sees the same batches.

    Args:
        seed: Int. The fold's batch seed (`FoldSpec.batch_seed`).
        n_train: Int >= 1. Rows in the fold's training split.
        epochs: Int >= 1. Epochs to draw.

    Returns:
        Int array of shape `(epochs, n_train)`.
    """
    if int(n_train) < 1:
        raise ValueError(f"Argument `n_train` must be >= 1. Received: n_train={n_train}")
    if int(epochs) < 1:
        raise ValueError(f"Argument `epochs` must be >= 1. Received: epochs={epochs}")
    rng = np.random.default_rng(int(seed))
    return np.stack([rng.permutation(int(n_train)) for _ in range(int(epochs))])


# ----------------------------------------------------------------------------- the stacked model
def _layer_program(model):
    """The MLP as a list of steps on stacked weights, and the weights it reads in order."""
    import keras

    program, weights = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Flatten):
            program.append(("flatten",))
        elif isinstance(layer, keras.layers.Dense):
            kernel = len(weights)
            weights.append(layer.kernel)
            bias = None
            if layer.use_bias:
                bias = len(weights)
                weights.append(layer.bias)
            program.append(("dense", kernel, bias, layer.activation))
        elif isinstance(layer, keras.layers.Activation):
            program.append(("activation", layer.activation))
        elif isinstance(layer, keras.layers.Dropout):
            if layer.rate:
                program.append(("dropout", float(layer.rate)))
        else:
            message = (f"Layer {layer.name!r} ({type(layer).__name__}) cannot be fused; "
                       "only Flatten, Dense, Activation and Dropout layers are")
            raise ValueError(message)
    return program, weights


def _forward(program, variables, x, *, keep_mask=None):
    """Apply the program to stacked inputs `x` of shape (branches, rows, ...).

    `keep_mask(shape, rate, layer)` gives the dropout keep-mask while training; None
    means inference (dropout off).
    """
    import tensorflow as tf

    for index, step in enumerate(program):
        kind = step[0]
        if kind == "flatten":
            x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], -1])
        elif kind == "dense":
            _, kernel, bias, activation = step
            x = tf.matmul(x, variables[kernel])
            if bias is not None:
                x = x + variables[bias][:, None, :]
            x = activation(x)
        elif kind == "activation":
            x = step[1](x)
        elif kind == "dropout" and keep_mask is not None:
            rate = step[1]
            x = tf.where(keep_mask(tf.shape(x), rate, index), x / (1.0 - rate), tf.zeros_like(x))
    return x


def _per_branch(values, weights):
    """Per-branch weighted sums of per-sample values (branches, rows)."""
    import tensorflow as tf

    return tf.reduce_sum(tf.cast(values, "float32") * weights, axis=1)


class _Optimizer:
    """The update of `training.optimizer`, applied per branch with per-branch LRs.

    Args:
        cfg: OptimizerConfig.
        variables: list of tf.Variable, stacked along axis 0 (branches).
    """

    def __init__(self, cfg, variables):
        import tensorflow as tf

        self.cfg = cfg
        zeros = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.slots = {}
        if cfg.name == "sgd" and cfg.momentum:
            self.slots["m"] = zeros
        elif cfg.name == "adam":
            self.slots["m"] = zeros
            self.slots["v"] = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        elif cfg.name == "rmsprop":
            self.slots["v"] = zeros

    def apply(self, variables, gradients, lr, iterations, active):
        """One update of every active branch: lr (branches,), iterations (branches,) int."""
        import tensorflow as tf

        cfg = self.cfg
        for index, (variable, gradient) in enumerate(zip(variables, gradients)):
            shape = [-1] + [1] * (len(variable.shape) - 1)
            rate = tf.reshape(lr, shape)
            mask = tf.reshape(active, shape)
            if cfg.clipnorm is not None:
                axes = list(range(1, len(variable.shape)))
                l2sum = tf.reduce_sum(tf.square(gradient), axes, keepdims=True)
                positive = l2sum > 0
                l2norm = tf.where(positive, tf.sqrt(tf.where(positive, l2sum, tf.ones_like(l2sum))), l2sum)
                gradient = (gradient * cfg.clipnorm) / tf.maximum(l2norm, cfg.clipnorm)
            weights = variable
            if cfg.weight_decay is not None:
                weights = weights - weights * tf.constant(cfg.weight_decay, "float32") * rate
            if cfg.name == "sgd":
                if cfg.momentum:
                    m = self.slots["m"][index]
                    momentum = tf.constant(cfg.momentum, "float32")
                    new_m = m * momentum - gradient * rate
                    step = new_m * momentum - gradient * rate if cfg.nesterov else new_m
                    m.assign(tf.where(mask, new_m, m))
                    new = weights + step
                else:
                    new = weights - gradient * rate
            elif cfg.name == "adam":
                m, v = self.slots["m"][index], self.slots["v"][index]
                t = tf.reshape(tf.cast(iterations + 1, "float32"), shape)
                beta_1 = tf.constant(cfg.beta_1, "float32")
                beta_2 = tf.constant(cfg.beta_2, "float32")
                alpha = rate * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
                new_m = m + (gradient - m) * (1 - cfg.beta_1)
                new_v = v + (tf.square(gradient) - v) * (1 - cfg.beta_2)
                m.assign(tf.where(mask, new_m, m))
                v.assign(tf.where(mask, new_v, v))
                new = weights - (new_m * alpha) / (tf.sqrt(new_v) + _EPSILON)
            else:
                v = self.slots["v"][index]
                new_v = cfg.rho * v + (1 - cfg.rho) * tf.square(gradient)
                v.assign(tf.where(mask, new_v, v))
                new = weights - (rate * gradient) / tf.sqrt(new_v + _EPSILON)
            variable.assign(tf.where(mask, new, variable))


class _FusedModel:
    """Stacked weights, optimizer state and the two compiled functions (train epoch, evaluate)."""

    def __init__(self, program, initial, optimizer_cfg, loss_fn, metric_fns, lr_table, fold_seeds, fold_of):
        import tensorflow as tf

        self.program, self.loss_fn, self.metric_fns = program, loss_fn, metric_fns
        self.variables = [tf.Variable(np.stack(values).astype("float32")) for values in zip(*initial)]
        self.optimizer = _Optimizer(optimizer_cfg, self.variables)
        n_branches = len(initial)
        self.alive = tf.Variable(tf.ones([n_branches], "bool"), trainable=False)
        self.iterations = tf.Variable(tf.zeros([n_branches], "int32"), trainable=False)
        self.lr_table = tf.constant(lr_table, "float32")
        self.fold_seeds = [int(seed) for seed in fold_seeds]  # one per fold: its plans' seed
        self.fold_of = tf.constant(fold_of, "int32")  # branch -> fold
        self.train_epoch = tf.function(self._train_epoch, autograph=False)
        self.evaluate = tf.function(self._evaluate, autograph=False)

    def _scores(self, y, pred, weights):
        """Per-branch weighted sums of loss and metrics, and of the weights."""
        import tensorflow as tf

        if pred.shape[-1] == 1 and len(y.shape) == len(pred.shape) - 1:
            y = y[..., None]
        sums = [_per_branch(self.loss_fn(y, pred), weights)]
        sums += [_per_branch(fn(y, pred), weights) for fn in self.metric_fns]
        return tf.stack(sums), tf.reduce_sum(weights, axis=1)

    def _train_epoch(self, x, y, index, weights, steps, active, epoch):
        """One epoch of every branch: index/weights (S, B, batch), steps/active (S, B)."""
        import tensorflow as tf

        def body(s, totals):
            rows, w = index[s], weights[s]
            xb, yb = tf.gather(x, rows), tf.gather(y, rows)
            with tf.GradientTape() as tape:
                pred = _forward(self.program, self.variables, xb,
                                keep_mask=lambda shape, rate, layer: self._keep_mask(shape, rate, layer, epoch, s))
                sums, count = self._scores(yb, pred, w)
                loss = sums[0] / tf.maximum(count, 1.0)
                finite = tf.math.is_finite(loss)
                total = tf.reduce_sum(tf.where(finite, loss, tf.zeros_like(loss)))
            gradients = tape.gradient(total, self.variables)
            running = tf.logical_and(active[s], self.alive)
            update = tf.logical_and(running, finite)
            lr = tf.gather(self.lr_table, steps[s], batch_dims=1)
            self.optimizer.apply(self.variables, gradients, lr, self.iterations, update)
            self.iterations.assign_add(tf.cast(update, "int32"))
            self.alive.assign(tf.logical_and(self.alive, tf.logical_or(finite, tf.logical_not(running))))
            return s + 1, totals + tf.where(running[None, :], sums, tf.zeros_like(sums))

        totals = tf.zeros([1 + len(self.metric_fns), tf.shape(active)[1]], "float32")
        _, totals = tf.while_loop(lambda s, _: s < tf.shape(index)[0], body, (tf.constant(0), totals))
        return totals

    def _keep_mask(self, shape, rate, layer, epoch, step):
        """Dropout keep-mask (branches, rows, units) drawn per fold from the fold's own seed:
        the branches of one fold (its strategies) share it, whichever folds are fused together."""
        import tensorflow as tf

        draw = (tf.cast(epoch, "int64") * 100003 + tf.cast(step, "int64")) * 64 + layer
        per_fold = [tf.random.stateless_uniform(shape[1:], seed=tf.stack([tf.constant(seed, "int64"), draw]))
                    for seed in self.fold_seeds]
        return tf.gather(tf.stack(per_fold), self.fold_of) >= rate

    def _evaluate(self, x, y, index, weights):
        """Per-branch sums of loss and metrics over the rows `index` (B, rows) in inference mode."""
        import tensorflow as tf

        pred = _forward(self.program, self.variables, tf.gather(x, index))
        return self._scores(tf.gather(y, index), pred, weights)


# ----------------------------------------------------------------------------- data layout
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
        scores = None if diverged_epoch[b] is not None else (final_train, final_val)
        record = fold_record(
            spec, iterations=done, lrs=spec.lrs[:max(done, 1)], fit_seconds=seconds / len(specs),
            diverged_epoch=diverged_epoch[b], epoch_logs=histories[b],
            train_scores=None if scores is None else {score_names[i]: float(final_train[i, b]) for i in order},
            val_scores=None if scores is None else {score_names[i]: float(final_val[i, b]) for i in order})
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
