"""The stacked model: k copies of one Keras model as one, every variable stacked along a branch
axis, the model's own `stateless_call` vectorised over branches (`tf.vectorized_map`), the
per-branch optimizer update, and the compiled functions that train and evaluate all branches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from kfold_clr.config.optimizers import OPTIMIZERS, slot_names

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kfold_clr.config import ExperimentConfig, OptimizerConfig
    from kfold_clr.data.datasets import Dataset

    Table = Union[tf.Variable, np.ndarray]  # a stored table, or the rows read for one call (image caches)


def _as_list(values):
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _table_spec(table):
    """What a compiled function is traced for: a stored table itself (a variable), or any number
    of rows of this shape (the rows read for one call from an image cache)."""
    import tensorflow as tf

    if isinstance(table, tf.Variable):
        return table
    return tf.TensorSpec([None, *table.shape[1:]], tf.as_dtype(table.dtype))


def _as_tensor(table):
    import tensorflow as tf

    return table if isinstance(table, tf.Variable) else tf.convert_to_tensor(table)


class _Optimizer:
    """The update of `training.optimizer` (its rule from :data:`kfold_clr.config.optimizers.OPTIMIZERS`),
    applied per branch with per-branch LRs and momenta, after `weight_decay` and `clipnorm` as
    Keras applies them, so a branch follows the trajectory of a single model. `momentum` is SGD's
    momentum or Adam's `beta_1` at each branch's step (cyclical momentum), or None for the
    configured constant.

    Args:
        cfg: OptimizerConfig.
        variables: list of tf.Variable, stacked along axis 0 (branches).
    """

    def __init__(self, cfg, variables):
        import tensorflow as tf

        self.cfg = cfg
        self.update = OPTIMIZERS[cfg.name].fused_update
        self.slots = {name: [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
                      for name in slot_names(cfg)}

    def apply(self, variables: list, gradients: list, lr, iterations, active, momentum=None) -> None:
        """One update of every active branch: lr, momentum (branches,) float; iterations (branches,) int."""
        import tensorflow as tf

        cfg = self.cfg
        for index, (variable, gradient) in enumerate(zip(variables, gradients)):
            shape = [-1] + [1] * (len(variable.shape) - 1)
            rate = tf.reshape(lr, shape)
            mask = tf.reshape(active, shape)
            if cfg.clipnorm is not None:
                gradient = _clip_by_norm(tf, gradient, cfg.clipnorm)
            weights = variable
            if cfg.weight_decay is not None:
                weights = weights - weights * tf.constant(cfg.weight_decay, "float32") * rate
            own_slots = {name: variables_of[index] for name, variables_of in self.slots.items()}
            new = self.update(tf, cfg, weights, gradient, rate, own_slots, mask,
                              None if momentum is None else tf.reshape(momentum, shape), tf.reshape(iterations, shape))
            variable.assign(tf.where(mask, new, variable))


def _clip_by_norm(tf, gradient, clipnorm):
    """Each branch's gradient scaled to an L2 norm of at most `clipnorm` (Keras's `clipnorm`)."""
    axes = list(range(1, len(gradient.shape)))
    l2sum = tf.reduce_sum(tf.square(gradient), axes, keepdims=True)
    positive = l2sum > 0
    l2norm = tf.where(positive, tf.sqrt(tf.where(positive, l2sum, tf.ones_like(l2sum))), l2sum)
    return (gradient * clipnorm) / tf.maximum(l2norm, clipnorm)


def initial_states(config: ExperimentConfig, dataset: Dataset, plans: list,
                   input_shape: tuple) -> tuple[keras.Model, list]:
    """Each plan's initial state, built once per fold seed, and the last model built (the template).

    Returns:
        (template, states): `states[i]` is `(trainable values, non-trainable values)` of
        :func:`kfold_clr.training.trainer.initial_model` for `plans[i]` (dropout seed states included).
    """
    from kfold_clr.training.trainer import initial_model

    by_seed, template = {}, None
    for plan in plans:
        if plan.seed not in by_seed:
            template = initial_model(config, dataset, plan, input_shape)
            by_seed[plan.seed] = ([np.array(v.numpy()) for v in template.trainable_variables],
                                  [np.array(v.numpy()) for v in template.non_trainable_variables])
    return template, [by_seed[plan.seed] for plan in plans]


class StackedModel:
    """Stacked variables, optimizer state and the compiled functions of every branch.

    Args:
        template: keras.Model. Built; its `stateless_call` runs each branch.
        states: list, one per branch, of `(trainable values, non-trainable values)` in the
            order of `template.trainable_variables` / `non_trainable_variables`.
        optimizer_cfg: OptimizerConfig.
        loss_fn, metric_fns: per-sample loss and metric functions `(y_true, y_pred) -> (rows,)`.
        lr_table: (branches, steps) float32. Each branch's LR per update.
        momentum_table: (branches, steps) float32 or None. Each branch's momentum per update.
    """

    def __init__(self, template: keras.Model, states: Sequence[tuple[list[np.ndarray], list[np.ndarray]]],
                 optimizer_cfg: OptimizerConfig, loss_fn: Callable[..., Any], metric_fns: Sequence[Callable[..., Any]],
                 lr_table: np.ndarray, momentum_table: np.ndarray | None = None) -> None:
        import tensorflow as tf

        self.template, self.loss_fn, self.metric_fns = template, loss_fn, metric_fns
        self.trainable = [tf.Variable(np.stack(values)) for values in zip(*(s[0] for s in states))]
        self.non_trainable = [tf.Variable(np.stack(values), trainable=False)
                              for values in zip(*(s[1] for s in states))]
        self.optimizer = _Optimizer(optimizer_cfg, self.trainable)
        n_branches = len(states)
        self.alive = tf.Variable(tf.ones([n_branches], "bool"), trainable=False)
        self.iterations = tf.Variable(tf.zeros([n_branches], "int32"), trainable=False)
        self.lr_table = tf.constant(lr_table, "float32")
        self.momentum_table = None if momentum_table is None else tf.constant(momentum_table, "float32")
        self._compiled_train = tf.function(self._train_steps, autograph=False)
        self._compiled_evaluate = tf.function(self._evaluate, autograph=False)
        self._train_fn, self._evaluate_fn = None, None

    def traced_train_steps(self, x: Table, y: Table) -> Callable:
        """The compiled train step for the tables x, y, traced once for any number of steps and
        rows per batch (segments and partial batches differ in length)."""
        import tensorflow as tf

        from kfold_clr.training.fused.vectorize import grouped_convolutions

        if self._train_fn is None:
            b = self.n_branches
            with grouped_convolutions():  # stacked conv kernels: one grouped convolution
                self._train_fn = self._compiled_train.get_concrete_function(
                    _table_spec(x), _table_spec(y), tf.TensorSpec([None, b, None], "int32"),
                    tf.TensorSpec([None, b], "bool"), tf.TensorSpec([None, b], "int32"))
        return self._train_fn

    def train_steps(self, x: Table, y: Table, index: np.ndarray, active: np.ndarray, steps: np.ndarray) -> tf.Tensor:
        """Run steps of every branch (see `_train_steps`); numpy in, a tensor out."""
        import tensorflow as tf

        function = self.traced_train_steps(x, y)
        return function(_as_tensor(x), _as_tensor(y), tf.constant(index, "int32"), tf.constant(active, "bool"),
                        tf.constant(steps, "int32"))

    def evaluate(self, x: Table, y: Table, index: np.ndarray, weights: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-branch sums of loss and metrics over rows `index` (see `_evaluate`), traced once for any rows."""
        import tensorflow as tf

        from kfold_clr.training.fused.vectorize import grouped_convolutions

        if self._evaluate_fn is None:
            b = self.n_branches
            with grouped_convolutions():
                self._evaluate_fn = self._compiled_evaluate.get_concrete_function(
                    _table_spec(x), _table_spec(y), tf.TensorSpec([b, None], "int32"),
                    tf.TensorSpec([b, None], "float32"))
        return self._evaluate_fn(_as_tensor(x), _as_tensor(y), tf.constant(index, "int32"),
                                 tf.constant(weights, "float32"))

    @property
    def n_branches(self) -> int:
        return int(self.alive.shape[0])

    def stop(self, branches: Iterable[int]) -> None:
        """Take these branches out of every later step (diverged, or stopped early)."""
        alive = self.alive.numpy()
        alive[list(branches)] = False
        self.alive.assign(alive)

    # -- the forward pass, vectorised over branches --------------------------------------------
    def _forward(self, trainable, non_trainable, x, *, training):
        """Outputs (B, rows, ...), new non-trainable values and per-branch regularization losses."""
        import tensorflow as tf

        def branch(args):
            weights, state, inputs = args
            outputs, state, losses = self.template.stateless_call(weights, state, inputs, training=training,
                                                                  return_losses=True)
            extra = tf.add_n([tf.cast(loss, "float32") for loss in losses]) if losses else tf.zeros([], "float32")
            return _as_list(outputs)[0], list(state), extra

        return tf.vectorized_map(branch, (list(trainable), list(non_trainable), x), fallback_to_while_loop=True,
                                 warn=False)

    def _per_sample(self, fn, y, pred):
        import tensorflow as tf

        if pred.shape[-1] == 1 and len(y.shape) == len(pred.shape) - 1:
            y = y[..., None]
        values = fn(y, pred)
        while len(values.shape) > 2:  # per-sample values of (rows, ...) outputs
            values = tf.reduce_mean(values, axis=-1)
        return values

    # -- training --------------------------------------------------------------------------------
    def _train_steps(self, x, y, index, active, steps):
        """Steps over every branch: index (S, B, rows); active, steps (S, B). Returns (S, 2 + metrics, B):
        per step and branch, the batch loss x rows, the sums of per-sample metrics, and the rows
        (zeros where a branch did not take part)."""
        import tensorflow as tf

        rows = tf.cast(tf.shape(index)[2], "float32")

        def body(s, out):
            xb, yb = tf.gather(x, index[s]), tf.gather(y, index[s])
            trainable = [v.read_value() for v in self.trainable]
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                pred, state, extra = self._forward(trainable, [v.read_value() for v in self.non_trainable], xb,
                                                   training=True)
                loss = tf.reduce_mean(tf.cast(self._per_sample(self.loss_fn, yb, pred), "float32"), axis=1) + extra
                total = tf.reduce_sum(loss)  # branches are independent: a NaN in one reaches no other
            gradients = tape.gradient(total, trainable)
            update = running = tf.logical_and(active[s], self.alive)
            lr = tf.gather(self.lr_table, steps[s], batch_dims=1)
            momentum = None if self.momentum_table is None else tf.gather(self.momentum_table, steps[s], batch_dims=1)
            self.optimizer.apply(self.trainable, gradients, lr, self.iterations, update, momentum)
            for variable, value in zip(self.non_trainable, state):
                mask = tf.reshape(update, [-1] + [1] * (len(variable.shape) - 1))
                variable.assign(tf.where(mask, tf.cast(value, variable.dtype), variable))
            self.iterations.assign_add(tf.cast(update, "int32"))
            sums = [loss * rows] + [tf.reduce_sum(tf.cast(self._per_sample(fn, yb, pred), "float32"), axis=1)
                                    for fn in self.metric_fns]
            sums = tf.stack(sums + [tf.fill(tf.shape(loss), rows)])
            return s + 1, out.write(s, tf.where(running[None, :], sums, tf.zeros_like(sums)))

        out = tf.TensorArray("float32", size=tf.shape(index)[0])
        _, out = tf.while_loop(lambda s, _: s < tf.shape(index)[0], body, (tf.constant(0), out))
        return out.stack()

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate(self, x, y, index, weights):
        """Per-branch sums of loss and metrics over the rows `index` (B, rows) in inference mode."""
        import tensorflow as tf

        pred, _, extra = self._forward(self.trainable, self.non_trainable, tf.gather(x, index), training=False)
        yb = tf.gather(y, index)
        sums = [tf.reduce_sum(tf.cast(self._per_sample(self.loss_fn, yb, pred), "float32") * weights, axis=1)
                + extra * tf.reduce_sum(weights, axis=1)]
        sums += [tf.reduce_sum(tf.cast(self._per_sample(fn, yb, pred), "float32") * weights, axis=1)
                 for fn in self.metric_fns]
        return tf.stack(sums), tf.reduce_sum(weights, axis=1)

    # -- reading and writing branches ----------------------------------------------------------
    def branch_weights(self, b: int, order: list) -> list:
        """Branch `b`'s weights in the order of `order` (a list of the template's variables,
        e.g. `template.weights`, whose `get_weights()` order Keras uses)."""
        values = {id(v): s for v, s in zip(self.template.trainable_variables, self.trainable)}
        values.update({id(v): s for v, s in zip(self.template.non_trainable_variables, self.non_trainable)})
        return [np.array(values[id(v)][b].numpy()) for v in order]

    def state(self) -> dict:
        """Every variable of every branch (numpy): weights, non-trainable state (dropout seed states
        included), optimizer slots, step counters and which branches still train."""
        return {"trainable": [v.numpy() for v in self.trainable],
                "non_trainable": [v.numpy() for v in self.non_trainable],
                "slots": {name: [v.numpy() for v in slots] for name, slots in self.optimizer.slots.items()},
                "alive": self.alive.numpy(), "iterations": self.iterations.numpy()}

    def load_state(self, state: dict) -> None:
        """Put back what `state` returned (a checkpoint's)."""
        pairs = [(self.trainable, state["trainable"]), (self.non_trainable, state["non_trainable"]),
                 ([self.alive, self.iterations], [state["alive"], state["iterations"]])]
        pairs += [(slots, state["slots"][name]) for name, slots in self.optimizer.slots.items()]
        for variables, values in pairs:
            if len(variables) != len(values):
                raise RuntimeError("the checkpoint does not match the fused model")
            for variable, value in zip(variables, values):
                variable.assign(value)

    def snapshot(self) -> tuple:
        """Every branch's trainable and non-trainable values (numpy), to restore branches later."""
        return [v.numpy() for v in self.trainable], [v.numpy() for v in self.non_trainable]

    def restore_branches(self, branches: Sequence[int] | np.ndarray, saved: tuple) -> None:
        """Put back the saved values (`snapshot`'s) of these branches."""
        trainable, non_trainable = saved
        for variables, values in ((self.trainable, trainable), (self.non_trainable, non_trainable)):
            for variable, value in zip(variables, values):
                current = variable.numpy()
                current[branches] = value[branches]
                variable.assign(current)
