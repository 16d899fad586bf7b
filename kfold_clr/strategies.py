"""Strategies: from a strategy's YAML entry to the LR schedule of each fold.

A strategy decides three things per (repeat, fold): the learning-rate schedule,
where it starts (`across_folds: reset` starts every fold at iteration 0;
`continue` starts fold j where fold j-1's schedule ended) and whether the
weights are carried over from the previous fold (`carry_weights`, leaky).
"""

import dataclasses
import math
from typing import Optional

import keras

from kfold_clr.errors import ConfigError
from kfold_clr.schedules import CyclicalLearningRate, OneCycle, check_cycle_plan
from kfold_clr.schedules.planning import schedule_values


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """Everything that fixes one strategy's training on one (repeat, fold).

    Attributes:
        strategy: str. The strategy's name.
        split: Split. The fold's indices.
        seed: int. Seed of the initial weights and data order (same for every strategy).
        steps_per_epoch: int. Optimizer updates per epoch.
        epochs: int. Planned epochs.
        initial_step: int. Schedule offset (non-zero for `continue`).
        carry_from: str or None. Key of the fold whose final weights start this one.
    """

    strategy: str
    split: object
    seed: int
    steps_per_epoch: int
    epochs: int
    initial_step: int = 0
    carry_from: Optional[str] = None

    @property
    def key(self) -> str:
        return self.split.key

    @property
    def iterations(self) -> int:
        return self.steps_per_epoch * self.epochs


def fold_seed(seed: int, repeat: int, fold: int) -> int:
    """The seed of (repeat, fold): independent of the strategy, so strategies are paired."""
    import numpy as np

    return int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0] % (2**31 - 1))


def uses_range_test(strategy_cfg) -> Optional[str]:
    """'shared_range_test', 'per_fold_range_test' or None."""
    bounds = getattr(strategy_cfg, "bounds", "fixed")
    return None if bounds == "fixed" else bounds


def is_continue(strategy_cfg) -> bool:
    return getattr(strategy_cfg, "across_folds", "reset") == "continue"


def plan_folds(name, strategy_cfg, splits, *, seed, epochs, batch_size) -> list:
    """The FoldPlans of one strategy, in (repeat, fold) order.

    With `across_folds: continue` the offset of a fold is the sum of the planned
    iterations of the folds before it (over repeats too), so each fold's plan is
    known without running the others.
    """
    plans, offset, previous = [], 0, None
    for split in splits:
        steps = math.ceil(len(split.train) / batch_size)
        carry = previous if getattr(strategy_cfg, "carry_weights", False) else None
        plans.append(FoldPlan(name, split, fold_seed(seed, split.repeat, split.fold), steps, epochs,
                              initial_step=offset if is_continue(strategy_cfg) else 0,
                              carry_from=carry))
        offset += steps * epochs
        previous = split.key
    return plans


def epochs_to_iterations(iterations, epochs, steps_per_epoch) -> int:
    """`iterations` if given, else `epochs` (may be fractional) in updates, rounded half up
    as :func:`kfold_clr.schedules.step_size_from_epochs` rounds; at least 1."""
    if iterations is not None:
        return int(iterations)
    return max(1, math.floor(epochs * steps_per_epoch + 0.5))


