"""A schedule kind defined here, outside the package, works end to end once registered."""

import copy
from typing import Annotated, Literal

import keras
import numpy as np
import pandas as pd
import pytest
from keras import ops
from pydantic import Field, PydanticUndefinedAnnotation

from kfold_clr import BaseStrategy, register_schedule
from kfold_clr.errors import ConfigError


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`lr` falling linearly to `end_lr` over `total_steps` updates."""

    def __init__(self, lr, end_lr, total_steps):
        self.lr, self.end_lr, self.total_steps = lr, end_lr, total_steps

    def __call__(self, step):
        fraction = ops.minimum(ops.cast(step, "float32") / self.total_steps, 1.0)
        return self.lr - (self.lr - self.end_lr) * fraction

    def get_config(self):
        return {"lr": self.lr, "end_lr": self.end_lr, "total_steps": self.total_steps}


class LinearDecayStrategy(BaseStrategy):
    """The LR falls linearly from `lr` to `lr * end_factor` over each fold."""

    schedule: Literal["linear_decay"]
    lr: Annotated[float, Field(gt=0.0, le=10.0)]
    end_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1

    def build(self, plan, bounds=None):
        end_lr = self.lr * self.end_factor
        return LinearDecay(self.lr, end_lr, plan.iterations), {"base_lr": end_lr, "max_lr": self.lr}


def closed_form(iteration, total, lr, end_factor):
    return lr - (lr - lr * end_factor) * np.minimum(iteration / total, 1.0)


@pytest.fixture
def registered():
    """`linear_decay` registered for one test, then removed so other tests see the built-in kinds."""
    from kfold_clr.config.schema import ExperimentConfig
    from kfold_clr.config.strategies import remove_strategy_class

    register_schedule(LinearDecayStrategy)
    yield LinearDecayStrategy
    remove_strategy_class("linear_decay")
    ExperimentConfig.model_rebuild(force=True)


def _experiment(tiny_experiment, fused):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["cv"]["n_splits"] = 2
    experiment["execution"] = {"fused_folds": fused}
    experiment["strategies"] = {"linear": {"schedule": "linear_decay", "lr": 0.08, "end_factor": 0.25},
                                "constant": {"schedule": "constant", "lr": 0.05}}
    return experiment


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True])
def test_a_registered_kind_trains_from_yaml_with_its_closed_form_lrs(registered, tiny_experiment, write_yaml, fused):
    from kfold_clr.execution.experiment import run_experiment

    results = run_experiment(write_yaml(_experiment(tiny_experiment, fused)), verbosity=0)
    folds = results.folds[results.folds.strategy == "linear"].set_index("fold")
    assert len(folds) == 2 and (folds["fused"].astype(bool) == fused).all()
    np.testing.assert_allclose(folds["max_lr"], 0.08)
    np.testing.assert_allclose(folds["base_lr"], 0.02)
    lr = pd.read_csv(results.directory / "lr.csv")
    for fold in range(2):
        part = lr[(lr.strategy == "linear") & (lr.fold == fold)]
        assert len(part) > 2
        expected = closed_form(part["iteration"].to_numpy(), folds.loc[fold, "iterations"], 0.08, 0.25)
        np.testing.assert_allclose(part["lr"].to_numpy(), expected, rtol=1e-6)


def test_a_registered_kind_is_strict_in_the_schema_and_fingerprinted_by_its_code(registered, tiny_experiment):
    from kfold_clr.cli.scaffold import json_schema
    from kfold_clr.config import load_config
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.storage.provenance import fingerprint_parts, strategy_fingerprint

    experiment = _experiment(tiny_experiment, False)
    bad = copy.deepcopy(experiment)
    bad["strategies"]["linear"]["end_factr"] = 0.5
    with pytest.raises(ConfigError, match=r"strategies\.linear\.end_factr: unknown key; allowed keys are tune, "
                                          r"schedule, lr, end_factor"):
        load_config(bad)
    bad["strategies"]["linear"] = {"schedule": "linear_decay", "lr": 0.1, "end_factor": 2.0}
    with pytest.raises(ConfigError, match=r"strategies\.linear\.end_factor"):
        load_config(bad)
    tuned = copy.deepcopy(experiment)
    tuned["strategies"]["linear"].update(lr=[0.05, 0.1], tune={"select": "holdout"})
    assert load_config(tuned).strategies["linear"].grid_points() == [{"lr": 0.05}, {"lr": 0.1}]

    schema = json_schema()
    union = schema["properties"]["strategies"]["additionalProperties"]
    assert union["discriminator"]["mapping"]["linear_decay"].endswith("/LinearDecayStrategy")
    assert "array" in str(schema["$defs"]["LinearDecayStrategy"]["properties"]["lr"])  # a grid may list it

    config, dataset, _, _ = prepare(experiment)
    parts = fingerprint_parts(strategy_fingerprint(config, dataset, "linear"))
    assert any("test_custom_schedule.py" in label for label in parts)
    assert not any("test_custom_schedule.py" in label
                   for label in fingerprint_parts(strategy_fingerprint(config, dataset, "constant")))


def test_a_kind_of_ones_own_has_the_plain_behaviour_unless_it_says_otherwise(registered):
    strategy = LinearDecayStrategy(schedule="linear_decay", lr=0.1)
    assert (strategy.is_chain, strategy.continues_across_folds, strategy.range_test_scope) == (False, False, None)
    assert not strategy.acts_between_batches and strategy.import_paths() == {}
    assert LinearDecayStrategy.tunable_keys() == {"lr", "end_factor"}
    assert register_schedule(LinearDecayStrategy) is LinearDecayStrategy  # the same class again is no clash


def test_registering_a_taken_name_or_an_incomplete_class_is_refused(registered):
    class Other(BaseStrategy):
        schedule: Literal["linear_decay"]

        def build(self, plan, bounds=None):
            return 0.1, {"base_lr": 0.1, "max_lr": 0.1}

    with pytest.raises(ValueError, match="'linear_decay' is already .*LinearDecayStrategy"):
        register_schedule(Other)

    class MyClr(Other):
        schedule: Literal["clr"]

    with pytest.raises(ValueError, match="'clr' is already kfold_clr.config.strategies.ClrStrategy"):
        register_schedule(MyClr)

    class NoBuild(BaseStrategy):
        schedule: Literal["no_build"]

    with pytest.raises(TypeError, match=r"must define build\(self, plan, bounds\).*NoBuild"):
        register_schedule(NoBuild)

    class NoName(BaseStrategy):
        def build(self, plan, bounds=None):
            return 0.1, {"base_lr": 0.1, "max_lr": 0.1}

    with pytest.raises(ValueError, match=r'must declare `schedule: Literal\["name"\]`.*NoName.schedule: missing'):
        register_schedule(NoName)

    class TwoNames(NoName):
        schedule: Literal["a", "b"]

    with pytest.raises(ValueError, match=r"NoName|TwoNames\.schedule: typing.Literal\['a', 'b'\]"):
        register_schedule(TwoNames)
    with pytest.raises(TypeError, match="subclass of kfold_clr.BaseStrategy. Received: cls=<class 'dict'>"):
        register_schedule(dict)

    class Unfinished(Other):  # a class pydantic cannot finish leaves the known kinds as they were
        schedule: Literal["unfinished"]
        width: "NotDefinedAnywhere"  # noqa: F821

    with pytest.raises(PydanticUndefinedAnnotation, match="NotDefinedAnywhere"):
        register_schedule(Unfinished)
    from kfold_clr.config.strategies import SCHEDULES

    assert not {"no_build", "a", "unfinished"} & set(SCHEDULES) and "linear_decay" in SCHEDULES


def test_every_built_in_kind_builds_its_own_schedule():
    from kfold_clr.config.strategies import STRATEGY_CLASSES, BaseStrategy

    assert all(kind.build is not BaseStrategy.build for kind in STRATEGY_CLASSES.values())
    with pytest.raises(NotImplementedError, match="Plain must define build"):
        type("Plain", (BaseStrategy,), {})().build(None)
