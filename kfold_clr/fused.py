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
  `numpy.random.default_rng(plan.seed + 1)` (see :func:`batch_order`), so they
  are reproducible and identical for every strategy on the same fold (paired).
  Branches whose fold has fewer batches than the longest one are idle (no
  update, no step) on the extra steps.
- Initial weights: those of :func:`kfold_clr.trainer.initial_model` for the plan.
- Dropout: masks drawn per fold from the plan's seed, shared by the fold's strategies
  (they are not Keras's masks: fused and sequential folds are never mixed).
- Learning rate: each branch's schedule (from
  :func:`kfold_clr.strategies.build_schedule`) is evaluated once for all its
  steps with :func:`kfold_clr.strategies.learning_rates` (the schedules are pure
  functions of the step, evaluated by the same function Keras calls), and the
  graph gathers `lr[b, t_b]` at the branch's own step `t_b`.
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
def _loss_function(name):
    """The per-sample form of a Keras loss name, or None."""
    import keras

    try:
        loss = keras.losses.get(name)
    except (ValueError, TypeError):
        return None
    if isinstance(loss, keras.losses.Loss) and callable(getattr(loss, "fn", None)):  # a function wrapper
        fn, kwargs = loss.fn, dict(getattr(loss, "_fn_kwargs", {}) or {})
        return lambda y_true, y_pred: fn(y_true, y_pred, **kwargs)
    if isinstance(loss, keras.losses.Loss) or not callable(loss):
        return None
    return loss


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
    if isinstance(metric, keras.metrics.Mean) and callable(getattr(metric, "_fn", None)):  # a function wrapper
        fn, kwargs = metric._fn, dict(getattr(metric, "_fn_kwargs", {}) or {})
        return lambda y_true, y_pred: fn(y_true, y_pred, **kwargs)
    if isinstance(metric, keras.metrics.Metric) or not callable(metric):
        return None
    return metric


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
    fold's seed, so every strategy on the same fold sees the same batches.

    Args:
        seed: Int. The plan's seed (`FoldPlan.seed`).
        n_train: Int >= 1. Rows in the fold's training split.
        epochs: Int >= 1. Epochs to draw.

    Returns:
        Int array of shape `(epochs, n_train)`.
    """
    if int(n_train) < 1:
        raise ValueError(f"Argument `n_train` must be >= 1. Received: n_train={n_train}")
    if int(epochs) < 1:
        raise ValueError(f"Argument `epochs` must be >= 1. Received: epochs={epochs}")
    rng = np.random.default_rng(int(seed) + 1)
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


def _fold_tables(plans, fold_keys, fold_data):
    """Tables of x_train, y_train, x_val and y_val over `fold_keys`, read one fold at a time."""
    split_of = {plan.key: plan.split for plan in plans}
    train_sizes = [len(split_of[key].train) for key in fold_keys]
    val_sizes = [len(split_of[key].val) for key in fold_keys]
    tables = [_FoldTable(train_sizes), _FoldTable(train_sizes), _FoldTable(val_sizes), _FoldTable(val_sizes)]
    for fold, key in enumerate(fold_keys):
        for table, array in zip(tables, fold_data[key]):
            table.fill(fold, array)
    return tables


# ----------------------------------------------------------------------------- training
def train_fused(config, dataset, plans, *, fold_data, bounds, progress=None, keep_weights=False):
    """Train several (strategy, fold) plans as one fused model; one record per plan.

    Each plan is a branch with its own weights, optimizer state, step counter
    and learning-rate schedule; a branch trains only on its fold's training
    rows (see the module docstring for the data order and the exact update).

    Args:
        config: ExperimentConfig. Must pass :func:`fused_support` for the plans' strategies.
        dataset: Dataset.
        plans: list of FoldPlan, possibly of several strategies.
        fold_data: mapping. `split.key -> (x_train, y_train, x_val, y_val)` as made by
            :func:`kfold_clr.trainer.prepare_fold` for every plan's split
            (`kfold_clr.trainer.PreparedFolds` makes each when read).
        bounds: dict. `(strategy, split.key) -> (base_lr, max_lr)` or None; missing
            keys mean fixed bounds.
        progress: callable `(plan, epoch, logs)` or None. Called for every branch
            after each of its epochs.
        keep_weights: bool. Put each branch's final weights in its record.

    Returns:
        List of dicts, in the order of `plans`, in the format of
        :func:`kfold_clr.trainer.train_fold` (`row`, `history`, `lr`; `weights`
        when asked). `fit_seconds` is the fused training time divided by the
        number of branches.

    Example:

    ```python
    plans = plan_folds("clr_reset", config.strategies["clr_reset"], splits, seed=0,
                       epochs=20, batch_size=32)
    data = {p.key: prepare_fold(dataset, p.split, config.data) for p in plans}
    records = train_fused(config, dataset, plans, fold_data=data, bounds={})
    ```
    """
    import tensorflow as tf

    from kfold_clr.models import default_loss, default_metrics
    from kfold_clr.strategies import build_schedule, learning_rates
    from kfold_clr.trainer import fold_record, initial_model

    plans = list(plans)
    if not plans:
        raise ValueError(f"Argument `plans` must hold at least one FoldPlan. Received: plans={plans!r}")
    ok, reason = fused_support(config, list(dict.fromkeys(p.strategy for p in plans)))
    if not ok:
        raise ValueError(f"Argument `plans` cannot be trained fused: {reason}")
    missing = [p.key for p in plans if p.key not in fold_data]
    if missing:
        raise ValueError(f"Argument `fold_data` must hold every plan's split. Received no data for {missing[0]!r}")
    bounds = bounds or {}
    training = config.training
    batch_size = training.batch_size

    # Folds (data stored once, read one fold at a time) and branches (one per plan).
    fold_keys = list(dict.fromkeys(p.key for p in plans))
    fold_of = np.array([fold_keys.index(p.key) for p in plans])
    train, train_y, val, val_y = _fold_tables(plans, fold_keys, fold_data)
    n_train, n_val = train.sizes, val.sizes
    input_shape = tuple(train.values.shape[1:])

    # Initial weights: the fold's initial model, built once per seed.
    initial, program = {}, None
    for plan in plans:
        if plan.seed not in initial:
            model = initial_model(config, dataset, plan, input_shape)
            program, weights = _layer_program(model)
            initial[plan.seed] = [np.asarray(w.numpy()) for w in weights]

    # Schedules, evaluated at every step of each branch.
    steps_of = np.array([plan.steps_per_epoch for plan in plans])
    epochs_of = np.array([p.epochs for p in plans])
    infos, tables = [], []
    for plan in plans:
        schedule, info = build_schedule(config.strategies[plan.strategy], plan,
                                        bounds=bounds.get((plan.strategy, plan.key)), warn=False)
        infos.append(info)
        tables.append(learning_rates(schedule, max(plan.iterations, 1)))
    width = max(len(t) for t in tables)
    lr_table = np.stack([np.pad(t, (0, width - len(t)), mode="edge") for t in tables]).astype("float32")

    loss_fn = _loss_function(training.loss or default_loss(dataset.task))
    metric_names = list(training.metrics if training.metrics is not None else default_metrics(dataset.task))
    metric_fns = [_metric_function(name, dataset.n_outputs) for name in metric_names]
    fold_seeds = [next(p.seed for p in plans if p.key == key) for key in fold_keys]
    model = _FusedModel(program, [initial[p.seed] for p in plans], training.optimizer, loss_fn,
                        metric_fns, lr_table, fold_seeds, fold_of)

    x_train, y_train, x_val, y_val = train.values, train_y.values, val.values, val_y.values
    widest = max([int(np.prod(input_shape))] + [int(v.shape[-1]) for v in model.variables])
    chunk_rows = max(32, EVAL_CHUNK_FLOATS // (len(plans) * widest))
    score_names = ["loss", *metric_names]

    def evaluate(x, y, table, counts):
        """Per-branch means of loss and metrics over each branch's rows of `table`."""
        longest = max(counts)
        size = min(longest, chunk_rows)
        full = [table.rows(k, math.ceil(longest / size) * size) for k in fold_of]
        index, weights = np.stack([f[0] for f in full]), np.stack([f[1] for f in full])
        sums, total = 0.0, 0.0
        for start in range(0, index.shape[1], size):
            part_sums, part_count = model.evaluate(x, y, index[:, start:start + size],
                                                   weights[:, start:start + size])
            sums, total = sums + part_sums.numpy(), total + part_count.numpy()
        return sums / np.maximum(total, 1.0)

    # Per-fold batch order (paired across strategies), laid out per branch.
    n_steps = int(steps_of.max())
    n_epochs = int(epochs_of.max())
    orders = {}
    for plan, k in zip(plans, fold_of):
        orders.setdefault(k, batch_order(plan.seed, n_train[k], epochs=n_epochs))

    histories = [[] for _ in plans]
    diverged_epoch = [None] * len(plans)
    started = time.perf_counter()
    for epoch in range(n_epochs):
        index = np.zeros((len(plans), n_steps * batch_size), dtype="int32")
        weights = np.zeros_like(index, dtype="float32")
        for b, k in enumerate(fold_of):
            index[b] = train.offsets[k]
            index[b, :n_train[k]] = train.offsets[k] + orders[k][epoch]
            weights[b, :n_train[k]] = 1.0
        index = index.reshape(len(plans), n_steps, batch_size).transpose(1, 0, 2)
        weights = weights.reshape(len(plans), n_steps, batch_size).transpose(1, 0, 2)
        step = np.arange(n_steps)[:, None]
        active = (step < steps_of[None, :]) & (epoch < epochs_of[None, :])
        steps = np.minimum(epoch * steps_of[None, :] + step, width - 1).astype("int32")
        was_alive = model.alive.numpy()
        totals = model.train_epoch(x_train, y_train, index, weights, steps, active,
                                   tf.constant(epoch, "int32")).numpy()
        counts = np.array([n_train[k] for k in fold_of], dtype="float64")
        train_scores = totals / counts
        val_scores = evaluate(x_val, y_val, val, n_val)
        alive = model.alive.numpy()
        for b, plan in enumerate(plans):
            if epoch >= plan.epochs or not was_alive[b]:
                continue
            if not alive[b]:
                diverged_epoch[b] = epoch + 1
                train_scores[0, b] = math.nan
            logs = {name: float(train_scores[i, b]) for i, name in enumerate(score_names)}
            logs.update({f"val_{name}": float(val_scores[i, b]) for i, name in enumerate(score_names)})
            logs = dict(sorted(logs.items()))  # Keras's history order
            histories[b].append(logs)
            if progress is not None:
                progress(plan, epoch + 1, dict(logs))
        if not alive.any():
            break
    fused_seconds = time.perf_counter() - started

    final_train = evaluate(x_train, y_train, train, n_train)
    final_val = val_scores  # the last epoch's validation pass already saw the final weights
    iterations = model.iterations.numpy()
    stacked = [v.numpy() for v in model.variables] if keep_weights else None

    order = sorted(range(len(score_names)), key=score_names.__getitem__)  # Keras's order
    records = []
    for b, plan in enumerate(plans):
        diverged = diverged_epoch[b] is not None
        record = fold_record(
            plan, lrs=tables[b][:max(int(iterations[b]), 1)], lr_info=infos[b], iterations=int(iterations[b]),
            fit_seconds=fused_seconds / len(plans), diverged_epoch=diverged_epoch[b],
            optimistic=training.early_stopping is not None,
            train_scores=None if diverged else {score_names[i]: float(final_train[i, b]) for i in order},
            val_scores=None if diverged else {score_names[i]: float(final_val[i, b]) for i in order},
            epoch_logs=histories[b])
        if keep_weights:
            record["weights"] = [values[b] for values in stacked]
        records.append(record)
    return records
