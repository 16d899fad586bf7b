"""The `strategies:` entries: one strict section per schedule kind, told apart by `schedule`.

Each section class owns its kind's behaviour: it builds the fold's LR schedule
(`build`) and says what the rest of the run must know about it (a chain of
folds, acts between batches, range-test scope, tunable keys, code to
fingerprint). Callers ask these methods and properties, never the raw keys.
A new kind is one more class, added with `kfold_clr.register_schedule`.
"""

import math
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from kfold_clr.config.base import IMPORT_PATH, MAX_EPOCHS, MAX_ITERATIONS, MAX_LR, _KeyError
from kfold_clr.config.strategy_base import (  # noqa: F401 - re-exported: the config's names for them
    MAX_GRID_POINTS,
    MomentumCycleConfig,
    PositiveFloat,
    SnapshotConfig,
    TuneConfig,
    _Strategy,
)
from kfold_clr.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

    from kfold_clr.training.fold_plans import FoldPlan

LearningRate = Annotated[float, Field(gt=0.0, le=MAX_LR)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Iterations = Annotated[int, Field(ge=1, le=MAX_ITERATIONS)]


def _keras_schedules() -> "ModuleType":
    """`keras.optimizers.schedules`, imported on first use (loading a config needs no Keras)."""
    import keras

    return keras.optimizers.schedules


class ConstantStrategy(_Strategy):
    schedule: Literal["constant"]
    lr: LearningRate

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        return float(self.lr), {"base_lr": self.lr, "max_lr": self.lr}


class StepStrategy(_Strategy):
    """Manual annealing: the LR is multiplied by `factor` every `every_epochs` epochs."""

    schedule: Literal["step"]
    lr: LearningRate
    factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    every_epochs: Epochs = 10

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        schedule = _keras_schedules().ExponentialDecay(
            self.lr, decay_steps=self.every_epochs * plan.steps_per_epoch, decay_rate=self.factor, staircase=True)
        return schedule, {"base_lr": None, "max_lr": self.lr}


class ExponentialStrategy(_Strategy):
    """The LR is multiplied by `decay_rate` per epoch, smoothly."""

    schedule: Literal["exponential"]
    lr: LearningRate
    decay_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        schedule = _keras_schedules().ExponentialDecay(
            self.lr, decay_steps=plan.steps_per_epoch, decay_rate=self.decay_rate)
        return schedule, {"base_lr": None, "max_lr": self.lr}


class CosineStrategy(_Strategy):
    schedule: Literal["cosine"]
    lr: LearningRate
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        schedule = _keras_schedules().CosineDecay(self.lr, decay_steps=plan.iterations, alpha=self.alpha)
        return schedule, {"base_lr": self.lr * self.alpha, "max_lr": self.lr}


class CosineRestartsStrategy(_Strategy):
    """Cyclic cosine annealing with warm restarts (the schedule of snapshot ensembles)."""

    schedule: Literal["cosine_restarts"]
    lr: LearningRate
    cycle_epochs: Epochs = 5
    t_mul: Annotated[float, Field(ge=1.0, le=100.0)] = 1.0
    m_mul: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    snapshots: Optional[SnapshotConfig] = None

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        schedule = _keras_schedules().CosineDecayRestarts(
            self.lr, first_decay_steps=self.cycle_epochs * plan.steps_per_epoch,
            t_mul=self.t_mul, m_mul=self.m_mul, alpha=self.alpha)
        return schedule, {"base_lr": self.lr * self.alpha, "max_lr": self.lr}

    @property
    def snapshot_settings(self) -> Optional[SnapshotConfig]:
        return self.snapshots


def epochs_to_iterations(iterations: Optional[int], epochs: Optional[float], steps_per_epoch: int) -> int:
    """`iterations` if given, else `epochs` (may be fractional) in updates, rounded half up
    as :func:`kfold_clr.schedules.step_size_from_epochs` rounds; at least 1."""
    if iterations is not None:
        return int(iterations)
    return max(1, math.floor(epochs * steps_per_epoch + 0.5))


class _RangeTestedCycle:
    """What CLR and one-cycle share: bounds from a range test (or fixed) and cyclical momentum."""

    @property
    def range_test_scope(self) -> Optional[str]:
        return None if self.bounds == "fixed" else self.bounds

    @property
    def momentum_cycle(self) -> Optional[MomentumCycleConfig]:
        return self.cycle_momentum


class ClrStrategy(_RangeTestedCycle, _Strategy):
    """Cyclical learning rate (Smith 2017)."""

    schedule: Literal["clr"]
    policy: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    bounds: Literal["fixed", "shared_range_test", "per_fold_range_test"] = "fixed"
    base_lr: Optional[LearningRate] = None
    max_lr: Optional[LearningRate] = None
    step_size: Optional[Iterations] = None
    step_size_epochs: Optional[Annotated[float, Field(gt=0.0, le=MAX_EPOCHS)]] = None
    step_size_down: Optional[Iterations] = None
    step_size_down_epochs: Optional[Annotated[float, Field(gt=0.0, le=MAX_EPOCHS)]] = None
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    scale_fn: Optional[str] = None
    scale_mode: Literal["cycle", "iterations"] = "cycle"
    across_folds: Literal["reset", "continue"] = "reset"
    carry_weights: bool = False
    cycle_momentum: Optional[MomentumCycleConfig] = None
    snapshots: Optional[SnapshotConfig] = None

    @model_validator(mode="after")
    def _check(self):
        if self.bounds == "fixed":
            if self.base_lr is None:
                raise _KeyError("base_lr", None, "a positive number (required when bounds is 'fixed')")
            if self.max_lr is None:
                raise _KeyError("max_lr", None, "a positive number (required when bounds is 'fixed')")
            if self.base_lr >= self.max_lr:
                raise _KeyError("max_lr", self.max_lr, f"greater than base_lr ({self.base_lr})")
        else:
            for key in ("base_lr", "max_lr"):
                if getattr(self, key) is not None:
                    raise _KeyError(key, getattr(self, key),
                                    f"omitted when bounds is {self.bounds!r} (the range test sets it)")
        if (self.step_size is None) == (self.step_size_epochs is None):
            raise _KeyError("step_size_epochs", self.step_size_epochs,
                            "exactly one of step_size (iterations) or step_size_epochs")
        if self.step_size_down is not None and self.step_size_down_epochs is not None:
            raise _KeyError("step_size_down_epochs", self.step_size_down_epochs,
                            "omitted when step_size_down is given (one or the other)")
        if self.policy == "exp_range" and self.gamma >= 1.0:
            raise _KeyError("gamma", self.gamma, "a number in (0, 1) for policy 'exp_range'")
        if self.scale_fn is not None and not IMPORT_PATH.match(self.scale_fn):
            raise _KeyError("scale_fn", self.scale_fn, "an import path like 'package.module:function'")
        if self.carry_weights and self.across_folds != "continue":
            raise _KeyError("carry_weights", True, "only with across_folds: continue")
        return self

    def clr_steps(self, plan: "FoldPlan") -> tuple[int, Optional[int]]:
        """(step_size, step_size_down or None) in updates of this fold."""
        spe = plan.steps_per_epoch
        step_size = epochs_to_iterations(self.step_size, self.step_size_epochs, spe)
        step_down = None
        if self.step_size_down is not None or self.step_size_down_epochs is not None:
            step_down = epochs_to_iterations(self.step_size_down, self.step_size_down_epochs, spe)
        return step_size, step_down

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        from kfold_clr.schedules import CyclicalLearningRate

        base_lr, max_lr = bounds if bounds is not None else (self.base_lr, self.max_lr)
        step_size, step_down = self.clr_steps(plan)
        try:  # a bad scale_fn path was reported by `prepare`; the schedule resolves it
            schedule = CyclicalLearningRate(
                base_lr=float(base_lr), max_lr=float(max_lr), step_size=step_size, step_size_down=step_down,
                mode=self.policy, gamma=self.gamma, scale_fn=self.scale_fn, scale_mode=self.scale_mode,
                initial_step=plan.initial_step)
        except ValueError as error:
            raise ConfigError(f"strategies.{plan.strategy}: {error}") from None
        return schedule, {"base_lr": float(base_lr), "max_lr": float(max_lr)}

    def check_plan(self, plan: "FoldPlan") -> None:
        """CyclePlanWarning for cycles that do not fit the fold's training."""
        from kfold_clr.schedules import check_cycle_plan

        step_size, step_down = self.clr_steps(plan)
        check_cycle_plan(step_size=step_size, step_size_down=step_down, total_iterations=plan.iterations)

    @property
    def is_chain(self) -> bool:
        return self.carry_weights

    @property
    def continues_across_folds(self) -> bool:
        return self.across_folds == "continue"

    @property
    def snapshot_settings(self) -> Optional[SnapshotConfig]:
        return self.snapshots

    def import_paths(self) -> dict[str, str]:
        return {} if self.scale_fn is None else {"scale_fn": self.scale_fn}


class OneCycleStrategy(_RangeTestedCycle, _Strategy):
    """One cycle (Smith 2018): warm up to max_lr, then anneal far below the start."""

    schedule: Literal["one_cycle"]
    max_lr: Optional[LearningRate] = None
    bounds: Literal["fixed", "shared_range_test", "per_fold_range_test"] = "fixed"
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    div_factor: Annotated[float, Field(gt=1.0, le=1e6)] = 25.0
    final_div_factor: Annotated[float, Field(gt=1.0, le=1e12)] = 1e4
    anneal: Literal["cos", "linear"] = "cos"
    cycle_momentum: Optional[MomentumCycleConfig] = None

    @model_validator(mode="after")
    def _check(self):
        if self.bounds == "fixed" and self.max_lr is None:
            raise _KeyError("max_lr", None, "a positive number (required when bounds is 'fixed')")
        if self.bounds != "fixed" and self.max_lr is not None:
            raise _KeyError("max_lr", self.max_lr, f"omitted when bounds is {self.bounds!r}")
        return self

    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        from kfold_clr.schedules import OneCycle

        max_lr = bounds[1] if bounds is not None else self.max_lr
        try:
            schedule = OneCycle(max_lr=max_lr, total_steps=plan.iterations, pct_start=self.pct_start,
                                div_factor=self.div_factor, final_div_factor=self.final_div_factor,
                                anneal=self.anneal)
        except ValueError as error:
            raise ConfigError(f"strategies.{plan.strategy}: {error} (a fold has {plan.iterations} updates: "
                              "train longer or use a smaller batch)") from None
        return schedule, {"base_lr": max_lr / self.div_factor, "max_lr": max_lr}



STRATEGY_CLASSES = {
    "constant": ConstantStrategy, "step": StepStrategy, "exponential": ExponentialStrategy,
    "cosine": CosineStrategy, "cosine_restarts": CosineRestartsStrategy, "clr": ClrStrategy,
    "one_cycle": OneCycleStrategy,
}
"""`schedule:` name -> its section class; `add_strategy_class` adds a user's kind."""
SCHEDULES = STRATEGY_CLASSES.keys()  # a live view: registered kinds show up in error messages


class _StrategyUnion:
    """The `strategies:` entry type: the discriminated union of the classes registered now.

    Pydantic asks for its schema when a model using it is built or rebuilt, so a kind
    registered later joins after `ExperimentConfig.model_rebuild(force=True)`. `__args__`
    lists the kinds as a `Union`'s would, for code that walks annotations (`config.errors`).
    """

    __args__ = tuple(STRATEGY_CLASSES.values())

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        union = Union[tuple(STRATEGY_CLASSES.values())]  # noqa: UP007 - a run-time tuple of classes
        return handler.generate_schema(Annotated[union, Field(discriminator="schedule")])


Strategy = _StrategyUnion
BaseStrategy = _Strategy
"""The public base class of a user's schedule kind (see `kfold_clr.register_schedule`)."""


def add_strategy_class(cls: type) -> type:
    """Add a schedule kind to `STRATEGY_CLASSES` after checking it has what a kind needs.

    Raises:
        TypeError: `cls` is not a subclass of `BaseStrategy` with its own `build`.
        ValueError: its `schedule` is not one `Literal` string, or the name is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, _Strategy)):
        raise TypeError("Argument `cls` must be a subclass of kfold_clr.BaseStrategy. "
                        f"Received: cls={cls!r}")
    field = cls.model_fields.get("schedule")
    names = typing.get_args(field.annotation) if field is not None else ()
    if typing.get_origin(field.annotation if field else None) is not Literal or len(names) != 1 \
            or not isinstance(names[0], str) or not names[0]:
        raise ValueError(f"Argument `cls` must declare `schedule: Literal[\"name\"]` (one name). "
                         f"Received: {cls.__name__}.schedule: {field.annotation if field else 'missing'}")
    if cls.build is _Strategy.build:
        raise TypeError(f"Argument `cls` must define build(self, plan, bounds) returning (learning_rate, "
                        f"{{'base_lr': ..., 'max_lr': ...}}). Received: {cls.__name__} without one")
    name = names[0]
    known = STRATEGY_CLASSES.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"Argument `cls` must have a new schedule name; {name!r} is already "
                         f"{known.__module__}.{known.__qualname__}. Received: {cls.__module__}.{cls.__qualname__}")
    STRATEGY_CLASSES[name] = cls
    _StrategyUnion.__args__ = tuple(STRATEGY_CLASSES.values())
    return cls


def remove_strategy_class(name: str) -> None:
    """Take a registered kind out again (tests; a kind in use stays valid where already built)."""
    STRATEGY_CLASSES.pop(name, None)
    _StrategyUnion.__args__ = tuple(STRATEGY_CLASSES.values())
