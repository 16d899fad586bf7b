"""Strategies: from a strategy's YAML entry to the LR schedule of each fold.

A strategy decides three things per (repeat, fold): the learning-rate schedule,
where it starts (`across_folds: reset` starts every fold at iteration 0;
`continue` starts fold j where fold j-1's schedule ended) and whether the
weights are carried over from the previous fold (`carry_weights`, leaky).
Each is asked of the strategy's config class (`kfold_clr.config.strategies`),
which builds the schedule; `register_schedule` adds a kind of one's own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional, Union

import keras

from kfold_clr.config.strategies import epochs_to_iterations  # noqa: F401 - kept importable from here
from kfold_clr.data.splits import steps_per_epoch
from kfold_clr.schedules import CyclicalLearningRate
from kfold_clr.schedules.planning import schedule_values

if TYPE_CHECKING:
    import numpy as np

    from kfold_clr.config import ExperimentConfig
    from kfold_clr.config.strategies import BaseStrategy
    from kfold_clr.data.splits import Split

    LearningRate = Union[float, keras.optimizers.schedules.LearningRateSchedule]  # what an optimizer follows


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
            (`kfold_clr.training.tuning`); empty for an untuned one.
        fit: int or None. For a grid fit of a tuned strategy, the index of its grid point
            (saved under `folds/NAME/tune/`, never as the fold's result); None otherwise.
    """

    strategy: str
    split: Split
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


def uses_range_test(strategy_cfg: BaseStrategy) -> Optional[str]:
    """'shared_range_test', 'per_fold_range_test' or None (`strategy_cfg.range_test_scope`)."""
    return strategy_cfg.range_test_scope


def plan_folds(name: str, strategy_cfg: BaseStrategy, splits: Iterable[Split], *, seed: int, epochs: int,
               batch_size: int) -> list[FoldPlan]:
    """The FoldPlans of one strategy, in (repeat, fold) order.

    With `across_folds: continue` the offset of a fold is the sum of the planned
    iterations of the folds before it (over repeats too), so each fold's plan is
    known without running the others.
    """
    plans, offset, previous = [], 0, None
    for split in splits:
        steps = steps_per_epoch(len(split.train), batch_size)
        plans.append(FoldPlan(name, split, fold_seed(seed, split.repeat, split.fold), steps, epochs,
                              initial_step=offset if strategy_cfg.continues_across_folds else 0,
                              carry_from=previous if strategy_cfg.is_chain else None))
        offset += steps * epochs
        previous = split.key
    return plans


# ----------------------------------------------------------------------------- schedules
def build_schedule(strategy_cfg: BaseStrategy, plan: FoldPlan, *, bounds: tuple[float, float] | None = None,
                   warn: bool = True) -> tuple[LearningRate, dict]:
    """The learning rate (float or schedule) for one fold, and the bounds it uses.

    Args:
        strategy_cfg: one of the strategy sections of the config (`BaseStrategy`).
        plan: FoldPlan.
        bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
        warn: bool. Issue the schedule's plan warnings (CyclePlanWarning for CLR cycles that
            do not fit the training).

    Returns:
        (learning_rate, info) where info has base_lr and max_lr as used.
    """
    return strategy_cfg.schedule_for(plan, bounds=bounds, warn=warn)


def register_schedule(cls: type) -> type:
    """Add a schedule kind of your own: its YAML section, its schedule and its behaviour.

    `cls` subclasses `kfold_clr.BaseStrategy`, declares `schedule: Literal["name"]` and
    its keys as pydantic fields, and defines `build(self, plan, bounds)` returning
    `(learning_rate, {"base_lr": ..., "max_lr": ...})`. Once registered, configs with
    `schedule: name` validate strictly (and `kfold-clr schema` lists it), and its folds
    train fold by fold or fused like the built-in kinds. Usable as a decorator.

    Example:

    ```python
    from typing import Literal
    import kfold_clr

    @kfold_clr.register_schedule
    class Halving(kfold_clr.BaseStrategy):
        schedule: Literal["halving"]
        lr: float

        def build(self, plan, bounds=None):
            import keras
            return keras.optimizers.schedules.ExponentialDecay(
                self.lr, decay_steps=plan.steps_per_epoch, decay_rate=0.5), {"base_lr": None, "max_lr": self.lr}
    ```

    Raises:
        TypeError: `cls` is no `BaseStrategy` subclass with its own `build`.
        ValueError: its `schedule` is not one literal name, or another class has the name.
    """
    from kfold_clr.config.schema import ExperimentConfig
    from kfold_clr.config.strategies import STRATEGY_CLASSES, add_strategy_class, remove_strategy_class

    known = cls in STRATEGY_CLASSES.values()
    add_strategy_class(cls)
    try:
        ExperimentConfig.model_rebuild(force=True)  # the `strategies:` union now holds `cls`
    except Exception:
        if not known:  # a class pydantic cannot build leaves the config as it was
            remove_strategy_class(cls.model_fields["schedule"].annotation.__args__[0])
            ExperimentConfig.model_rebuild(force=True)
        raise
    return cls


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
        """Whether something acts between batches: snapshot capture (cyclical momentum is computed
        in the train step from the update count, so it does not)."""
        return self.snapshot_keep is not None


