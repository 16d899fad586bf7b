"""The `training:` section: how every fold trains (epochs, batch size, the optimizer and its
hyper-parameters, loss and metrics, early stopping, precision, whether the training rows are
scored). Which optimizers exist, and which
hyper-parameters each reads, is `kfold_clr.config.optimizers.OPTIMIZERS`."""

from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator, model_serializer

from kfold_clr.config.base import MAX_COUNT, MAX_EPOCHS, _Section
from kfold_clr.config.optimizers import OPTIMIZER_NAMES


class OptimizerConfig(_Section):
    name: Literal[OPTIMIZER_NAMES] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = False
    beta_1: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    beta_2: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    rho: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    weight_decay: Optional[Annotated[float, Field(ge=0.0)]] = None
    clipnorm: Optional[Annotated[float, Field(gt=0.0)]] = None


# Keys earlier versions did not have, with the value they behaved as: fingerprints leave them
# out at that value (results of those versions stay valid for configs that set it), and a saved
# config.yaml without the key was written with it.
EARLIER_VALUES = {"train_scores": True}


class EarlyStoppingConfig(_Section):
    """Early stopping on the validation fold. Marks results as optimistic."""

    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 5
    restore_best_weights: bool = True


class TrainingConfig(_Section):
    """How every fold trains. `precision` is Keras's dtype policy: float32 (the default), or mixed
    precision (float32 weights, float16 / bfloat16 computations, float32 outputs); `mixed` is
    resolved here to mixed_float16 where a GPU is visible, else mixed_bfloat16. `train_scores`
    (scikit-learn's `return_train_score`, false by default as there): true scores each fold's
    final weights on all its training rows (the `train_<metric>` columns, the summary's train
    mean and train - val gap), one inference pass over them per fold (a tenth of a short image
    run's time); false leaves those columns empty (the last epoch's running means stay in
    history.csv). Dumps leave out a float32 `precision`, and fingerprints a true `train_scores`
    (`fingerprint_dump`), so results of versions that scored every fold stay valid; a saved
    config.yaml without the key was scored (`saved_training`)."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 10
    batch_size: Annotated[int, Field(ge=1, le=MAX_COUNT * 100)] = 32
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: Optional[str] = None
    metrics: Optional[list[str]] = None
    early_stopping: Optional[EarlyStoppingConfig] = None
    precision: Literal["float32", "mixed", "mixed_float16", "mixed_bfloat16"] = "float32"
    train_scores: bool = False

    @field_validator("precision")
    @classmethod
    def _resolve_mixed(cls, precision):
        """`mixed`: the policy this machine computes fastest in (float16 needs a GPU)."""
        if precision != "mixed":
            return precision
        from kfold_clr.process.runtime import gpu_visible

        return "mixed_float16" if gpu_visible() else "mixed_bfloat16"

    @model_serializer(mode="wrap")
    def _omit_defaults_added_later(self, handler):
        data = handler(self)
        if isinstance(data, dict):
            if data.get("precision") == "float32":  # as dumps before `precision` existed
                del data["precision"]
        return data

    def fingerprint_dump(self) -> dict:
        """These settings as a fold's fingerprint holds them: `model_dump(mode="json")` without the
        keys earlier versions did not have, where set to what those versions did (`EARLIER_VALUES`)."""
        data = self.model_dump(mode="json")
        return {key: value for key, value in data.items()
                if not (key in EARLIER_VALUES and value == EARLIER_VALUES[key])}


def saved_training(section: object) -> object:
    """The `training` mapping of a saved config.yaml, with what the keys an earlier version did
    not write meant there (`EARLIER_VALUES`); anything else is returned as it is."""
    if not isinstance(section, dict):
        return section
    return {**EARLIER_VALUES, **section}