def build_schedule(strategy_cfg, plan, *, bounds=None, warn=True):
    """The learning rate (float or schedule) for one fold, and the bounds it uses.

    Args:
        strategy_cfg: one of the strategy sections of the config.
        plan: FoldPlan.
        bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
        warn: bool. Issue CyclePlanWarning for cycles that do not fit the training.

    Returns:
        (learning_rate, info) where info has base_lr and max_lr as used.
    """
    kind, spe, total = strategy_cfg.schedule, plan.steps_per_epoch, plan.iterations
    if kind == "constant":
        return float(strategy_cfg.lr), {"base_lr": strategy_cfg.lr, "max_lr": strategy_cfg.lr}
    if kind == "step":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            strategy_cfg.lr, decay_steps=strategy_cfg.every_epochs * spe,
            decay_rate=strategy_cfg.factor, staircase=True)
        return schedule, {"base_lr": None, "max_lr": strategy_cfg.lr}
    if kind == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            strategy_cfg.lr, decay_steps=spe, decay_rate=strategy_cfg.decay_rate)
        return schedule, {"base_lr": None, "max_lr": strategy_cfg.lr}
    if kind == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(
            strategy_cfg.lr, decay_steps=total, alpha=strategy_cfg.alpha)
        return schedule, {"base_lr": strategy_cfg.lr * strategy_cfg.alpha, "max_lr": strategy_cfg.lr}
    if kind == "cosine_restarts":
        schedule = keras.optimizers.schedules.CosineDecayRestarts(
            strategy_cfg.lr, first_decay_steps=strategy_cfg.cycle_epochs * spe,
            t_mul=strategy_cfg.t_mul, m_mul=strategy_cfg.m_mul, alpha=strategy_cfg.alpha)
        return schedule, {"base_lr": strategy_cfg.lr * strategy_cfg.alpha, "max_lr": strategy_cfg.lr}
    if kind == "one_cycle":
        max_lr = bounds[1] if bounds is not None else strategy_cfg.max_lr
        try:
            schedule = OneCycle(max_lr=max_lr, total_steps=total, pct_start=strategy_cfg.pct_start,
                                div_factor=strategy_cfg.div_factor,
                                final_div_factor=strategy_cfg.final_div_factor, anneal=strategy_cfg.anneal)
        except ValueError as error:
            raise ConfigError(f"strategies.{plan.strategy}: {error} (a fold has {total} updates: "
                              "train longer or use a smaller batch)") from None
        return schedule, {"base_lr": max_lr / strategy_cfg.div_factor, "max_lr": max_lr}
    if kind == "clr":
        base_lr, max_lr = bounds if bounds is not None else (strategy_cfg.base_lr, strategy_cfg.max_lr)
        step_size = epochs_to_iterations(strategy_cfg.step_size, strategy_cfg.step_size_epochs, spe)
        step_down = None
        if strategy_cfg.step_size_down is not None or strategy_cfg.step_size_down_epochs is not None:
            step_down = epochs_to_iterations(strategy_cfg.step_size_down, strategy_cfg.step_size_down_epochs, spe)
        try:  # a bad scale_fn path was reported by `prepare`; the schedule resolves it
            schedule = CyclicalLearningRate(
                base_lr=float(base_lr), max_lr=float(max_lr), step_size=step_size,
                step_size_down=step_down, mode=strategy_cfg.policy,
                gamma=strategy_cfg.gamma, scale_fn=strategy_cfg.scale_fn, scale_mode=strategy_cfg.scale_mode,
                initial_step=plan.initial_step)
        except ValueError as error:
            raise ConfigError(f"strategies.{plan.strategy}: {error}") from None
        if warn:
            check_cycle_plan(step_size=step_size, step_size_down=step_down, total_iterations=total)
        return schedule, {"base_lr": float(base_lr), "max_lr": float(max_lr)}
    raise ConfigError(f"strategies.{plan.strategy}.schedule: {kind!r} is not supported")


def momentum_callback(strategy_cfg, schedule):
    """The CyclicalMomentum callback a strategy asks for, or None."""
    settings = getattr(strategy_cfg, "cycle_momentum", None)
    if settings is None:
        return None
    from kfold_clr.schedules import CyclicalMomentum

    return CyclicalMomentum(base_momentum=settings.base_momentum,
                            max_momentum=settings.max_momentum, schedule=schedule)


def learning_rates(learning_rate, iterations):
    """The LR applied at each of `iterations` updates (numpy float array).

    The schedules are pure functions of the optimizer's step, so this is exactly
    what the optimizer used.
    """
    import numpy as np

    return schedule_values(learning_rate, np.arange(iterations))


def full_cycle_updates(learning_rate):
    """Updates in one whole cycle of `learning_rate` (the first restart period for cosine
    restarts); None for schedules without cycles."""
    if isinstance(learning_rate, CyclicalLearningRate):
        return int(learning_rate.cycle_length)
    if isinstance(learning_rate, keras.optimizers.schedules.CosineDecayRestarts):
        return math.ceil(float(learning_rate.get_config()["first_decay_steps"]) - 1e-9)
    return None


def snapshot_updates(learning_rate, iterations):
    """The cycle ends (`cycle_end_updates`) at which a snapshot counts: after at least one
    full cycle of training in the fold itself.

    A fold that continues mid-cycle (`across_folds: continue`) reaches its first
    cycle end a few updates after fresh initialisation; that barely trained model
    is no member of an ensemble.
    """
    ends = cycle_end_updates(learning_rate, iterations)
    full = full_cycle_updates(learning_rate)
    return [k for k in ends if full is None or k >= full]


def cycle_end_updates(learning_rate, iterations):
    """Update counts k (1-based) after which a cycle of `learning_rate` has just ended.

    After update k the optimizer's step is k; the cycle's last update used the
    lowest LR, so the weights then sit at the cycle's low-LR end (snapshot
    ensembles capture them there). Empty for schedules without cycles.
    """
    if isinstance(learning_rate, CyclicalLearningRate):
        return [int(k) for k in learning_rate.cycle_end_updates(iterations)]
    if isinstance(learning_rate, keras.optimizers.schedules.CosineDecayRestarts):
        settings = learning_rate.get_config()
        ends, length, boundary = [], float(settings["first_decay_steps"]), 0.0
        while boundary + length <= iterations + 1e-9:
            boundary += length
            # The cycle's last update is the last step below the boundary; after it the
            # optimizer's count is ceil(boundary) (a boundary may fall between steps).
            ends.append(math.ceil(boundary - 1e-9))
            length *= settings["t_mul"]
        return ends
    return []
