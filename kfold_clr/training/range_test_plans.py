"""What the range test of one split runs with, from the config: its plan (the fold's seed, one
epoch of its batches) and `lr_range_test`'s arguments (sweep length and EMA factor resolved).
The sequential range tests (`kfold_clr.planning.bounds`) and the fused ones (`kfold_clr.training.fused.range_tests`)
both read them here."""

from typing import TYPE_CHECKING

from kfold_clr.data.splits import steps_per_epoch
from kfold_clr.range_test.runner import DEFAULT_ITERATIONS
from kfold_clr.range_test.smoothing import fitted_beta
from kfold_clr.training.fold_plans import FoldPlan, epochs_to_iterations, fold_seed

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.data.splits import Split


def _range_test_kwargs(config: "ExperimentConfig", seed: int) -> dict:
    """`lr_range_test`'s arguments from the `range_test:` section (`reserve` acts before splitting)."""
    return {**config.range_test.model_dump(exclude={"reserve"}), "batch_size": config.training.batch_size,
            "seed": seed}


def range_test_plan(config: "ExperimentConfig", split: "Split") -> FoldPlan:
    """The plan a range test on `split` runs under: the fold's seed, one epoch of its batches."""
    steps = steps_per_epoch(len(split.train), config.training.batch_size)
    return FoldPlan("range_test", split, fold_seed(config.seed, split.repeat, split.fold), steps, 1)


def range_test_settings(config: "ExperimentConfig", plan: FoldPlan) -> dict:
    """`lr_range_test`'s arguments for a range test on `plan`'s split: sweep length and EMA factor resolved."""
    kwargs = _range_test_kwargs(config, plan.seed)
    epochs = kwargs.pop("epochs")
    if kwargs["iterations"] is None and epochs is None:
        kwargs["iterations"] = DEFAULT_ITERATIONS
    kwargs["iterations"] = max(2, epochs_to_iterations(kwargs["iterations"], epochs, plan.steps_per_epoch))
    if kwargs["beta"] is None:
        kwargs["beta"] = fitted_beta(kwargs["iterations"])
    return kwargs
