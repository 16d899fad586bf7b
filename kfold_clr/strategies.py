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
        settings: tuple of (key, value). A tuned strategy's grid point for this fold
            (`kfold_clr.tuning`); empty for an untuned one.
        fit: int or None. For a grid fit of a tuned strategy, the index of its grid point
            (saved under `folds/NAME/tune/`, never as the fold's result); None otherwise.
    """

    strategy: str
    split: object
    seed: int
    steps_per_epoch: int
    epochs: int
    initial_step: int = 0
    carry_from: Optional[str] = None
    settings: tuple = ()
    fit: Optional[int] = None

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


# ----------------------------------------------------------------------------- schedules
def _constant(cfg, plan, bounds):
    return float(cfg.lr), {"base_lr": cfg.lr, "max_lr": cfg.lr}


def _step(cfg, plan, bounds):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg.lr, decay_steps=cfg.every_epochs * plan.steps_per_epoch, decay_rate=cfg.factor, staircase=True)
    return schedule, {"base_lr": None, "max_lr": cfg.lr}


def _exponential(cfg, plan, bounds):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg.lr, decay_steps=plan.steps_per_epoch, decay_rate=cfg.decay_rate)
    return schedule, {"base_lr": None, "max_lr": cfg.lr}


def _cosine(cfg, plan, bounds):
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=plan.iterations, alpha=cfg.alpha)
    return schedule, {"base_lr": cfg.lr * cfg.alpha, "max_lr": cfg.lr}


def _cosine_restarts(cfg, plan, bounds):
    schedule = keras.optimizers.schedules.CosineDecayRestarts(
        cfg.lr, first_decay_steps=cfg.cycle_epochs * plan.steps_per_epoch,
        t_mul=cfg.t_mul, m_mul=cfg.m_mul, alpha=cfg.alpha)
    return schedule, {"base_lr": cfg.lr * cfg.alpha, "max_lr": cfg.lr}


def _one_cycle(cfg, plan, bounds):
    max_lr = bounds[1] if bounds is not None else cfg.max_lr
    try:
        schedule = OneCycle(max_lr=max_lr, total_steps=plan.iterations, pct_start=cfg.pct_start,
                            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, anneal=cfg.anneal)
    except ValueError as error:
        raise ConfigError(f"strategies.{plan.strategy}: {error} (a fold has {plan.iterations} updates: "
                          "train longer or use a smaller batch)") from None
    return schedule, {"base_lr": max_lr / cfg.div_factor, "max_lr": max_lr}


def _clr_steps(cfg, plan):
    """(step_size, step_size_down or None) in updates of this fold."""
    spe = plan.steps_per_epoch
    step_size = epochs_to_iterations(cfg.step_size, cfg.step_size_epochs, spe)
    step_down = None
    if cfg.step_size_down is not None or cfg.step_size_down_epochs is not None:
        step_down = epochs_to_iterations(cfg.step_size_down, cfg.step_size_down_epochs, spe)
    return step_size, step_down


def _clr(cfg, plan, bounds):
    base_lr, max_lr = bounds if bounds is not None else (cfg.base_lr, cfg.max_lr)
    step_size, step_down = _clr_steps(cfg, plan)
    try:  # a bad scale_fn path was reported by `prepare`; the schedule resolves it
        schedule = CyclicalLearningRate(
            base_lr=float(base_lr), max_lr=float(max_lr), step_size=step_size, step_size_down=step_down,
            mode=cfg.policy, gamma=cfg.gamma, scale_fn=cfg.scale_fn, scale_mode=cfg.scale_mode,
            initial_step=plan.initial_step)
    except ValueError as error:
        raise ConfigError(f"strategies.{plan.strategy}: {error}") from None
    return schedule, {"base_lr": float(base_lr), "max_lr": float(max_lr)}


SCHEDULE_BUILDERS = {
    "constant": _constant,
    "step": _step,
    "exponential": _exponential,
    "cosine": _cosine,
    "cosine_restarts": _cosine_restarts,
    "one_cycle": _one_cycle,
    "clr": _clr,
}
"""`schedule:` name -> builder `(strategy_cfg, plan, bounds) -> (learning_rate, {base_lr, max_lr})`."""


def build_schedule(strategy_cfg, plan, *, bounds=None, warn=True):
    """The learning rate (float or schedule) for one fold, and the bounds it uses.

    Args:
        strategy_cfg: one of the strategy sections of the config.
        plan: FoldPlan.
        bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
        warn: bool. Issue CyclePlanWarning for CLR cycles that do not fit the training.

    Returns:
        (learning_rate, info) where info has base_lr and max_lr as used.
    """
    kind = strategy_cfg.schedule
    builder = SCHEDULE_BUILDERS.get(kind)
    if builder is None:
        raise ConfigError(f"strategies.{plan.strategy}.schedule: {kind!r} is not one of "
                          + ", ".join(SCHEDULE_BUILDERS))
    learning_rate, info = builder(strategy_cfg, plan, bounds)
    if warn and kind == "clr":
        step_size, step_down = _clr_steps(strategy_cfg, plan)
        check_cycle_plan(step_size=step_size, step_size_down=step_down, total_iterations=plan.iterations)
    return learning_rate, info


# ----------------------------------------------------------------------------- fold specifications
@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """Everything one (strategy, fold) trains under, decided once; both trainers consume it.

    Attributes:
        plan: FoldPlan. Which fold, its seed, length and schedule offset.
        learning_rate: float or Keras schedule. What the optimizer follows.
        lrs: numpy array (read-only). The LR of every planned update, exactly as the schedule gives it.
        base_lr: float or None. Lower bound used (folds.csv).
        max_lr: float or None. Upper bound used (folds.csv).
        snapshot_at: tuple of int. Update counts after which a snapshot counts (`snapshot_updates`).
        snapshot_keep: int or None. Snapshots kept for the ensemble; None without snapshots.
        save_snapshots: bool. Write the snapshot weights to disk.
        momentum: CyclicalMomentumConfig or None. Cyclical momentum settings.
        batch_seed: int. Seed of the data order and dropout: the same for every strategy on the fold.
        loss: str. Keras loss name.
        metrics: tuple of str. Keras metric names.
        optimizer: OptimizerConfig. The optimizer's settings.
    """

    plan: FoldPlan
    learning_rate: object
    lrs: object
    base_lr: Optional[float]
    max_lr: Optional[float]
    snapshot_at: tuple
    snapshot_keep: Optional[int]
    save_snapshots: bool
    momentum: object
    batch_seed: int
    loss: str
    metrics: tuple
    optimizer: object

    @property
    def strategy(self) -> str:
        return self.plan.strategy

    @property
    def key(self) -> str:
        return self.plan.key

    @property
    def lr_info(self) -> dict:
        return {"base_lr": self.base_lr, "max_lr": self.max_lr}

    @property
    def per_batch_callbacks(self) -> bool:
        """Whether something acts between batches (snapshot capture, cyclical momentum)."""
        return self.snapshot_keep is not None or self.momentum is not None


def batch_seed(plan) -> int:
    """The seed of a fold's data order and dropout: from the fold alone, so strategies are paired."""
    return plan.seed + 1


def batch_order(seed, n_train, *, epochs):
    """The order in which a fold visits its training rows, one permutation per epoch (both trainers).

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
    import numpy as np

    rng = np.random.default_rng(int(seed))
    return np.stack([rng.permutation(int(n_train)) for _ in range(int(epochs))])


def fold_spec(config, plan, *, bounds=None) -> FoldSpec:
    """Resolve a FoldPlan of `config` into its FoldSpec.

    Args:
        config: ExperimentConfig, with the task's loss and metrics filled in.
        plan: FoldPlan.
        bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
    """
    strategy_cfg = config.strategies[plan.strategy]
    if plan.settings:
        strategy_cfg = strategy_cfg.at(dict(plan.settings))
    learning_rate, info = build_schedule(strategy_cfg, plan, bounds=bounds, warn=False)
    lrs = learning_rates(learning_rate, max(plan.iterations, 1))
    lrs.setflags(write=False)
    snapshots = getattr(strategy_cfg, "snapshots", None)
    return FoldSpec(
        plan=plan, learning_rate=learning_rate, lrs=lrs, base_lr=info["base_lr"], max_lr=info["max_lr"],
        snapshot_at=tuple(snapshot_updates(learning_rate, plan.iterations)) if snapshots is not None else (),
        snapshot_keep=snapshots.keep if snapshots is not None else None,
        save_snapshots=bool(snapshots is not None and snapshots.save_weights),
        momentum=getattr(strategy_cfg, "cycle_momentum", None), batch_seed=batch_seed(plan),
        loss=config.training.loss, metrics=tuple(config.training.metrics or ()),
        optimizer=config.training.optimizer)


def momentum_callback(spec):
    """The CyclicalMomentum callback a fold's specification asks for, or None."""
    if spec.momentum is None:
        return None
    from kfold_clr.schedules import CyclicalMomentum

    return CyclicalMomentum(base_momentum=spec.momentum.base_momentum,
                            max_momentum=spec.momentum.max_momentum, schedule=spec.learning_rate)


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