def batch_seed(plan: FoldPlan) -> int:
    """The seed of a fold's data order and dropout: from the fold alone, so strategies are paired."""
    return plan.seed + 1


def batch_order(seed: int, n_train: int, *, epochs: int) -> "np.ndarray":
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


def fold_spec(config: ExperimentConfig, plan: FoldPlan, *, bounds: tuple[float, float] | None = None) -> FoldSpec:
    """Resolve a FoldPlan of `config` into its FoldSpec.

    Args:
        config: ExperimentConfig, with the task's loss and metrics filled in.
        plan: FoldPlan.
        bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
    """
    strategy_cfg = config.strategies[plan.strategy]
    if plan.settings:
        strategy_cfg = strategy_cfg.at(dict(plan.settings))
    learning_rate, info = strategy_cfg.schedule_for(plan, bounds=bounds, warn=False)
    lrs = learning_rates(learning_rate, max(plan.iterations, 1))
    lrs.setflags(write=False)
    snapshots = strategy_cfg.snapshot_settings
    return FoldSpec(
        plan=plan, learning_rate=learning_rate, lrs=lrs, base_lr=info["base_lr"], max_lr=info["max_lr"],
        snapshot_at=tuple(snapshot_updates(learning_rate, plan.iterations)) if snapshots is not None else (),
        snapshot_keep=snapshots.keep if snapshots is not None else None,
        save_snapshots=bool(snapshots is not None and snapshots.save_weights),
        momentum=strategy_cfg.momentum_cycle, batch_seed=batch_seed(plan),
        loss=config.training.loss, metrics=tuple(config.training.metrics or ()),
        optimizer=config.training.optimizer)


def momentum_callback(spec: FoldSpec) -> Optional[keras.callbacks.Callback]:
    """The CyclicalMomentum callback a fold's specification asks for, or None."""
    if spec.momentum is None:
        return None
    from kfold_clr.schedules import CyclicalMomentum

    return CyclicalMomentum(base_momentum=spec.momentum.base_momentum,
                            max_momentum=spec.momentum.max_momentum, schedule=spec.learning_rate)


def learning_rates(learning_rate: LearningRate, iterations: int) -> np.ndarray:
    """The LR applied at each of `iterations` updates (numpy float array).

    The schedules are pure functions of the optimizer's step, so this is exactly
    what the optimizer used.
    """
    import numpy as np

    return schedule_values(learning_rate, np.arange(iterations))


def full_cycle_updates(learning_rate: LearningRate) -> Optional[int]:
    """Updates in one whole cycle of `learning_rate` (the first restart period for cosine
    restarts); None for schedules without cycles."""
    if isinstance(learning_rate, CyclicalLearningRate):
        return int(learning_rate.cycle_length)
    if isinstance(learning_rate, keras.optimizers.schedules.CosineDecayRestarts):
        return math.ceil(float(learning_rate.get_config()["first_decay_steps"]) - 1e-9)
    return None


def snapshot_updates(learning_rate: LearningRate, iterations: int) -> list[int]:
    """The cycle ends (`cycle_end_updates`) at which a snapshot counts: after at least one
    full cycle of training in the fold itself.

    A fold that continues mid-cycle (`across_folds: continue`) reaches its first
    cycle end a few updates after fresh initialisation; that barely trained model
    is no member of an ensemble.
    """
    ends = cycle_end_updates(learning_rate, iterations)
    full = full_cycle_updates(learning_rate)
    return [k for k in ends if full is None or k >= full]


def cycle_end_updates(learning_rate: LearningRate, iterations: int) -> list[int]:
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
