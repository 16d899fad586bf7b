"""The stacked model: the MLP as steps on weights stacked along a branch axis, the per-branch
optimizer update, and the two compiled functions (one epoch of every branch, evaluation)."""

import numpy as np

_EPSILON = 1e-7  # Keras's default epsilon of Adam and RMSprop


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
