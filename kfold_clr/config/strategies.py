"""The `strategies:` entries: one strict section per schedule kind, told apart by `schedule`."""

import itertools
import typing
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, ValidationError, model_validator

from kfold_clr.config.base import (IMPORT_PATH, MAX_COUNT, MAX_EPOCHS, MAX_ITERATIONS, MAX_LR, MAX_SPLITS, _KeyError,
                                   _Section)

# ----------------------------------------------------------------------------- strategies
class SnapshotConfig(_Section):
    keep: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 3
    save_weights: bool = False


class MomentumCycleConfig(_Section):
    base_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.85
    max_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.95

    @model_validator(mode="after")
    def _check_order(self):
        if self.base_momentum >= self.max_momentum:
            raise _KeyError("max_momentum", self.max_momentum,
                            f"greater than base_momentum ({self.base_momentum})")
        return self


PositiveFloat = Annotated[float, Field(gt=0.0)]
LearningRate = Annotated[float, Field(gt=0.0, le=MAX_LR)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Iterations = Annotated[int, Field(ge=1, le=MAX_ITERATIONS)]
MAX_GRID_POINTS = 100


class TuneConfig(_Section):
    """How a strategy's grid is chosen for each outer fold without its validation rows.

    `inner_cv`: `n_splits` inner folds of the outer training split; `holdout`: one
    `fraction` of it held out; `outer`: by the outer validation score itself (only to show
    how much that inflates a score; its rows are marked optimistic). The grid point with
    the best mean validation `metric` ("loss" or a compiled metric) is refitted on the
    whole outer training split. `grid` maps keys to their values; list-valued keys of the
    strategy land here.
    """

    select: Literal["inner_cv", "holdout", "outer"] = "inner_cv"
    n_splits: Annotated[int, Field(ge=2, le=MAX_SPLITS)] = 3
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    metric: str = "loss"
    grid: dict[str, Annotated[list[Union[int, float]], Field(min_length=1)]] = Field(default_factory=dict)


class _Strategy(_Section):
    """A strategy; any numeric key may be a list of values to tune (with a `tune:` entry)."""

    tune: Optional[TuneConfig] = None

    @model_validator(mode="before")
    @classmethod
    def _lift_grid(cls, data):
        """List-valued keys become `tune.grid`, and the key takes the grid's first value."""
        if not isinstance(data, dict):
            return data
        lists = {key: value for key, value in data.items() if isinstance(value, list) and key != "tune"}
        tune = data.get("tune")
        if lists and tune is None:
            key, value = next(iter(lists.items()))
            raise _KeyError(key, value, "a single value; a list is a grid to tune and needs a `tune:` entry "
                                        "(e.g. tune: {select: inner_cv})")
        if not isinstance(tune, dict):
            return data
        explicit = tune.get("grid") or {}
        both = [key for key, values in explicit.items() if key in data and not isinstance(data[key], list)
                and not (isinstance(values, list) and values and data[key] == values[0])]  # as a dump writes it
        if both:
            raise _KeyError(both[0], data[both[0]], f"omitted when tune.grid gives its values ({explicit[both[0]]!r})")
        grid = {**explicit, **lists}
        long = [key for key, values in grid.items() if isinstance(values, list) and len(values) > MAX_GRID_POINTS]
        if long:
            raise _KeyError(f"tune.grid.{long[0]}", f"a list of {len(grid[long[0]])} values",
                            f"at most {MAX_GRID_POINTS} values")
        repeated = [key for key, values in grid.items()
                    if isinstance(values, list) and len(set(map(repr, values))) < len(values)]
        if repeated:
            raise _KeyError(f"tune.grid.{repeated[0]}", grid[repeated[0]], "a list of different values")
        if not grid:
            raise _KeyError("tune", tune, "given with at least one key whose value is a list of values to try")
        data = {**data, "tune": {**tune, "grid": grid}}
        data.update({key: values[0] for key, values in grid.items()
                     if key in cls.model_fields and isinstance(values, list) and values})
        return data

    @model_validator(mode="after")
    def _check_grid(self):
        if self.tune is None:
            return self
        allowed = type(self).tunable_keys()
        for key, values in self.tune.grid.items():
            if key not in allowed:
                raise _KeyError(f"tune.grid.{key}", values,
                                f"a numeric key of this strategy ({', '.join(sorted(allowed))})")
        if getattr(self, "carry_weights", False):
            raise _KeyError("tune", self.tune.model_dump(), "omitted with carry_weights (a chain is not refitted)")
        points = self.grid_points()
        if len(points) > MAX_GRID_POINTS:
            raise _KeyError("tune.grid", self.tune.grid, f"at most {MAX_GRID_POINTS} points (it has {len(points)})")
        for point in points:
            try:
                self.at(point)
            except ValidationError as error:
                detail = error.errors()[0]
                where = ".".join(str(part) for part in detail["loc"]) or next(iter(point))
                allowed = detail["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
                raise _KeyError(f"tune.grid.{where}", point.get(where, point), allowed) from None
            except _KeyError as error:
                raise _KeyError(f"tune.grid.{error.key}", error.value, error.allowed) from None
        return self

    @classmethod
    def tunable_keys(cls) -> set:
        """The keys a grid may vary: the numeric ones (int or float, optional or not)."""
        keys = set()
        for key, field in cls.model_fields.items():
            kinds = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Union \
                else (field.annotation,)
            kinds = [typing.get_args(kind)[0] if typing.get_origin(kind) is Annotated else kind for kind in kinds]
            if any(kind in (int, float) for kind in kinds):
                keys.add(key)
        return keys

    def grid_points(self) -> list:
        """Every combination of the grid's values, as dicts, in the grid's order (one empty dict untuned)."""
        if self.tune is None:
            return [{}]
        keys = list(self.tune.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.tune.grid[k] for k in keys))]

    def at(self, point):
        """This strategy with the grid point's values and no tuning: what a tuned fold trains."""
        return type(self).model_validate({**self.model_dump(exclude={"tune"}), **point})


class ConstantStrategy(_Strategy):
    schedule: Literal["constant"]
    lr: LearningRate


class StepStrategy(_Strategy):
    """Manual annealing: the LR is multiplied by `factor` every `every_epochs` epochs."""

    schedule: Literal["step"]
    lr: LearningRate
    factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    every_epochs: Epochs = 10


class ExponentialStrategy(_Strategy):
    """The LR is multiplied by `decay_rate` per epoch, smoothly."""

    schedule: Literal["exponential"]
    lr: LearningRate
    decay_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9


class CosineStrategy(_Strategy):
    schedule: Literal["cosine"]
    lr: LearningRate
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class CosineRestartsStrategy(_Strategy):
    """Cyclic cosine annealing with warm restarts (the schedule of snapshot ensembles)."""

    schedule: Literal["cosine_restarts"]
    lr: LearningRate
    cycle_epochs: Epochs = 5
    t_mul: Annotated[float, Field(ge=1.0, le=100.0)] = 1.0
    m_mul: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    snapshots: Optional[SnapshotConfig] = None


class ClrStrategy(_Strategy):
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


class OneCycleStrategy(_Strategy):
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


STRATEGY_CLASSES = {
    "constant": ConstantStrategy, "step": StepStrategy, "exponential": ExponentialStrategy,
    "cosine": CosineStrategy, "cosine_restarts": CosineRestartsStrategy, "clr": ClrStrategy,
    "one_cycle": OneCycleStrategy,
}
SCHEDULES = tuple(STRATEGY_CLASSES)
Strategy = Annotated[Union[tuple(STRATEGY_CLASSES.values())], Field(discriminator="schedule")]
