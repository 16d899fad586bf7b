"""The base of every `strategies:` section: tuning grids and the behaviour callers ask about.

`_Strategy` (public as `BaseStrategy`) is what a schedule kind derives from: its
`build` gives a fold's LR schedule; its properties say whether folds form a chain,
what acts between batches, which range test it needs and which code to fingerprint.
The kinds themselves are in `kfold_clr.config.strategies`.
"""

import itertools
import typing
from typing import TYPE_CHECKING, Annotated, Literal, Optional, Union

from pydantic import Field, ValidationError, model_validator

from kfold_clr.config.base import MAX_COUNT, MAX_SPLITS, _KeyError, _Section

if TYPE_CHECKING:
    from kfold_clr.training.fold_plans import FoldPlan


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
        if self.is_chain:
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
    def tunable_keys(cls) -> set[str]:
        """The keys a grid may vary: the numeric ones (int or float, optional or not)."""
        keys = set()
        for key, field in cls.model_fields.items():
            kinds = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Union \
                else (field.annotation,)
            kinds = [typing.get_args(kind)[0] if typing.get_origin(kind) is Annotated else kind for kind in kinds]
            if any(kind in (int, float) for kind in kinds):
                keys.add(key)
        return keys

    def grid_points(self) -> list[dict]:
        """Every combination of the grid's values, as dicts, in the grid's order (one empty dict untuned)."""
        if self.tune is None:
            return [{}]
        keys = list(self.tune.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.tune.grid[k] for k in keys))]

    def at(self, point: dict) -> "_Strategy":
        """This strategy with the grid point's values and no tuning: what a tuned fold trains."""
        return type(self).model_validate({**self.model_dump(exclude={"tune"}), **point})

    # ------------------------------------------------------------------------- behaviour
    def build(self, plan: "FoldPlan", bounds: Optional[tuple[float, float]] = None) -> tuple:
        """The LR of one fold: `(learning_rate, {"base_lr": ..., "max_lr": ...})`.

        `learning_rate` is a float or a Keras `LearningRateSchedule` (a pure function of the
        optimizer's step); the two bounds (float or None) are what folds.csv reports.

        Args:
            plan: FoldPlan. The fold (`steps_per_epoch`, `iterations`, `initial_step`, `strategy`).
            bounds: tuple (base_lr, max_lr) from a range test, or None for fixed bounds.
        """
        raise NotImplementedError(f"{type(self).__name__} must define build(self, plan, bounds)")

    def check_plan(self, plan: "FoldPlan") -> None:
        """Warn about a schedule that does not fit the fold's training (none by default)."""

    def schedule_for(self, plan: "FoldPlan", *, bounds: Optional[tuple[float, float]] = None,
                     warn: bool = True) -> tuple:
        """`build`, and with `warn` the plan's warnings (`check_plan`)."""
        learning_rate, info = self.build(plan, bounds)
        if warn:
            self.check_plan(plan)
        return learning_rate, info

    @property
    def is_chain(self) -> bool:
        """Fold j starts from fold j-1's final weights (`carry_weights`): folds train in sequence."""
        return False

    @property
    def continues_across_folds(self) -> bool:
        """Fold j's schedule starts where fold j-1's ended (`across_folds: continue`)."""
        return False

    @property
    def range_test_scope(self) -> Optional[str]:
        """'shared_range_test', 'per_fold_range_test', or None for fixed bounds."""
        return None

    @property
    def momentum_cycle(self) -> Optional["MomentumCycleConfig"]:
        """The cyclical momentum settings, or None."""
        return None

    @property
    def snapshot_settings(self) -> Optional["SnapshotConfig"]:
        """The snapshot ensemble settings, or None."""
        return None

    @property
    def acts_between_batches(self) -> bool:
        """Something runs between batches: snapshot capture (cyclical momentum runs in the train step)."""
        return self.snapshot_settings is not None

    def import_paths(self) -> dict[str, str]:
        """{key: "package.module:name"} of the user code this strategy's keys name (CLR's
        `scale_fn`): `prepare` imports each, fingerprints hash its code."""
        return {}
