"""The optimizers `training.optimizer` may name, in one table: the Keras class each builds, the
hyper-parameters it takes, its slots per weight, which hyper-parameter cyclical momentum drives,
and the update rule the fused path applies per branch (written out as Keras computes it, so a
fused branch follows the trajectory of a single model).

Keras and TensorFlow are imported on first use: the config schema reads this table too."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import keras

    from kfold_clr.config.training import OptimizerConfig

_EPSILON = 1e-7  # Keras's default epsilon of Adam and RMSprop


def _sgd_update(tf, cfg, weights, gradient, rate, slots, mask, momentum, iterations):
    """SGD, with momentum and Nesterov when configured; `momentum` is cyclical momentum or None."""
    if not cfg.momentum:
        return weights - gradient * rate
    m = slots["m"]
    beta = tf.constant(cfg.momentum, "float32") if momentum is None else momentum
    new_m = m * beta - gradient * rate
    step = new_m * beta - gradient * rate if cfg.nesterov else new_m
    m.assign(tf.where(mask, new_m, m))
    return weights + step


def _adam_update(tf, cfg, weights, gradient, rate, slots, mask, momentum, iterations):
    """Adam; `momentum` is a cyclical beta_1 or None."""
    m, v = slots["m"], slots["v"]
    t = tf.cast(iterations + 1, "float32")
    beta_1 = tf.constant(cfg.beta_1, "float32") if momentum is None else momentum
    beta_2 = tf.constant(cfg.beta_2, "float32")
    alpha = rate * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
    new_m = m + (gradient - m) * (1 - beta_1)
    new_v = v + (tf.square(gradient) - v) * (1 - cfg.beta_2)
    m.assign(tf.where(mask, new_m, m))
    v.assign(tf.where(mask, new_v, v))
    return weights - (new_m * alpha) / (tf.sqrt(new_v) + _EPSILON)


def _rmsprop_update(tf, cfg, weights, gradient, rate, slots, mask, momentum, iterations):
    """RMSprop without momentum (as `make_optimizer` builds it)."""
    v = slots["v"]
    new_v = cfg.rho * v + (1 - cfg.rho) * tf.square(gradient)
    v.assign(tf.where(mask, new_v, v))
    return weights - (rate * gradient) / tf.sqrt(new_v + _EPSILON)


@dataclass(frozen=True)
class OptimizerFacts:
    """What kfold_clr knows of one optimizer.

    Attributes:
        keras_class: name in `keras.optimizers`.
        hyper_parameters: `training.optimizer` keys passed to the constructor as they are named.
        fixed: constructor arguments kfold_clr sets (not configurable).
        slots: callable(cfg) -> slot names, one variable per weight each (as Keras builds them).
        momentum_key: the hyper-parameter cyclical momentum drives, or None.
        fused_update: the per-branch update `(tf, cfg, weights, gradient, rate, slots, mask,
            momentum, iterations) -> new weights` (slots assigned in place).
    """

    keras_class: str
    hyper_parameters: tuple
    slots: Callable[[Any], tuple]
    momentum_key: Optional[str]
    fused_update: Callable
    fixed: dict = field(default_factory=dict)


OPTIMIZERS = {
    "sgd": OptimizerFacts("SGD", ("momentum", "nesterov"), lambda cfg: ("m",) if cfg.momentum else (),
                          "momentum", _sgd_update),
    "adam": OptimizerFacts("Adam", ("beta_1", "beta_2"), lambda cfg: ("m", "v"), "beta_1", _adam_update),
    "rmsprop": OptimizerFacts("RMSprop", ("rho",), lambda cfg: ("v",), None, _rmsprop_update,
                              fixed={"momentum": 0.0}),
}
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def slot_names(cfg: "OptimizerConfig") -> tuple:
    """The optimizer's variables per weight for this `training.optimizer` (Keras's SGD keeps no
    momentum slot when momentum is 0)."""
    return OPTIMIZERS[cfg.name].slots(cfg)


def slots_per_weight(cfg: "OptimizerConfig") -> int:
    """How many `slot_names` the optimizer keeps per weight."""
    return len(slot_names(cfg))


def momentum_key(cfg: "OptimizerConfig") -> Optional[str]:
    """The hyper-parameter cyclical momentum drives for this config (None: nothing to cycle)."""
    key = OPTIMIZERS[cfg.name].momentum_key
    return key if key is not None and getattr(cfg, key) else None


def make_optimizer(cfg: "OptimizerConfig", learning_rate: "float | keras.optimizers.schedules.LearningRateSchedule"
                   ) -> "keras.optimizers.Optimizer":
    """The Keras optimizer of `training.optimizer` driven by `learning_rate` (float or schedule)."""
    import keras

    facts = OPTIMIZERS[cfg.name]
    arguments = {"learning_rate": learning_rate, **{key: getattr(cfg, key) for key in facts.hyper_parameters},
                 **facts.fixed}
    for key in ("weight_decay", "clipnorm"):
        if getattr(cfg, key) is not None:
            arguments[key] = getattr(cfg, key)
    return getattr(keras.optimizers, facts.keras_class)(**arguments)
